//! `coracle-agent`: the device daemon's entry point. Parses arguments, starts tracing, runs.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use coracle_agent::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use coracle_agent::control::client;

/// Coracle device agent.
#[derive(Debug, Parser)]
#[command(name = "coracle-agent", version, about)]
struct Cli {
    /// Agent config file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate the config and the bootstrap file it names, then exit.
    CheckConfig,
    /// Show the running agent's state.
    Status,
    /// List the services and their containers.
    Ps,
    /// Print a service's log tail.
    Logs {
        service: coracle_proto::ServiceName,
        /// Lines from the end.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: u32,
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coracle-agent: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = if cli.config.exists()
        || cli.config.as_path() != std::path::Path::new(DEFAULT_CONFIG_PATH)
    {
        AgentConfig::load(&cli.config)?
    } else {
        AgentConfig::default()
    };
    let socket = &config.control_socket;
    match cli.command {
        None => anyhow::bail!(
            "the daemon needs the container runtime wired in (issue 3); use status, ps or logs"
        ),
        Some(Cmd::CheckConfig) => {
            let bootstrap = coracle_agent::daemon::check(&config)?;
            println!(
                "config ok: device {}, broker {}, auth {}",
                bootstrap.device, bootstrap.broker_url, bootstrap.auth
            );
        }
        Some(Cmd::Status) => print!("{}", client::format_status(&client::status(socket)?)),
        Some(Cmd::Ps) => print!("{}", client::format_ps(&client::status(socket)?)),
        Some(Cmd::Logs {
            service,
            lines,
            follow,
        }) => client::logs(socket, service, lines, follow, |lines| {
            lines.iter().for_each(|l| println!("{l}"));
            true
        })?,
    }
    Ok(())
}
