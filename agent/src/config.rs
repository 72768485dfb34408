//! The agent's configuration: `/etc/coracle/agent.toml` (or `--config PATH`).
//!
//! Every filesystem root and timing knob comes from here, so tests point the agent at temp
//! dirs and short intervals. Unknown keys are refused (a typo must not silently fall back to a
//! default), and `validate` names the key and the rule it broke.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the agent looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/coracle/agent.toml";

/// The whole agent config. Every field has a default, so an empty file is a valid config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Root of everything the agent writes: persisted state, image store, container dirs.
    pub data_dir: PathBuf,
    /// The enrolment file written by `coracle device add`.
    pub bootstrap: PathBuf,
    /// Unix socket for `coracle-agent status|ps|logs` (outside the runtime's state dir,
    /// whose entries are containers).
    pub control_socket: PathBuf,
    /// Seconds between two published health samples.
    pub health_interval_s: u32,
    pub mqtt: MqttConfig,
    pub limits: Limits,
    pub runtime: RuntimeSection,
    pub images: ImagesSection,
    pub network: NetworkSection,
    pub update: UpdateSection,
}

/// Over-the-air updates of the agent itself (see `crate::ota`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateSection {
    /// How long a new agent build may take to connect to the broker before the build
    /// before it takes over again.
    pub confirm_timeout_s: u32,
}

impl Default for UpdateSection {
    fn default() -> Self {
        Self {
            confirm_timeout_s: 120,
        }
    }
}

/// Container networks of bridged services (see `crate::network`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// Where app networks take their subnets from.
    pub pool: String,
    /// Size of each app network's subnet.
    pub subnet_prefix: u8,
    /// Names the bridges, host-side veths and the nftables table: 1 to 6 lowercase
    /// letters and digits, starting with a letter.
    pub name_prefix: String,
    /// Where containers' network namespaces are mounted (tmpfs).
    pub netns_dir: PathBuf,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            pool: "172.29.0.0/16".into(),
            subnet_prefix: 24,
            name_prefix: "crc".into(),
            netns_dir: PathBuf::from("/run/coracle-netns"),
        }
    }
}

/// How image layers are taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesSection {
    /// Refuse layers with device nodes or setuid/setgid files. Off by default: layers are
    /// taken as Docker takes them (every Debian-based image has `su` and `/dev/console`).
    pub strict_layers: bool,
}

impl ImagesSection {
    /// What the image store lets a layer contain.
    pub fn unpack_limits(&self) -> coracle_images::unpack::UnpackLimits {
        if self.strict_layers {
            coracle_images::unpack::UnpackLimits::strict()
        } else {
            coracle_images::unpack::UnpackLimits::default()
        }
    }
}

/// Where the container runtime keeps its per-container state and cgroups.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSection {
    /// Per-container state (shim sockets, state files, logs); on tmpfs, since it describes
    /// processes that do not survive a reboot.
    pub state_dir: PathBuf,
    pub cgroup_root: PathBuf,
    /// Containers' cgroups go under `<cgroup_root>/<controller>/<cgroup_parent>/`.
    pub cgroup_parent: String,
    /// Run a container whose limits need a cgroup controller this kernel lacks (e.g. a
    /// `memory` limit on a board booted without the memory controller), reporting a
    /// `MissingController` condition, instead of refusing to start it. Off by default:
    /// limits the operator asked for are never dropped unless this says so.
    pub allow_missing_controllers: bool,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/coracle"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "coracle".to_string(),
            allow_missing_controllers: false,
        }
    }
}

/// Broker connection knobs; the broker address and credentials come from the bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// MQTT keep-alive; a ping costs ~50 bytes on the wire with TLS, so keep it long.
    pub keep_alive_s: u16,
    /// First reconnect delay; doubles on every failure up to `reconnect_max_ms`.
    pub reconnect_min_ms: u32,
    pub reconnect_max_ms: u32,
}

