//! `ContainerEngine`: what the supervisor needs from the image store and the container
//! runtime, per service. Synchronous like `runtime::Runtime` (create, start, state/list,
//! stop, delete); the supervisor calls it through `spawn_blocking`. The Linux adapter maps a
//! `ServiceSpec` onto the runtime's `ContainerSpec` (rootfs from the images crate) and keeps
//! the spec fingerprint beside the container so a restarted agent can adopt it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use coracle_proto::{
    Condition, DeviceId, Digest, ImageRef, RegistryAccess, ServiceName, ServiceSpec,
};

pub use crate::pull::Progress as PullTick;
use crate::reconcile::{Fingerprint, Role};
pub use crate::runtime::exec_interactive::InteractiveExec;
pub use crate::runtime::ExecOutcome;

/// A container's status as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineStatus {
    Created,
    Running,
    Stopped {
        exit_code: Option<i32>,
        oom_killed: bool,
    },
}

/// One container the engine holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineContainer {
    pub service: ServiceName,
    /// The serving container, or a `start-first` successor beside it.
    pub role: Role,
    pub fingerprint: Fingerprint,
    pub image: Digest,
    pub status: EngineStatus,
    /// Limits the runtime could not apply (e.g. a missing cgroup controller).
    pub conditions: Vec<Condition>,
}

/// A running container's usage, read from its cgroup (see `health::cgroup` parsers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStats {
    pub service: ServiceName,
    /// Cumulative CPU time.
    pub cpu_usage_usec: u64,
    pub memory_bytes: u64,
    /// Bytes through the container's own network namespace (0 with host networking).
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

/// The last lines of a service's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    pub lines: Vec<String>,
    /// Older lines exist that did not fit the line or byte bound.
    pub truncated: bool,
}

/// How a container is asked to stop: `signal` (a standard signal number, the service's
/// `stop_signal`), then SIGKILL after `grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRule {
    pub signal: u8,
    pub grace: Duration,
}

impl StopRule {
    /// SIGTERM, then SIGKILL after `grace`: Docker's default.
    pub fn term(grace: Duration) -> Self {
        Self {
            signal: coracle_proto::lifecycle::DEFAULT_STOP_SIGNAL,
            grace,
        }
    }
}

/// A failed engine step, naming the step and the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step} {object}: {reason}")]
pub struct EngineError {
    pub step: &'static str,
    pub object: String,
    pub reason: String,
}

/// The container engine as the supervisor drives it. Every call is idempotent where the
/// target already holds (start a running container, delete a missing one: `Ok`).
pub trait ContainerEngine: Send + Sync + 'static {
    /// Fetches an image into the store: from the controller's registry, or from `direct`
    /// (the device id and the `RegistryAccess` its desired state gives for the image's
    /// registry) when the image names a registry the device pulls from itself. `progress`
    /// hears each chunk of each layer and each layer's end (`pull::Progress`); it is called
    /// on the pulling thread and must not wait for the supervisor loop.
    fn pull(
        &self,
        image: &ImageRef,
        direct: Option<(&DeviceId, &RegistryAccess)>,
        progress: &mut dyn FnMut(PullTick),
    ) -> Result<(), EngineError>;
    /// Hex of the device's X25519 sealing key, reported so the controller can seal pull
    /// credentials to it; empty for engines without one.
    fn sealing_key(&self) -> String {
        String::new()
    }
    /// The token the engine pulls from the controller's registry with, which the
    /// controller replaces on its schedule (`Command::RotatePullToken`); `None` for engines
    /// that pull with none.
    fn pull_token(&self) -> Option<crate::pull::PullToken> {
        None
    }
    /// Where the agent's HTTP and TCP health probes reach the service's container in
    /// `role`: its address on its first app network, or loopback (the device's network).
    fn probe_address(&self, _service: &ServiceName, _role: Role) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::LOCALHOST
    }
    /// What the device must offer `desired` (nftables for bridged services), checked when it
    /// arrives, before anything running is touched for it; an error refuses the state.
    fn preflight(&self, _desired: &coracle_proto::DesiredState) -> Result<(), EngineError> {
        Ok(())
    }
    /// Where file `name` of the last layer of `image` (pulled before) lies in the store:
    /// how an agent release, a one-layer image, is read (see `ota`).
    fn image_file(&self, image: &ImageRef, name: &str) -> Result<std::path::PathBuf, EngineError> {
        Err(EngineError {
            step: "find a file in an image",
            object: format!("{image} {name}"),
            reason: "this engine keeps no image files".into(),
        })
    }
    /// Manifest digests of the images in the store.
    fn images(&self) -> Result<BTreeSet<Digest>, EngineError>;
    fn remove_images(&self, images: &[Digest]) -> Result<(), EngineError>;
    /// diff_ids of the layers in the store, reported so the controller can pick delta bases.
    fn layers(&self) -> Result<Vec<Digest>, EngineError>;
    /// Creates the service's container in `role` (not started), remembering `fingerprint`.
    fn create(
        &self,
        spec: &ServiceSpec,
        fingerprint: Fingerprint,
        role: Role,
    ) -> Result<(), EngineError>;
    fn start(&self, service: &ServiceName, role: Role) -> Result<(), EngineError>;
    /// `rule.signal`, up to `rule.grace`, then SIGKILL.
    fn stop(&self, service: &ServiceName, role: Role, rule: StopRule) -> Result<(), EngineError>;
    fn delete(&self, service: &ServiceName, role: Role) -> Result<(), EngineError>;
    /// The successor takes over: the service's names and published ports move to it, the
    /// old container becomes `Role::Retired` (still running, to be stopped and deleted by
    /// its own job) and the successor the service's current container. Idempotent: an
    /// agent that crashed half way calls it again.
    fn promote(&self, service: &ServiceName) -> Result<(), EngineError>;
    /// Every container, running or not (what a restarted agent adopts).
    fn list(&self) -> Result<Vec<EngineContainer>, EngineError>;
    /// Usage of every running current container.
    fn stats(&self) -> Result<Vec<ContainerStats>, EngineError>;
    /// Runs a health-check command inside the running container: its exit code and the
    /// tail of its output. After `timeout` the command (not the container) is killed and
    /// the outcome says `timed_out`.
    fn exec(
        &self,
        service: &ServiceName,
        role: Role,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, EngineError>;
    /// At most `lines` lines and `max_bytes` bytes from the end of the service's log.
    fn logs_tail(
        &self,
        service: &ServiceName,
        lines: u32,
        max_bytes: u32,
    ) -> Result<LogTail, EngineError>;
    /// The service's current container's log files, oldest first (rotated ones, then the
    /// one being written); empty when it has none.
    fn log_files(&self, _service: &ServiceName) -> Result<Vec<PathBuf>, EngineError> {
        Ok(Vec::new())
    }
    /// Starts `argv` in the service's running container for a remote session, on a
    /// terminal of `tty` (rows, cols) or on pipes.
    fn exec_interactive(
        &self,
        service: &ServiceName,
        _argv: &[String],
        _tty: Option<(u16, u16)>,
    ) -> Result<InteractiveExec, EngineError> {
        Err(EngineError {
            step: "exec in",
            object: service.to_string(),
            reason: "this engine has no interactive exec".into(),
        })
    }
}
