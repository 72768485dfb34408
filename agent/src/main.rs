//! `coracle-agent`: the device daemon's entry point. Parses arguments, starts tracing, runs.

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coracle_agent::cli::{self, RunArgs};
use coracle_agent::runtime::shim;

/// Coracle device agent.
#[derive(Debug, Parser)]
#[command(name = "coracle-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an OCI bundle in the foreground, like `crun run --bundle DIR ID`.
    Run(RunArgs),
}

fn main() -> ExitCode {
    // The shim is this binary re-executed; it must stay small, so it skips clap and tracing.
    let args: Vec<_> = std::env::args_os().take(3).collect();
    if args.len() == 3 && args[1] == shim::SHIM_COMMAND {
        return ExitCode::from(shim::main(Path::new(&args[2])) as u8);
    }
    let cli = Cli::parse();
    // EnvFilter only when asked for: parsing directives costs start time and memory that
    // `run` is benchmarked on; warnings and errors always show.
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr);
    if std::env::var_os("RUST_LOG").is_some() {
        logs.with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    } else {
        logs.with_max_level(tracing::Level::WARN).init();
    }
    match cli.command {
        Some(Command::Run(args)) => match cli::run(&args) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(err) => {
                eprintln!("coracle-agent: {err:#}");
                ExitCode::from(125)
            }
        },
        None => {
            tracing::info!(
                protocol = coracle_proto::PROTOCOL_VERSION,
                "coracle-agent has no daemon yet"
            );
            ExitCode::SUCCESS
        }
    }
}
