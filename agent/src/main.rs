//! `coracle-agent`: the device daemon's entry point. Parses arguments, starts tracing, runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coracle_agent::cli::{self, RunArgs};
use coracle_agent::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use coracle_agent::control::client;
use coracle_agent::oci::cli as oci_cli;
use coracle_agent::runtime::{exec, shim};

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
    /// Run a command in a service's running container, like `docker exec` without stdin or
    /// tty: prints the last 4 KiB of its output when it ends and exits with its code.
    Exec {
        service: coracle_proto::ServiceName,
        /// Kill the command (not the container) after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u32,
        /// The command and its arguments, after `--`.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// The OCI runtime command line (create, start, state, kill, delete, run, list,
    /// features); `coracle-agent oci --help` lists it. Handled before this parser.
    #[command(disable_help_flag = true)]
    Oci {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Run an OCI bundle in the foreground, like `crun run --bundle DIR ID`.
    Run(RunArgs),
    /// Rebuild a layer tar from a delta and the old layer unpacked (digest checked).
    ApplyDelta(coracle_agent::delta_cli::ApplyDeltaArgs),
}

fn main() -> ExitCode {
    // The shim is this binary re-executed; it must stay small, so it skips clap and tracing.
    let args: Vec<_> = std::env::args_os().take(4).collect();
    if args.len() == 3 && args[1] == shim::SHIM_COMMAND {
        return ExitCode::from(shim::main(Path::new(&args[2])) as u8);
    }
    // Likewise the exec helper (health checks run it every interval).
    if args.len() == 4 && args[1] == exec::EXEC_COMMAND {
        let spec = args[3].to_string_lossy();
        return ExitCode::from(exec::main(Path::new(&args[2]), &spec) as u8);
    }
    // The OCI runtime: through a link named `coracle-runc`, or `coracle-agent oci …`.
    let invoked_as = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n == oci_cli::RUNC_NAME);
    if invoked_as == Some(true) || args.get(1).is_some_and(|a| a == "oci") {
        init_tracing(tracing::Level::WARN);
        let skip = if invoked_as == Some(true) { 0 } else { 1 };
        let mut argv: Vec<_> = std::env::args_os().collect();
        argv.drain(..skip);
        return ExitCode::from(oci_cli::main(argv).clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    // `run` is a foreground command like `crun run`: the container's lifecycle lines
    // are noise there (and cost start time); warnings and errors still show.
    init_tracing(match cli.command {
        Some(Cmd::Run(_)) => tracing::Level::WARN,
        _ => tracing::Level::INFO,
    });
    if let Some(Cmd::Run(args)) = &cli.command {
        return match cli::run(args) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(err) => {
                eprintln!("coracle-agent: {err:#}");
                ExitCode::from(125)
            }
        };
    }
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("coracle-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `level`, or as RUST_LOG says. EnvFilter only when asked for: parsing
/// directives costs start time and memory that `run` is benchmarked on.
fn init_tracing(level: tracing::Level) {
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr);
    if std::env::var_os("RUST_LOG").is_some() {
        logs.with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    } else {
        logs.with_max_level(level).init();
    }
}

/// The command's exit code on success.
fn run(cli: Cli) -> anyhow::Result<u8> {
    // Needs no config: it works on files only.
    if let Some(Cmd::ApplyDelta(args)) = &cli.command {
        let diff_id = coracle_agent::delta_cli::apply_delta(args)?;
        println!("rebuilt {} ({diff_id})", args.output.display());
        return Ok(0);
    }
    let config = if cli.config.exists() || cli.config.as_path() != Path::new(DEFAULT_CONFIG_PATH) {
        AgentConfig::load(&cli.config)?
    } else {
        AgentConfig::default()
    };
    let socket = &config.control_socket;
    match cli.command {
        None => return run_daemon(&config),
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
        Some(Cmd::Exec {
            service,
            timeout,
            command,
        }) => {
            let timeout_ms = timeout.saturating_mul(1000);
            let reply = client::exec(socket, service, command, timeout_ms)?;
            print!("{}", reply.output);
            if reply.timed_out {
                eprintln!("coracle-agent: killed after the {timeout} s timeout");
            }
            return Ok(reply.exit_code.clamp(0, 255) as u8);
        }
        Some(Cmd::Run(_) | Cmd::ApplyDelta(_) | Cmd::Oci { .. }) => unreachable_run(),
    }
    Ok(0)
}

/// `run` returned earlier in `main`; kept out of line so the match stays exhaustive.
fn unreachable_run() {}

/// The device daemon, after the boot step that picks the agent build to run (`ota::boot`):
/// the Linux engine (image store, pulls, runtime) under the supervisor. Returns the exit
/// code; a staged agent build makes it execute this program again instead.
fn run_daemon(config: &AgentConfig) -> anyhow::Result<u8> {
    use coracle_agent::ota::boot::{boot, restart_self, Boot};
    use coracle_agent::ota::slots::SlotFiles;
    use coracle_agent::supervisor::SupervisorExit;

    let slots = SlotFiles::new(&config.state_dir());
    let trial = match boot(&slots, config.confirm_timeout()) {
        Boot::RunDaemon { trial } => trial,
        Boot::Exit(code) => return Ok(u8::try_from(code).unwrap_or(1)),
    };
    match open_and_run(config, trial)? {
        SupervisorExit::Stopped => Ok(0),
        SupervisorExit::RestartForUpdate => {
            let err = restart_self();
            Err(anyhow::Error::new(err).context("execute the agent again to try the staged build"))
        }
    }
}

fn open_and_run(
    config: &AgentConfig,
    trial: bool,
) -> anyhow::Result<coracle_agent::supervisor::SupervisorExit> {
    use anyhow::Context;
    use coracle_agent::engine::{EngineConfig, LinuxEngine};
    use coracle_agent::pull::RegistryEndpoint;
    use coracle_agent::runtime::cgroups::CgroupConfig;
    use coracle_agent::runtime::RuntimeConfig;

    let bootstrap = coracle_agent::daemon::check(config)?;
    let engine = LinuxEngine::open(EngineConfig {
        data_dir: config.data_dir.clone(),
        registry: RegistryEndpoint {
            base_url: bootstrap.registry_url.clone(),
            ca_pem: Some(bootstrap.ca_pem.clone()).filter(|pem| !pem.trim().is_empty()),
            token: coracle_agent::pull::PullToken::load(
                bootstrap.registry_token.clone(),
                config
                    .state_dir()
                    .join(coracle_agent::pull::PULL_TOKEN_FILE),
            ),
        },
        runtime: RuntimeConfig {
            state_dir: config.runtime.state_dir.clone(),
            cgroup: CgroupConfig {
                root: config.runtime.cgroup_root.clone(),
                parent: config.runtime.cgroup_parent.clone(),
                allow_missing_controllers: config.runtime.allow_missing_controllers,
            },
            shim_binary: std::env::current_exe().context("find this binary to use as the shim")?,
        },
        store: coracle_images::store::StoreConfig {
            reserve_bytes: u64::from(config.limits.disk_reserve_mib) << 20,
            unpack: config.images.unpack_limits(),
        },
        delta_budget: 64 << 20,
        log_max_bytes: 1 << 20,
        log_keep: 2,
        network: config.network_config()?,
    })
    .map_err(|e| anyhow::anyhow!(e))
    .context("open the container engine")?;
    let (_keep_running, shutdown) = tokio::sync::watch::channel(false);
    coracle_agent::daemon::run_booted(config, std::sync::Arc::new(engine), shutdown, trial)
}