/// Bounds on the agent's own footprint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The agent's own memory budget, for its service unit's `MemoryMax` (the agent
    /// itself does not enforce it).
    pub agent_memory_mib: u32,
    /// Most disk the image store may use (enforced by the store's pull preflight).
    pub store_max_mib: u32,
    /// Free disk always left for the system; a pull that would eat into it is refused.
    pub disk_reserve_mib: u32,
    /// Events kept while offline; the oldest are dropped (and counted) beyond this.
    pub offline_events: u32,
    /// Largest log tail sent in one command reply.
    pub log_tail_max_bytes: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/coracle"),
            bootstrap: PathBuf::from("/etc/coracle/bootstrap.toml"),
            control_socket: PathBuf::from("/run/coracle-agent.sock"),
            health_interval_s: 60,
            mqtt: MqttConfig::default(),
            limits: Limits::default(),
            runtime: RuntimeSection::default(),
            images: ImagesSection::default(),
            network: NetworkSection::default(),
            update: UpdateSection::default(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            keep_alive_s: 300,
            reconnect_min_ms: 500,
            reconnect_max_ms: 120_000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            agent_memory_mib: 16,
            store_max_mib: 4096,
            disk_reserve_mib: 256,
            offline_events: 1000,
            log_tail_max_bytes: 64 * 1024,
        }
    }
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not valid agent TOML")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("config key {key} must be {rule}")]
    Invalid {
        key: &'static str,
        rule: &'static str,
    },
}

