//! The YAML shape of the compose subset. Unknown keys are refused so a typo never silently
//! drops a setting.

use std::collections::BTreeMap;

use serde::de::Error;
use serde::{Deserialize, Deserializer};

use super::lenient;

/// An app file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub services: BTreeMap<String, ComposeService>,
    /// Named volumes the services mount (`volumes:` at the top; see `named_volumes`).
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<NamedVolume>>,
    /// The app's networks (`networks:` at the top; see `networks`).
    #[serde(default)]
    pub networks: BTreeMap<String, Option<AppNetwork>>,
}

/// A top-level `networks:` entry: a bridge of the app's own on the device. Keys refused
/// whatever their value are named in `refused::NETWORK`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppNetwork {
    pub driver: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub internal: Option<bool>,
    pub labels: Option<Labels>,
    /// `true`, or the legacy `{name: ...}`: refused (`networks`).
    pub external: Option<serde_yaml::Value>,
}

/// A top-level `volumes:` entry: only the device's own (`local`) volumes exist.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedVolume {
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, Scalar>>,
    pub external: Option<Scalar>,
    pub name: Option<String>,
    pub labels: Option<Labels>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeService {
    pub image: String,
    pub command: Option<StringOrList>,
    pub entrypoint: Option<StringOrList>,
    pub environment: Option<Environment>,
    /// Short (`data:/data:ro`) or long (a mapping) entries (see `mounts`, `long_volumes`).
    #[serde(default)]
    pub volumes: Vec<VolumeEntry>,
    #[serde(default)]
    pub devices: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: Option<String>,
    pub mem_limit: Option<Scalar>,
    /// The memory soft limit (see `resources`).
    pub mem_reservation: Option<Scalar>,
    /// Memory plus swap; `-1` is unlimited.
    pub memswap_limit: Option<Scalar>,
    /// `0.5` or `"0.5"`.
    pub cpus: Option<Scalar>,
    /// Docker's relative CPU shares (2 to 262144, default 1024).
    pub cpu_shares: Option<Scalar>,
    /// CPUs the service may run on: `0-1,3`.
    pub cpuset: Option<String>,
    pub pids_limit: Option<Scalar>,
    /// Metadata: accepted, checked, kept in the app (see `labels`).
    pub labels: Option<Labels>,
    /// The service runs only when one of these is active (see `profiles`).
    #[serde(default)]
    pub profiles: Vec<String>,
    pub depends_on: Option<DependsOn>,
    pub network_mode: Option<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub read_only: Option<bool>,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `seccomp=unconfined`, `seccomp=FILE`, `no-new-privileges` (see `seccomp`).
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// Docker's `--privileged` (see `tuning`); the deploy policy must grant it.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub privileged: Option<bool>,
    /// Run the agent's init as PID 1 (see `lifecycle`).
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub init: Option<bool>,
    /// `SIGINT`, `INT`, `2`.
    pub stop_signal: Option<Scalar>,
    /// A compose duration: `30s`, `1m30s`.
    pub stop_grace_period: Option<String>,
    pub deploy: Option<Deploy>,
    /// Namespaced kernel parameters, a map or a `NAME=VALUE` list (see `tuning`).
    pub sysctls: Option<Labels>,
    /// `nofile: 1024` or `nofile: {soft: 1024, hard: 4096}`.
    pub ulimits: Option<BTreeMap<String, Ulimit>>,
    /// -1000 to 1000.
    pub oom_score_adj: Option<Scalar>,
    pub hostname: Option<String>,
    /// The app networks the service joins (see `networks`).
    pub networks: Option<ServiceNetworks>,
    /// Published ports, short (`"8080:80"`) or long (a mapping) (see `ports`).
    #[serde(default)]
    pub ports: Vec<PortEntry>,
    /// `"3000"`, `"3000-3005"`, `"3000/udp"` or `3000`.
    #[serde(default)]
    pub expose: Vec<Scalar>,
    /// IPv4 addresses of DNS servers: one or a list.
    pub dns: Option<StringOrList>,
    pub dns_search: Option<StringOrList>,
    #[serde(default)]
    pub dns_opt: Vec<String>,
    /// `["name:ip"]`, `["name=ip"]` or `{name: ip}`.
    pub extra_hosts: Option<Labels>,
    /// `PATH[:OPTIONS]`, one or a list (see `tmpfs`).
    pub tmpfs: Option<StringOrList>,
    /// The size of `/dev/shm`: bytes or `64m`.
    pub shm_size: Option<Scalar>,
    /// Supplementary groups: names in the image's /etc/group or GIDs.
    #[serde(default)]
    pub group_add: Vec<Scalar>,
    /// The log driver and its rotation (see `logging`).
    pub logging: Option<Logging>,
}

/// `logging:`; options with no meaning for the agent are refused by name (`refused`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: Option<BTreeMap<String, Option<Scalar>>>,
}

/// A service's `networks:`: `[front, back]` or `{front: {aliases: [a]}, back: null}`.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceNetworks {
    List(Vec<String>),
    Map(BTreeMap<String, Option<NetworkEntry>>),
}

/// One entry of the map form of a service's `networks:`. Keys refused whatever their value
/// are named in `refused::SERVICE_NETWORK`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// One `ports:` entry: short (`"127.0.0.1:8080:80/udp"`, `80`) or long.
#[derive(Debug, Clone, PartialEq)]
pub enum PortEntry {
    Short(Scalar),
    Long(LongPort),
}

