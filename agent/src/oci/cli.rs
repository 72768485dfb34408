//! The OCI command line's flags (runc's names, as podman and containerd pass them) and the
//! dispatch to the verbs. Exit codes: 0 on success, 1 on any error (printed to stderr and,
//! with `--log`, appended to the log file); `run` exits with the container's code.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use super::create::{self, CreateRequest};
use super::log_file::{LogFile, LogFormat};
use super::{delete, features, kill, open, start, OciError};
use crate::runtime::cgroups::CgroupConfig;

/// The file name of a link to the agent binary that makes it the OCI runtime.
pub const RUNC_NAME: &str = "coracle-runc";
/// Where container state lives unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/coracle-runc";

/// Coracle's OCI runtime.
#[derive(Debug, Parser)]
#[command(name = "coracle-runc", version)]
struct OciCli {
    /// Directory of container state (one dir per container).
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Append error lines here as well as to stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of the --log lines.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Accepted for compatibility; cgroups are always managed through cgroupfs.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility (set RUST_LOG for more output).
    #[arg(long, global = true)]
    debug: bool,
    /// cgroup mount point.
    #[arg(long, global = true, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Parent cgroup of containers whose bundle gives no cgroupsPath.
    #[arg(long, global = true, default_value = "coracle")]
    cgroup_parent: String,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Set a container up from a bundle; it waits for `start` before exec.
    Create(CreateArgs),
    /// Let a created container exec its process.
    Start { id: String },
    /// Print the container's state (runtime-spec state JSON).
    State { id: String },
    /// Send a signal (name or number; default TERM) to the container's process.
    Kill {
        /// Signal every process in the container's cgroup, not only its init.
        #[arg(long, short)]
        all: bool,
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Remove a stopped container (--force: kill it first).
    Delete {
        #[arg(long, short)]
        force: bool,
        id: String,
    },
    /// create + start; without --detach, wait for the container and delete it.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(long, short)]
        detach: bool,
    },
    /// List container ids (one per line), or their states with --format json.
    List {
        #[arg(long, short, default_value = "table")]
        format: String,
        #[arg(long, short)]
        quiet: bool,
        /// Ignored (some callers pass a filter word).
        #[arg(hide = true)]
        ignored: Vec<String>,
    },
    /// Print what this runtime implements (runtime-spec features document).
    Features,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Bundle directory holding config.json (default: the current directory).
    #[arg(long, short, default_value = ".")]
    bundle: PathBuf,
    /// Write the container's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket the terminal's pty master is sent to (with process.terminal).
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Accepted for compatibility: the container's stdio is this process's.
    #[arg(long)]
    preserve_fds: Option<u32>,
    /// Accepted for compatibility: no session keyring is made.
    #[arg(long)]
    no_new_keyring: bool,
    /// Accepted for compatibility: pivot_root is always used.
    #[arg(long)]
    no_pivot: bool,
    id: String,
}

/// Runs the command line `args` (program name first); returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = OciCli::parse_from(args);
    let log = LogFile {
        path: cli.log.clone(),
        format: cli.log_format,
    };
    if cli.systemd_cgroup {
        tracing::warn!("--systemd-cgroup ignored: cgroups are managed through cgroupfs");
    }
    match dispatch(&cli) {
        Ok(code) => code,
        Err(err) => {
            let message = crate::runtime::error_chain(&err);
            eprintln!("coracle-runc: {message}");
            log.write("error", &message);
            1
        }
    }
}

fn dispatch(cli: &OciCli) -> Result<i32, OciError> {
    let root = cli.root.as_path();
    match &cli.verb {
        Verb::Create(args) => {
            create::create(&request(cli, args))?;
        }
        Verb::Start { id } => start::start(root, id)?,
        Verb::State { id } => print_state(root, id)?,
        Verb::Kill { id, signal, all } => kill::kill(root, id, kill::parse_signal(signal)?, *all)?,
        Verb::Delete { id, force } => delete::delete(root, id, *force)?,
        Verb::Run { create, detach } => return run(cli, create, *detach),
        Verb::List { format, quiet, .. } => print_list(root, format, *quiet)?,
        Verb::Features => println!("{:#}", features::document()),
    }
    Ok(0)
}

fn request<'a>(cli: &'a OciCli, args: &'a CreateArgs) -> CreateRequest<'a> {
    CreateRequest {
        root: &cli.root,
        id: &args.id,
        bundle: &args.bundle,
        pid_file: args.pid_file.as_deref(),
        console_socket: args.console_socket.as_deref(),
        cgroup: CgroupConfig {
            root: cli.cgroup_root.clone(),
            parent: cli.cgroup_parent.clone(),
            allow_missing_controllers: false,
        },
    }
}

fn print_state(root: &Path, id: &str) -> Result<(), OciError> {
    let (dir, record) = open(root, id)?;
    let state = record.state(record.status(&dir));
    let json = serde_json::to_string_pretty(&state).expect("state serialises");
    println!("{json}");
    Ok(())
}

fn print_list(root: &Path, format: &str, quiet: bool) -> Result<(), OciError> {
    let ids = super::list(root);
    if format != "json" || quiet {
        ids.iter().for_each(|id| println!("{id}"));
        return Ok(());
    }
    let mut states = Vec::new();
    for id in &ids {
        let (dir, record) = open(root, id)?;
        let status = record.status(&dir);
        states.push(serde_json::to_value(record.state(status)).expect("state serialises"));
    }
    println!("{}", serde_json::Value::Array(states));
    Ok(())
}

/// `run`: the init is this process's child (cloned here), so without --detach we reap it
/// ourselves and exit with its code, shell-style.
fn run(cli: &OciCli, args: &CreateArgs, detach: bool) -> Result<i32, OciError> {
    let record = create::create(&request(cli, args))?;
    if let Err(err) = start::start(&cli.root, &args.id) {
        let _ = delete::delete(&cli.root, &args.id, true);
        return Err(err);
    }
    if detach {
        return Ok(0);
    }
    let pid = nix::unistd::Pid::from_raw(record.pid);
    let code = loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => break code,
            Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break 255,
        }
    };
    delete::delete(&cli.root, &args.id, false)?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> OciCli {
        OciCli::try_parse_from(args).unwrap()
    }

    #[test]
    fn podman_style_global_flags_parse_before_the_verb() {
        let cli = parse(&[
            "coracle-runc",
            "--root",
            "/r",
            "--log",
            "/l.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "c1",
        ]);
        assert_eq!(cli.root, Path::new("/r"));
        assert_eq!(cli.log_format, LogFormat::Json);
        let Verb::Create(args) = cli.verb else {
            panic!("not create")
        };
        assert_eq!(
            (args.bundle.as_path(), args.id.as_str()),
            (Path::new("/b"), "c1")
        );
    }

    #[test]
    fn kill_defaults_to_term_and_delete_takes_force() {
        let Verb::Kill { signal, .. } = parse(&["x", "kill", "c1"]).verb else {
            panic!("not kill")
        };
        assert_eq!(signal, "TERM");
        let Verb::Delete { force, .. } = parse(&["x", "delete", "-f", "c1"]).verb else {
            panic!("not delete")
        };
        assert!(force);
    }
}
