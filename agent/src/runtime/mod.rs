//! The container runtime: a synchronous [`Runtime`] trait (create, start, state, kill,
//! delete) and its Linux implementation, [`LinuxRuntime`].
//!
//! Module map: `spec` (what to run), `id`, `state` (the atomic state file), `cgroups`
//! (v1/v2 directories; `cgroups::limits` is the pure limit computation), `init` (the
//! container's setup steps between clone and exec: mounts, dev, capabilities, seccomp,
//! rlimits, user), `process` (clone, exec, fd hand-over, ioctl), `shim` (the
//! per-container supervisor process), `logs` (rotating log files), `linux` (the trait
//! impl), `bundle` (OCI `config.json` → spec; `refused`: the fields it refuses by name;
//! `seccomp_profile`: its `linux.seccomp` as the filter),
//! `hook` (one OCI hook run, state JSON on stdin), `userns` (the optional user namespace:
//! id maps, idmapped rootfs), `idmapped_overlay` (the overlay over idmapped layers, built
//! in a scratch mount namespace), `mount_api` (detached mounts), `exec` (a process run
//! inside a running container: the `__exec` helper). `unsafe` lives in `process`,
//! `mount_api` and `cgroups::bpf` (syscall wrappers) and once in `userns` (received fds).

pub mod bundle;
pub mod cgroups;
pub mod exec;
pub mod exec_interactive;
pub mod hook;
pub mod id;
mod idmapped_overlay;
pub mod init;
pub mod linux;
pub mod log_time;
pub mod logs;
mod mount_api;
mod process;
pub mod pty;
mod recreate;
pub mod refused;
pub mod seccomp_profile;
pub mod shim;
pub mod spec;
pub mod state;
pub mod userns;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use exec::{ExecOutcome, ExecSpec};
pub use id::ContainerId;
pub use linux::{LinuxRuntime, RuntimeConfig};
pub use spec::ContainerSpec;
pub use state::{ContainerState, Status};

/// Failures of runtime operations, each naming the container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {id}: invalid spec")]
    InvalidSpec {
        id: ContainerId,
        #[source]
        source: init::InitError,
    },
    #[error("container {id} already exists")]
    AlreadyExists { id: ContainerId },
    #[error("container {id} not found")]
    NotFound { id: ContainerId },
    #[error("prepare state dir {path}")]
    PrepareDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spawn shim {binary}")]
    SpawnShim {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("create container {id}: {reason}")]
    CreateFailed { id: ContainerId, reason: String },
    #[error("start container {id}: {reason}")]
    StartFailed { id: ContainerId, reason: String },
    #[error("container {id} is {status:?}, not {wanted}")]
    WrongStatus {
        id: ContainerId,
        status: Status,
        wanted: &'static str,
    },
    #[error("connect to the shim of {id} at {path}")]
    ConnectShim {
        id: ContainerId,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talk to the shim of {id}")]
    ShimIo {
        id: ContainerId,
        #[source]
        source: std::io::Error,
    },
    #[error("send {signal} to container {id}")]
    Signal {
        id: ContainerId,
        signal: Signal,
        #[source]
        source: nix::Error,
    },
    #[error("exec in container {id}: {reason}")]
    ExecFailed { id: ContainerId, reason: String },
    #[error("container {id} did not stop within {timeout:?}")]
    Timeout { id: ContainerId, timeout: Duration },
    #[error("remove {path}")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
}

/// A container runtime. Synchronous: the agent calls it from blocking tasks.
pub trait Runtime {
    /// Sets the container up (namespaces, rootfs, cgroup, privileges) without running it.
    fn create(
        &self,
        id: &ContainerId,
        spec: &ContainerSpec,
    ) -> Result<ContainerState, RuntimeError>;
    /// Runs the created container's process.
    fn start(&self, id: &ContainerId) -> Result<(), RuntimeError>;
    fn state(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError>;
    fn kill(&self, id: &ContainerId, signal: Signal) -> Result<(), RuntimeError>;
    /// Removes a stopped container: its cgroup and state dir.
    fn delete(&self, id: &ContainerId) -> Result<(), RuntimeError>;
    /// Every container in the state dir, running or not: what an agent adopts at start.
    fn list(&self) -> Result<Vec<ContainerId>, RuntimeError>;
    /// Runs a process inside the running container (its namespaces, root, cgroups,
    /// user, capabilities, seccomp filter), waits at most `spec.timeout` for it and
    /// relays its exit code and the tail of its output. A timeout kills only that
    /// process and its process group, never the container.
    fn exec(&self, id: &ContainerId, spec: &ExecSpec) -> Result<ExecOutcome, RuntimeError>;
    /// Starts a process inside the running container for a live session (`spec.interactive`
    /// set): its stdin, output and lifeline go to the caller (`exec_interactive`).
    fn exec_interactive(
        &self,
        id: &ContainerId,
        spec: &ExecSpec,
    ) -> Result<exec_interactive::InteractiveExec, RuntimeError>;

    /// Waits until the container has stopped.
    fn wait(&self, id: &ContainerId, timeout: Duration) -> Result<ContainerState, RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(id)?;
            if state.status == Status::Stopped {
                return Ok(state);
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Timeout {
                    id: id.clone(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    fn stop(&self, id: &ContainerId, grace: Duration) -> Result<ContainerState, RuntimeError> {
        self.stop_with(id, Signal::SIGTERM, grace)
    }

    /// `signal` (the service's `stop_signal`), up to `grace` to exit, then SIGKILL.
    fn stop_with(
        &self,
        id: &ContainerId,
        signal: Signal,
        grace: Duration,
    ) -> Result<ContainerState, RuntimeError> {
        if self.state(id)?.status == Status::Stopped {
            return self.state(id);
        }
        self.kill(id, signal)?;
        match self.wait(id, grace) {
            Err(RuntimeError::Timeout { .. }) => {
                self.kill(id, Signal::SIGKILL)?;
                self.wait(id, Duration::from_secs(10))
            }
            other => other,
        }
    }
}

/// An error and its causes on one line, for reports that cross a process boundary.
pub use coracle_proto::error_chain;