/// The long syntax of a `ports:` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongPort {
    pub target: Scalar,
    /// A port or a range (`8000-8001`); absent: a random one (refused).
    pub published: Option<Scalar>,
    pub host_ip: Option<String>,
    pub protocol: Option<String>,
    /// `host` or `ingress`: both publish on the device.
    pub mode: Option<String>,
    /// Accepted and ignored, as metadata.
    pub name: Option<String>,
    pub app_protocol: Option<String>,
}

/// One `volumes:` entry of a service: short (`/host:/path:ro`) or long.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeEntry {
    Short(String),
    Long(LongVolume),
}

/// The long syntax of a `volumes:` entry. Keys refused whatever their value are named in
/// `refused::LONG_VOLUME`; values are judged in `long_volumes`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongVolume {
    /// `volume`, `bind`, `tmpfs` (`npipe`, `cluster`, `image`: refused).
    #[serde(rename = "type")]
    pub kind: String,
    pub source: Option<String>,
    pub target: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub read_only: Option<bool>,
    pub bind: Option<BindOptions>,
    pub volume: Option<VolumeOptions>,
    pub tmpfs: Option<TmpfsOptions>,
}

/// `bind:` of a long volume entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindOptions {
    pub propagation: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub create_host_path: Option<bool>,
    pub recursive: Option<String>,
}

/// `volume:` of a long volume entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeOptions {
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub nocopy: Option<bool>,
}

/// `tmpfs:` of a long volume entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmpfsOptions {
    /// Bytes or `64m`.
    pub size: Option<Scalar>,
    /// Permission bits as Docker reads the YAML: `0o1777` or `01777` octal, `1777` decimal.
    pub mode: Option<Scalar>,
}

/// Reads a mapping as `map` and anything else as `other`, so a mapping's unknown key is
/// reported as such (an untagged enum would only say that no form matched).
fn other_or_map<'de, D, T, S, M>(
    d: D,
    other: impl FnOnce(S) -> T,
    map: impl FnOnce(M) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    S: serde::de::DeserializeOwned,
    M: serde::de::DeserializeOwned,
{
    let value = serde_yaml::Value::deserialize(d)?;
    if value.is_mapping() {
        serde_yaml::from_value(value)
            .map(map)
            .map_err(D::Error::custom)
    } else {
        serde_yaml::from_value(value)
            .map(other)
            .map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ServiceNetworks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        other_or_map(d, ServiceNetworks::List, ServiceNetworks::Map)
    }
}

impl<'de> Deserialize<'de> for VolumeEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        other_or_map(d, VolumeEntry::Short, VolumeEntry::Long)
    }
}

impl<'de> Deserialize<'de> for PortEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        other_or_map(d, PortEntry::Short, PortEntry::Long)
    }
}

/// One `ulimits:` entry: one number for both limits, or both given.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Ulimit {
    Both(Scalar),
    Pair { soft: Scalar, hard: Scalar },
}

/// `deploy:`, of which only `update_config` means something on a single device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub update_config: Option<UpdateConfig>,
    pub resources: Option<DeployResources>,
}

/// `deploy.resources:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployResources {
    pub limits: Option<Limits>,
    pub reservations: Option<Reservations>,
}

/// `deploy.resources.reservations:`; `devices`, `pids` and `generic_resources` are refused
/// by name (`refused`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservations {
    /// Accepted and ignored, as Docker Compose does outside swarm (see `resources`).
    pub cpus: Option<Scalar>,
    pub memory: Option<Scalar>,
}

/// `deploy.resources.limits:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub cpus: Option<Scalar>,
    pub memory: Option<Scalar>,
    pub pids: Option<Scalar>,
}

/// `labels:` as a map or a `KEY=VALUE` list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Labels {
    Map(BTreeMap<String, Option<Scalar>>),
    List(Vec<String>),
}

/// `deploy.update_config:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// `start-first` or `stop-first`.
    pub order: Option<String>,
    /// How long a new container must stay up before the update counts as done.
    pub monitor: Option<String>,
}

/// `command: "a b"` or `command: [a, b]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl StringOrList {
    /// A string is split on whitespace (compose does shell-like splitting; quotes are not
    /// supported here, use the list form).
    /// `[NONE]`, the default `test` of a `disable`d healthcheck.
    pub fn none() -> Self {
        StringOrList::List(vec!["NONE".to_string()])
    }

    pub fn into_args(self) -> Vec<String> {
        match self {
            StringOrList::String(s) => s.split_whitespace().map(String::from).collect(),
            StringOrList::List(l) => l,
        }
    }
}

/// A YAML scalar that may be written as a number or a string (`mem_limit: 512m` or `1024`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(u64),
    Float(f64),
    Bool(bool),
    String(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Float(v) => write!(f, "{v}"),
            Scalar::Bool(v) => write!(f, "{v}"),
            Scalar::String(v) => f.write_str(v),
        }
    }
}

/// `environment:` as a map or a `NAME=VALUE` list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Environment {
    Map(BTreeMap<String, Scalar>),
    List(Vec<String>),
}

/// `healthcheck:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    /// Absent only with `disable: true`.
    #[serde(default = "StringOrList::none")]
    pub test: StringOrList,
    /// `disable: true` is the same as `test: [NONE]`.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub disable: Option<bool>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub retries: Option<u32>,
    pub start_period: Option<String>,
    /// The probe interval during `start_period` (see `health`).
    pub start_interval: Option<String>,
}

/// `depends_on:` as a list or a map with conditions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, DependsOnEntry>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependsOnEntry {
    pub condition: Option<String>,
    /// `true` (the default) only: a device starts every service of the app.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub required: Option<bool>,
    /// Restarting dependents with their dependency: refused by name (`mod.rs`).
    pub restart: Option<Scalar>,
}