impl AgentConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: absolute paths, non-zero intervals, ordered bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, rule| Err(ConfigError::Invalid { key, rule });
        if !self.data_dir.is_absolute() {
            return invalid("data_dir", "an absolute path");
        }
        if !self.bootstrap.is_absolute() {
            return invalid("bootstrap", "an absolute path");
        }
        if !self.control_socket.is_absolute() {
            return invalid("control_socket", "an absolute path");
        }
        // sun_path holds 108 bytes including the NUL.
        if self.control_socket.as_os_str().len() > 107 {
            return invalid("control_socket", "at most 107 bytes long");
        }
        if !(5..=86_400).contains(&self.health_interval_s) {
            return invalid("health_interval_s", "between 5 and 86400");
        }
        if !(5..=3_600).contains(&self.update.confirm_timeout_s) {
            return invalid("update.confirm_timeout_s", "between 5 and 3600");
        }
        let m = &self.mqtt;
        if m.keep_alive_s < 5 {
            return invalid("mqtt.keep_alive_s", "at least 5");
        }
        if m.reconnect_min_ms == 0 {
            return invalid("mqtt.reconnect_min_ms", "greater than 0");
        }
        if m.reconnect_max_ms < m.reconnect_min_ms {
            return invalid("mqtt.reconnect_max_ms", "at least mqtt.reconnect_min_ms");
        }
        let l = &self.limits;
        if l.agent_memory_mib < 4 {
            return invalid("limits.agent_memory_mib", "at least 4");
        }
        if l.store_max_mib == 0 {
            return invalid("limits.store_max_mib", "greater than 0");
        }
        if l.offline_events == 0 {
            return invalid("limits.offline_events", "greater than 0");
        }
        if !(1024..=coracle_proto::codec::MAX_BODY_BYTES as u32 / 2).contains(&l.log_tail_max_bytes)
        {
            return invalid(
                "limits.log_tail_max_bytes",
                "between 1024 and half the protocol's body limit",
            );
        }
        self.network_pool()?;
        let prefix = &self.network.name_prefix;
        let prefix_ok = (1..=6).contains(&prefix.len())
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !prefix_ok {
            return invalid(
                "network.name_prefix",
                "1 to 6 lowercase letters and digits, starting with a letter",
            );
        }
        if !self.network.netns_dir.is_absolute() {
            return invalid("network.netns_dir", "an absolute path");
        }
        Ok(())
    }

    fn network_pool(&self) -> Result<crate::network::ipam::Pool, ConfigError> {
        let invalid = |key, rule| ConfigError::Invalid { key, rule };
        let range = self.network.pool.parse().map_err(|_| {
            invalid(
                "network.pool",
                "an IPv4 network without host bits, such as 172.29.0.0/16",
            )
        })?;
        crate::network::ipam::Pool::new(range, self.network.subnet_prefix).map_err(|_| {
            invalid(
                "network.subnet_prefix",
                "from the pool's prefix length to 29",
            )
        })
    }

    /// The engine's network settings; `validate` has checked them.
    pub fn network_config(&self) -> Result<crate::network::NetworkConfig, ConfigError> {
        let mut config = crate::network::NetworkConfig::device(&self.data_dir);
        config.pool = self.network_pool()?;
        config.prefix.clone_from(&self.network.name_prefix);
        config.netns_dir.clone_from(&self.network.netns_dir);
        Ok(config)
    }

    /// The health sampling period.
    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.health_interval_s))
    }

    /// How long a new agent build has to connect (`[update] confirm_timeout_s`).
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.update.confirm_timeout_s))
    }

    /// Where the persisted agent state lives.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("/etc/coracle/agent.toml"))
    }

    #[test]
    fn empty_file_is_the_default_config() {
        assert_eq!(parse("").unwrap(), AgentConfig::default());
        AgentConfig::default().validate().unwrap();
    }

    #[test]
    fn every_key_can_be_set() {
        let config = parse(
            r#"
            data_dir = "/data/coracle"
            bootstrap = "/data/bootstrap.toml"
            control_socket = "/tmp/agent.sock"
            health_interval_s = 30
            [mqtt]
            keep_alive_s = 60
            reconnect_min_ms = 100
            reconnect_max_ms = 1000
            [limits]
            agent_memory_mib = 12
            store_max_mib = 512
            disk_reserve_mib = 64
            offline_events = 50
            log_tail_max_bytes = 4096
            [images]
            strict_layers = true
            "#,
        )
        .unwrap();
        assert_eq!(config.data_dir, Path::new("/data/coracle"));
        assert_eq!(config.health_interval(), Duration::from_secs(30));
        assert_eq!(config.mqtt.reconnect_max_ms, 1000);
        assert_eq!(config.limits.offline_events, 50);
        assert_eq!(config.state_dir(), Path::new("/data/coracle/state"));
        let limits = config.images.unpack_limits();
        assert!(!limits.allow_devices && !limits.allow_setid);
    }

    #[test]
    fn missing_cgroup_controllers_are_refused_unless_the_operator_allows_them() {
        assert!(!AgentConfig::default().runtime.allow_missing_controllers);
        let config = parse("[runtime]\nallow_missing_controllers = true").unwrap();
        assert!(config.runtime.allow_missing_controllers);
    }

    #[test]
    fn layers_are_taken_as_docker_takes_them_unless_strict() {
        let limits = AgentConfig::default().images.unpack_limits();
        assert!(limits.allow_devices && limits.allow_setid);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = parse("helth_interval_s = 10").unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("helth_interval_s"), "{chain}");
        let err = parse("[limits]\nmemory = 3").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
    }

    #[test]
    fn wrong_types_are_parse_errors_naming_the_file() {
        let err = parse("health_interval_s = \"often\"").unwrap_err();
        assert!(err.to_string().contains("/etc/coracle/agent.toml"), "{err}");
    }

    #[test]
    fn validate_names_the_key_and_rule() {
        let cases = [
            ("data_dir = \"relative\"", "data_dir"),
            ("bootstrap = \"b.toml\"", "bootstrap"),
            ("health_interval_s = 1", "health_interval_s"),
            ("[mqtt]\nreconnect_min_ms = 0", "mqtt.reconnect_min_ms"),
            (
                "[mqtt]\nreconnect_min_ms = 500\nreconnect_max_ms = 10",
                "mqtt.reconnect_max_ms",
            ),
            ("[limits]\noffline_events = 0", "limits.offline_events"),
            ("[network]\npool = \"10.0.0.1/16\"", "network.pool"),
            ("[network]\nsubnet_prefix = 8", "network.subnet_prefix"),
            (
                "[network]\nname_prefix = \"toolong\"",
                "network.name_prefix",
            ),
            ("[network]\nnetns_dir = \"run\"", "network.netns_dir"),
            (
                "[limits]\nlog_tail_max_bytes = 10",
                "limits.log_tail_max_bytes",
            ),
        ];
        for (text, key) in cases {
            match parse(text) {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key, "{text}"),
                other => panic!("{text}: expected Invalid({key}), got {other:?}"),
            }
        }
        let long = format!("control_socket = \"/{}\"", "s".repeat(120));
        assert!(matches!(
            parse(&long),
            Err(ConfigError::Invalid {
                key: "control_socket",
                ..
            })
        ));
    }

    #[test]
    fn missing_file_is_a_read_error_naming_the_path() {
        let err = AgentConfig::load(Path::new("/nonexistent/agent.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/agent.toml"));
    }
}
