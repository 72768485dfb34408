//! The OCI runtime command line: `coracle-agent oci …`, or the same verbs through a link
//! named `coracle-runc` (runtime-tools' `docs/command-line-interface.md`, runc's flags).
//! It drives the same runtime code as the daemon — `runtime::bundle` turns `config.json`
//! into a `ContainerSpec`, the shim's setup steps and `runtime::init` make the container
//! — but keeps no process of its own: `create` leaves the init waiting on an exec fifo
//! (`fifo`), `start` releases it, and every verb reads `<root>/<id>/oci.json` (`state`).
//! Hooks (`hooks`) get the state JSON on stdin.
//!
//! Files: `cli` (flags, dispatch, log file), `create`, `start`, `kill` (signal names),
//! `delete`, `state` (the record and the state document), `fifo`, `hooks`, `features`,
//! `console` (`process.terminal` with `--console-socket`: the pty's master is sent there).
//! Limits: a terminal only with a console socket (not for a foreground `run`), no systemd
//! cgroup driver (`--systemd-cgroup` is accepted and ignored, with a log line).

pub mod cli;
pub mod console;
pub mod create;
pub mod delete;
pub mod features;
pub mod fifo;
pub mod hooks;
pub mod kill;
pub mod log_file;
pub mod start;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::runtime::bundle::BundleError;
use crate::runtime::cgroups::CgroupError;
use crate::runtime::id::InvalidContainerId;
use crate::runtime::init::InitError;
use crate::runtime::shim::ShimError;
use crate::runtime::state::StateError;
use state::{OciStatus, Record};

/// Failures of the OCI verbs, each naming the container or file.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(transparent)]
    InvalidId(#[from] InvalidContainerId),
    #[error("resolve bundle path {path}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    BundleSpec(#[from] BundleError),
    #[error("unsupported OCI config field {field}: {reason}")]
    Unsupported {
        field: &'static str,
        reason: &'static str,
    },
    #[error("--console-socket {path} given, but process.terminal is false")]
    ConsoleWithoutTerminal { path: PathBuf },
    #[error("connect to the console socket {path}")]
    ConnectConsole {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id}: invalid spec")]
    InvalidSpec {
        id: String,
        #[source]
        source: InitError,
    },
    #[error("container {id} already exists")]
    AlreadyExists { id: String },
    #[error("container {id} does not exist")]
    NotFound { id: String },
    #[error("prepare state dir {path}")]
    PrepareDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("set up container {id}")]
    Setup {
        id: String,
        #[source]
        source: ShimError,
    },
    #[error(transparent)]
    Fifo(#[from] fifo::FifoError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("write pid file {path}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id} is {status:?}, not {wanted}")]
    WrongStatus {
        id: String,
        status: OciStatus,
        wanted: &'static str,
    },
    #[error("unknown signal {signal:?}")]
    UnknownSignal { signal: String },
    #[error("send {signal} to container {id}")]
    Signal {
        id: String,
        signal: Signal,
        #[source]
        source: nix::Error,
    },
    #[error("container {id} still runs {waited:?} after SIGKILL")]
    StillAlive { id: String, waited: Duration },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("remove {path}")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The container's dir and record; `NotFound` when there is none.
pub fn open(root: &Path, id: &str) -> Result<(PathBuf, Record), OciError> {
    let valid: crate::runtime::ContainerId = id.parse()?;
    let dir = root.join(valid.as_str());
    if !dir.join(state::RECORD_FILE).exists() {
        return Err(OciError::NotFound { id: id.to_owned() });
    }
    let record = Record::load(&dir)?;
    Ok((dir, record))
}

/// Every container id under `root`, sorted.
pub fn list(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(state::RECORD_FILE).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids
}
