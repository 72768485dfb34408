//! `DesiredState`: what the controller wants a device to run. Signed by the controller's
//! deployment key (see `signed`) and checked by `DesiredState::validate` on the device.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::digest::ImageRef;
use crate::ids::{DeviceId, Generation, ServiceName};
use crate::lifecycle::Lifecycle;
use crate::sealed::Sealed;
use crate::seccomp::SeccompPolicy;
use crate::tuning::Tuning;

/// Everything one device should run, at one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub device: DeviceId,
    pub generation: Generation,
    pub services: Vec<ServiceSpec>,
    /// Registries this device pulls from directly (images whose `ImageRef::registry` names
    /// one), with their pull credential sealed for this device. Empty: every image comes from
    /// the controller's registry. Last, so states stored as JSON before it decode.
    #[serde(default)]
    pub registries: Vec<RegistryAccess>,
}

impl DesiredState {
    /// Decodes a coracle body holding a desired state, in the current layout or in one of
    /// older builds (see `legacy`).
    pub fn decode(body: &[u8]) -> Result<Self, crate::codec::DecodeError> {
        crate::legacy::decode_desired(body)
    }
}

/// How a device reaches a registry it pulls from directly (a LAN registry on a factory
/// floor): the controller resolved and pinned the digests, the device fetches the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAccess {
    /// The host as image references name it (`registry.lan:5000`).
    pub host: String,
    /// `https://host:port` or `http://host:port`.
    pub url: String,
    /// PEM of the registry's private CA; public roots when `None`.
    pub ca_pem: Option<String>,
    /// `user:password` sealed for this device (see `sealed`); `None`: anonymous pulls.
    pub sealed_credentials: Option<Sealed>,
}

/// One container the device should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: ServiceName,
    pub image: ImageRef,
    /// Overrides the image's entrypoint when not empty.
    pub entrypoint: Vec<String>,
    /// Overrides the image's command when not empty.
    pub command: Vec<String>,
    /// `(NAME, VALUE)` pairs, added to the image's environment.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// `uid[:gid]` or a name from the image's /etc/passwd.
    pub user: Option<String>,
    pub resources: Resources,
    pub restart: RestartPolicy,
    pub health: Option<HealthCheck>,
    pub volumes: Vec<VolumeMount>,
    pub devices: Vec<DeviceMapping>,
    pub network: NetworkMode,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only_rootfs: bool,
    pub update: UpdateStrategy,
    pub depends_on: Vec<Dependency>,
    /// `security_opt: seccomp=...`. `#[serde(default)]`, so JSON stored before it decodes;
    /// postcard bytes of older builds decode through `legacy::ServiceSpecV1`.
    #[serde(default)]
    pub seccomp: SeccompPolicy,
    /// Stop signal and grace, init, minimum uptime. Last, for the same reasons as
    /// `seccomp`; postcard bytes without it decode through `legacy::ServiceSpecV2`.
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// `sysctls`, `ulimits`, `oom_score_adj`, `hostname` (see `tuning`). Last; postcard
    /// bytes without it decode through `legacy::ServiceSpecV3`.
    #[serde(default)]
    pub tuning: Vec<Tuning>,
}

/// cgroup limits; `None` leaves the kernel's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_max_bytes: Option<u64>,
    /// Memory plus swap, as compose's `memswap_limit`.
    pub memory_swap_max_bytes: Option<u64>,
    /// 1000 = one full CPU.
    pub cpu_millicores: Option<u32>,
    /// Relative share, 1..=10000 (cgroup v2 scale; mapped onto v1 shares).
    pub cpu_weight: Option<u16>,
    pub pids_max: Option<u32>,
    /// Relative block I/O share, 1..=10000.
    pub io_weight: Option<u16>,
    /// cpuset list such as `0-1,3`.
    pub cpuset_cpus: Option<String>,
}

/// When the agent restarts a container that exited (Docker's policies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times (0 = unlimited).
    OnFailure {
        max_retries: u32,
    },
    Always,
    /// Like `Always`, except after an explicit stop by the operator.
    UnlessStopped,
}

/// A health probe with Docker's timing knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: HealthProbe,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    /// Consecutive failures before the container counts as unhealthy.
    pub retries: u32,
    /// Failures during this time after start do not count.
    pub start_period_ms: u32,
}

/// How health is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthProbe {
    /// Run a command inside the container; exit 0 is healthy.
    Exec(Vec<String>),
    /// GET `http://<container>:port/path`; a 2xx or 3xx status is healthy.
    Http { port: u16, path: String },
    /// A TCP connect to the port succeeds.
    Tcp { port: u16 },
}

/// A bind mount of a host path (or a named volume under the agent's data dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub source: VolumeSource,
    pub target: String,
    pub read_only: bool,
}

/// Where a volume's data lives on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeSource {
    /// A named volume, kept by the agent across updates.
    Named(String),
    /// An absolute host path.
    HostPath(String),
}

/// A host device node passed into the container, e.g. `/dev/i2c-1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    pub host_path: String,
    pub container_path: String,
    /// cgroup device permissions, a subset of `rwm`.
    pub permissions: String,
}

/// The container's network namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// Share the device's network (the common case on gateways).
    #[default]
    Host,
    /// A private namespace with loopback only.
    None,
    /// A private namespace connected through the agent's bridge.
    Private,
}

/// How a new version of a service replaces the old one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStrategy {
    pub order: UpdateOrder,
    /// When set, the new version must stay healthy this long or the agent rolls back.
    pub health_gate_ms: Option<u32>,
}

/// Whether the old container keeps running while the new image downloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateOrder {
    #[default]
    DownloadThenSwitch,
    /// Frees memory and disk first, for small devices.
    StopThenDownload,
    /// compose `deploy.update_config.order: start-first`: once the image is here, the new
    /// container starts beside the serving one, takes over the service's names and
    /// published ports when it is up (healthy, if checked), and only then does the old one
    /// stop. Agents before it applied it as `DownloadThenSwitch`.
    StartFirst,
}

/// `depends_on` with compose's conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub service: ServiceName,
    pub condition: DependencyCondition,
}

/// What a dependency must reach before the dependent service starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DependencyCondition {
    #[default]
    Started,
    Healthy,
    CompletedSuccessfully,
}

impl ServiceSpec {
    /// A service with the given name and image and every other field at its default.
    pub fn new(name: ServiceName, image: ImageRef) -> Self {
        Self {
            name,
            image,
            entrypoint: Vec::new(),
            command: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            resources: Resources::default(),
            restart: RestartPolicy::default(),
            health: None,
            volumes: Vec::new(),
            devices: Vec::new(),
            network: NetworkMode::default(),
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            read_only_rootfs: false,
            update: UpdateStrategy::default(),
            depends_on: Vec::new(),
            seccomp: SeccompPolicy::Default,
            lifecycle: Lifecycle::default(),
            tuning: Vec::new(),
        }
    }
}
