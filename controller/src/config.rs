//! `ServeConfig`: everything `coracle serve` reads, from one TOML file. Every address and
//! every path comes from here, so tests point them at temp dirs and `127.0.0.1:0`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// `field` as written in the file: `deltas.workers`, `policy.allow[2].tag`, ...
    #[error("config field {field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// The controller's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Where the SQLite database, CA, keys and blobs live.
    pub data_dir: PathBuf,
    /// The fleet database: SQLite in `data_dir` unless `url` names a PostgreSQL one.
    pub store: StoreSection,
    pub broker: BrokerSection,
    pub api: ListenSection,
    pub registry: RegistrySection,
    /// Host name or address devices use to reach this controller; it goes into bootstrap
    /// files and the broker's TLS certificate. Defaults to the listen address's IP.
    pub public_host: Option<String>,
    pub fleet: FleetSection,
    pub deltas: DeltasSection,
    /// Where blobs live besides the data dir (`[blobs.s3]`, `object_store/`).
    pub blobs: crate::object_store::BlobsSection,
    /// Upstream registries images are pulled from at deploy time (`[[registries]]`):
    /// private CA, plain HTTP, credentials file. Registries without an entry are reached
    /// over HTTPS with the public roots and `coracle registry login` credentials.
    pub registries: Vec<crate::upstream::RegistrySection>,
    /// The deploy policy (`policy/`): what apps may ask of devices, per tag or device.
    pub policy: crate::policy::PolicySection,
}

/// Where the fleet database lives (`store::backend`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// A PostgreSQL database (`postgres://user:password@host:port/db`, or a socket directory
    /// as a percent-encoded host); absent: the embedded SQLite database in `data_dir`.
    pub url: Option<String>,
}

impl StoreSection {
    fn validate(&self) -> Result<(), ConfigError> {
        match &self.url {
            Some(url) if !url.starts_with("postgres://") && !url.starts_with("postgresql://") => {
                Err(ConfigError::Invalid {
                    field: "store.url".into(),
                    reason: "must be a postgres:// URL (leave it out for the embedded SQLite)"
                        .into(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Background delta encoding (`registry/delta_workers.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeltasSection {
    /// Encoding threads, each at nice 19; 0 encodes only when a device asks.
    pub workers: usize,
    /// The newest tags of a repository encoded ahead, each from this many tags before it.
    pub history: usize,
    /// Idle seconds after which every repository is planned again (picks up
    /// `coracle image import` run beside the server).
    pub rescan_s: u64,
    /// How long a device's delta request waits for an encode in progress (or one it
    /// starts) before the device is told to pull the full layer; the encode goes on and
    /// later devices get the delta. Keep it under the agent's 30 s read timeout.
    pub request_wait_s: u64,
}

impl Default for DeltasSection {
    fn default() -> Self {
        Self {
            workers: 1,
            history: 3,
            rescan_s: 15,
            request_wait_s: 20,
        }
    }
}

/// Fleet-wide timing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSection {
    /// A device silent (no health sample) this long is marked offline: about three of the
    /// agents' health intervals (60 s by default).
    pub offline_after_s: u64,
    /// Platforms the fleet runs (`os/arch[/variant]`): a multi-arch image from another
    /// registry is mirrored for these entries of its index only.
    pub platforms: Vec<String>,
    /// Controllers sharing one database: how long the one driving a rollout holds it without
    /// renewing (it renews every second); another takes the rollout over after that.
    pub rollout_lease_s: u64,
}

impl Default for FleetSection {
    fn default() -> Self {
        Self {
            rollout_lease_s: 10,
            offline_after_s: 180,
            platforms: ["linux/arm64", "linux/arm/v7", "linux/amd64"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl FleetSection {
    /// The parsed `platforms` (validated by [`ServeConfig::validate`]).
    pub fn parsed_platforms(&self) -> Vec<coracle_images::oci::Platform> {
        self.platforms
            .iter()
            .filter_map(|p| coracle_images::oci::Platform::parse(p))
            .collect()
    }
}

/// The MQTT side.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// Plain-TCP listener of the embedded broker; the controller's own client uses it.
    pub listen: SocketAddr,
    /// TLS listener of the embedded broker (certificate signed by the controller CA);
    /// devices use it.
    pub tls_listen: SocketAddr,
    /// `mqtt://host:port` or `mqtts://host:port` of an external broker. When set, no
    /// broker is embedded.
    pub external_url: Option<String>,
    /// With an external broker: the URL devices dial, written into their bootstrap files
    /// (e.g. `mqtts://broker.example:8883`, the broker's TLS listener), when it differs from
    /// `external_url` (e.g. the controller's plain loopback listener on the broker's host).
    /// Defaults to `external_url`.
    pub device_url: Option<String>,
    /// With an external Mosquitto on this host: the directory `coracle broker
    /// mosquitto-config` wrote. Enrolling a device adds its account to the password file
    /// there, removing it deletes the account; Mosquitto is reloaded through its pid file.
    pub mosquitto_dir: Option<PathBuf>,
    /// With an external NATS cluster (its MQTT interface as `external_url`): `nats://` or
    /// `tls://host:port` of a node's native listener. Health, reported states and events
    /// then come through a NATS queue group, so controllers sharing the cluster split them
    /// (NATS's MQTT has no shared subscriptions); everything else stays on MQTT.
    pub nats_ingest: Option<String>,
    /// With NATS nodes on this host: the directory `coracle broker nats-config` wrote.
    /// Enrolling a device adds its account to `accounts.conf` there, removing it deletes
    /// it; every node with a pid file in the directory is reloaded.
    pub nats_dir: Option<PathBuf>,
    /// With an external broker whose TLS certificate was not issued by the controller CA
    /// (`mosquitto-config` issues it with the controller CA; other brokers bring their own):
    /// a PEM file of the CA that did. Bootstrap files carry it after the controller CA.
    pub device_ca_file: Option<PathBuf>,
    /// Seconds a device has to complete its TLS handshake on `tls_listen`.
    pub handshake_timeout_s: u64,
    /// Connections `tls_listen` holds at once, in total and from one source address
    /// (devices behind one NAT share an address). One over a cap is closed at once.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// The OCI registry's listener (as any HTTP listener) and its upload sessions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    pub listen: SocketAddr,
    /// HTTPS or plain HTTP, as for `[api] tls`.
    #[serde(default)]
    pub tls: Option<bool>,
    #[serde(default = "default_http_connections")]
    pub max_connections: usize,
    #[serde(default = "default_http_connections_per_ip")]
    pub max_connections_per_ip: usize,
    #[serde(default = "default_header_timeout_s")]
    pub header_timeout_s: u64,
    #[serde(default = "default_body_stall_s")]
    pub body_stall_s: u64,
    /// An upload session untouched (no chunk) this long is abandoned and removed, with
    /// its bytes: a client that died mid-push leaves nothing behind for ever.
    #[serde(default = "default_upload_expiry_s")]
    pub upload_expiry_s: u64,
    /// Also accept the one pull token all devices shared before each got its own (it reads
    /// every repository and survives `device rm`): only to bridge an upgrade until old
    /// devices are enrolled again. Each use is logged.
    #[serde(default)]
    pub legacy_pull_token: bool,
    /// Each device's pull token is replaced after this long (`pull_token_rotation`), and
    /// the one two epochs back revoked once the device confirms the new one; 0: never.
    #[serde(default = "default_pull_token_rotation_s")]
    pub pull_token_rotation_s: u64,
}

fn default_upload_expiry_s() -> u64 {
    24 * 3600
}

fn default_pull_token_rotation_s() -> u64 {
    24 * 3600
}

impl Default for RegistrySection {
    fn default() -> Self {
        let http = ListenSection::at(5000);
        Self {
            listen: http.listen,
            tls: http.tls,
            max_connections: http.max_connections,
            max_connections_per_ip: http.max_connections_per_ip,
            header_timeout_s: http.header_timeout_s,
            body_stall_s: http.body_stall_s,
            upload_expiry_s: default_upload_expiry_s(),
            legacy_pull_token: false,
            pull_token_rotation_s: default_pull_token_rotation_s(),
        }
    }
}

impl RegistrySection {
    /// The listener part, as the API's.
    pub fn http(&self) -> ListenSection {
        ListenSection {
            listen: self.listen,
            tls: self.tls,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            header_timeout_s: self.header_timeout_s,
            body_stall_s: self.body_stall_s,
        }
    }

    /// How often abandoned sessions are looked for: often enough that one lives at most
    /// about 1.5 times the expiry, never more than every 10 minutes.
    pub fn expiry_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs((self.upload_expiry_s / 2).clamp(1, 600))
    }
}

/// One HTTP listener and what it allows its peers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    pub listen: SocketAddr,
    /// `true`: HTTPS with the controller's certificate (signed by the controller CA, which
    /// devices and the CLI trust). `false`: plain HTTP, on purpose (a TLS proxy in front, a
    /// closed network). Unset: plain HTTP on a loopback address; any other address is
    /// refused at start until this is set, so nothing is served in clear by accident.
    #[serde(default)]
    pub tls: Option<bool>,
    /// Connections held at once, in total and from one source address; over a cap a new
    /// connection is answered 503 and closed.
    #[serde(default = "default_http_connections")]
    pub max_connections: usize,
    #[serde(default = "default_http_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send a request head, and that a keep-alive connection may
    /// sit idle between requests.
    #[serde(default = "default_header_timeout_s")]
    pub header_timeout_s: u64,
    /// Seconds a request body may go without a byte before the request fails. A slow
    /// upload that keeps moving is never cut.
    #[serde(default = "default_body_stall_s")]
    pub body_stall_s: u64,
}

fn default_http_connections() -> usize {
    256
}

fn default_http_connections_per_ip() -> usize {
    64
}

fn default_header_timeout_s() -> u64 {
    10
}

fn default_body_stall_s() -> u64 {
    30
}

/// The embedded broker counts every relayed device as a loopback client, and `mqtt5`
/// allows 10,000 clients per address; the TLS cap stays below that.
const MAX_BROKER_CONNECTIONS: usize = 9_000;

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("coracle-data"),
            store: StoreSection::default(),
            broker: BrokerSection::default(),
            api: ListenSection::at(8080),
            registry: RegistrySection::default(),
            public_host: None,
            fleet: FleetSection::default(),
            deltas: DeltasSection::default(),
            blobs: crate::object_store::BlobsSection::default(),
            registries: Vec::new(),
            policy: crate::policy::PolicySection::default(),
        }
    }
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self {
            listen: loopback(1883),
            tls_listen: loopback(8883),
            external_url: None,
            device_url: None,
            mosquitto_dir: None,
            nats_ingest: None,
            nats_dir: None,
            device_ca_file: None,
            handshake_timeout_s: 10,
            max_connections: 4096,
            max_connections_per_ip: 256,
        }
    }
}

impl ListenSection {
    fn at(port: u16) -> Self {
        Self {
            listen: loopback(port),
            tls: None,
            max_connections: default_http_connections(),
            max_connections_per_ip: default_http_connections_per_ip(),
            header_timeout_s: default_header_timeout_s(),
            body_stall_s: default_body_stall_s(),
        }
    }

    /// The limits `net::http::serve` enforces.
    pub fn limits(&self) -> crate::net::HttpLimits {
        crate::net::HttpLimits {
            gate: crate::net::GateLimits {
                total: self.max_connections,
                per_ip: self.max_connections_per_ip,
            },
            header_timeout: Duration::from_secs(self.header_timeout_s),
            body_stall: Duration::from_secs(self.body_stall_s),
            // A TLS client gets as long for its handshake as for its request head.
            handshake_timeout: Duration::from_secs(self.header_timeout_s),
        }
    }

    /// Whether the listener serves HTTPS (see `tls`; validated: unset only on loopback).
    pub fn serves_tls(&self) -> bool {
        self.tls.unwrap_or(false)
    }

    /// `https` or `http`, as the listener serves.
    pub fn scheme(&self) -> &'static str {
        if self.serves_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// Whether the listener serves plain HTTP on a non-loopback address because the config
    /// says so (`tls = false`): worth a warning at start.
    pub fn plain_off_loopback(&self) -> bool {
        self.tls == Some(false) && !self.listen.ip().is_loopback()
    }

    fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        };
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(invalid(
                "max_connections and max_connections_per_ip must be at least 1",
            ));
        }
        if self.header_timeout_s == 0 || self.body_stall_s == 0 {
            return Err(invalid(
                "header_timeout_s and body_stall_s must be at least 1",
            ));
        }
        if self.tls.is_none() && !self.listen.ip().is_loopback() {
            return Err(invalid(&format!(
                "listen = \"{listen}\" is not a loopback address: set {field}.tls = true to \
                 serve HTTPS with the controller's certificate, or {field}.tls = false to \
                 serve plain HTTP there on purpose",
                listen = self.listen
            )));
        }
        Ok(())
    }
}

impl BrokerSection {
    /// The limits the embedded broker's TLS listener enforces.
    pub fn tls_limits(&self) -> crate::broker::tls_front::TlsFrontLimits {
        crate::broker::tls_front::TlsFrontLimits {
            handshake_timeout: Duration::from_secs(self.handshake_timeout_s),
            gate: crate::net::GateLimits {
                total: self.max_connections,
                per_ip: self.max_connections_per_ip,
            },
        }
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            field: "broker".into(),
            reason,
        };
        if !(1..=60).contains(&self.handshake_timeout_s) {
            return Err(invalid("handshake_timeout_s must be 1 to 60".into()));
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(invalid(
                "max_connections and max_connections_per_ip must be at least 1".into(),
            ));
        }
        if self.max_connections > MAX_BROKER_CONNECTIONS {
            return Err(invalid(format!(
                "max_connections is at most {MAX_BROKER_CONNECTIONS} (the embedded broker's \
                 limit per address; devices reach it through a loopback relay)"
            )));
        }
        Ok(())
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl ServeConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                field: "data_dir".into(),
                reason: "must not be empty".into(),
            });
        }
        crate::policy::Policy::new(&self.policy)?;
        self.store.validate()?;
        if let Some(s3) = &self.blobs.s3 {
            s3.validate()?;
        }
        if self.deltas.workers > 16 {
            return Err(ConfigError::Invalid {
                field: "deltas.workers".into(),
                reason: "at most 16 encoding threads".into(),
            });
        }
        if self.registry.upload_expiry_s == 0 {
            return Err(ConfigError::Invalid {
                field: "registry.upload_expiry_s".into(),
                reason: "must be at least 1".into(),
            });
        }
        if self.deltas.request_wait_s > 25 {
            return Err(ConfigError::Invalid {
                field: "deltas.request_wait_s".into(),
                reason: format!(
                    "{} s: at most 25, or agents give up on the request (30 s read timeout) \
                     and pull the full layer anyway",
                    self.deltas.request_wait_s
                ),
            });
        }
        if self.deltas.history == 0 || self.deltas.rescan_s == 0 {
            return Err(ConfigError::Invalid {
                field: "deltas".into(),
                reason: "history and rescan_s must be at least 1".into(),
            });
        }
        if let Some(url) = &self.broker.external_url {
            crate::broker::BrokerUrl::parse(url).map_err(|err| ConfigError::Invalid {
                field: "broker.external_url".into(),
                reason: err.to_string(),
            })?;
        }
        if let Some(url) = &self.broker.device_url {
            if self.broker.external_url.is_none() {
                return Err(ConfigError::Invalid {
                    field: "broker.device_url".into(),
                    reason: "only with broker.external_url (the embedded broker's device URL \
                             is its TLS listener on public_host)"
                        .into(),
                });
            }
            crate::broker::BrokerUrl::parse(url).map_err(|err| ConfigError::Invalid {
                field: "broker.device_url".into(),
                reason: err.to_string(),
            })?;
        }
        let external_only = [
            ("broker.mosquitto_dir", self.broker.mosquitto_dir.is_some()),
            ("broker.nats_ingest", self.broker.nats_ingest.is_some()),
            ("broker.nats_dir", self.broker.nats_dir.is_some()),
            (
                "broker.device_ca_file",
                self.broker.device_ca_file.is_some(),
            ),
        ];
        for (field, set) in external_only {
            if set && self.broker.external_url.is_none() {
                return Err(ConfigError::Invalid {
                    field: field.into(),
                    reason: "only with broker.external_url".into(),
                });
            }
        }
        if let Some(url) = &self.broker.nats_ingest {
            crate::broker::nats_ingest::NatsUrl::parse(url).map_err(|err| {
                ConfigError::Invalid {
                    field: "broker.nats_ingest".into(),
                    reason: err.to_string(),
                }
            })?;
        }
        if self.broker.mosquitto_dir.is_some() && self.broker.nats_dir.is_some() {
            return Err(ConfigError::Invalid {
                field: "broker.nats_dir".into(),
                reason: "one broker keeps the device accounts: not with broker.mosquitto_dir"
                    .into(),
            });
        }
        self.broker.validate_limits()?;
        self.api.validate("api")?;
        self.registry.http().validate("registry")?;
        if self.fleet.rollout_lease_s < 2 {
            return Err(ConfigError::Invalid {
                field: "fleet.rollout_lease_s".into(),
                reason: "must be at least 2 (the driver renews its leases every second)".into(),
            });
        }
        if self.fleet.offline_after_s == 0 {
            return Err(ConfigError::Invalid {
                field: "fleet.offline_after_s".into(),
                reason: "must be at least 1 second".into(),
            });
        }
        if self.fleet.platforms.is_empty() {
            return Err(ConfigError::Invalid {
                field: "fleet.platforms".into(),
                reason: "name at least one platform, e.g. \"linux/arm64\"".into(),
            });
        }
        if let Some(bad) = self
            .fleet
            .platforms
            .iter()
            .find(|p| coracle_images::oci::Platform::parse(p).is_none())
        {
            return Err(ConfigError::Invalid {
                field: "fleet.platforms".into(),
                reason: format!("{bad:?} is not os/arch[/variant]"),
            });
        }
        for registry in &self.registries {
            registry.validate().map_err(|reason| ConfigError::Invalid {
                field: "registries".into(),
                reason,
            })?;
        }
        if let Some(host) = &self.public_host {
            if host.is_empty() || host.contains(['/', ' ', '\t']) {
                return Err(ConfigError::Invalid {
                    field: "public_host".into(),
                    reason: format!("{host:?} is not a host name or address"),
                });
            }
        }
        Ok(())
    }

    /// The host devices should dial: `public_host`, else the TLS listener's IP.
    pub fn device_facing_host(&self) -> String {
        match &self.public_host {
            Some(host) => host.clone(),
            None => self.broker.tls_listen.ip().to_string(),
        }
    }

    /// The names the controller's TLS certificate carries (broker, API and registry share
    /// it): `localhost` and the loopback addresses (the CLI on this host, `api.url`), the
    /// device-facing host (bootstrap files), and each listener's own IP unless it is a
    /// wildcard. In that order, without repeats.
    pub fn tls_names(&self) -> Vec<String> {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        let listeners = [
            self.broker.tls_listen,
            self.api.listen,
            self.registry.listen,
        ];
        let ips = listeners.iter().map(|addr| addr.ip().to_string());
        for name in std::iter::once(self.device_facing_host()).chain(ips) {
            let wildcard = name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified());
            if !wildcard && !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_loopback_defaults() {
        let config: ServeConfig = toml::from_str("").unwrap();
        assert_eq!(config, ServeConfig::default());
        assert_eq!(config.broker.listen, loopback(1883));
        config.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let err = toml::from_str::<ServeConfig>("[api]\nlisten = \"127.0.0.1:0\"\nport = 3\n")
            .unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn port_zero_listeners_parse() {
        let text = "data_dir = \"/tmp/x\"\n[broker]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n";
        let config: ServeConfig = toml::from_str(text).unwrap();
        assert_eq!(config.api.listen.port(), 0);
        assert_eq!(config.registry.listen, loopback(5000));
    }

    #[test]
    fn bad_external_broker_url_names_the_field() {
        let config = ServeConfig {
            broker: BrokerSection {
                external_url: Some("http://x".into()),
                ..BrokerSection::default()
            },
            ..ServeConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("broker.external_url"), "{err}");
    }

    #[test]
    fn nats_ingest_needs_an_external_broker_and_a_nats_url() {
        let with = |external: Option<&str>, nats: &str| ServeConfig {
            broker: BrokerSection {
                external_url: external.map(str::to_string),
                nats_ingest: Some(nats.to_string()),
                ..BrokerSection::default()
            },
            ..ServeConfig::default()
        };
        with(Some("mqtts://127.0.0.1:8883"), "tls://127.0.0.1:4222")
            .validate()
            .unwrap();
        for bad in [
            with(None, "nats://127.0.0.1:4222"),
            with(Some("mqtts://127.0.0.1:8883"), "mqtt://127.0.0.1:4222"),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.to_string().contains("broker.nats_ingest"), "{err}");
        }
    }

    #[test]
    fn device_url_needs_an_external_broker_and_a_valid_url() {
        let with = |external: Option<&str>, device: &str| ServeConfig {
            broker: BrokerSection {
                external_url: external.map(str::to_string),
                device_url: Some(device.to_string()),
                ..BrokerSection::default()
            },
            ..ServeConfig::default()
        };
        with(Some("mqtt://127.0.0.1:1883"), "mqtts://10.0.0.2:8883")
            .validate()
            .unwrap();
        for bad in [
            with(None, "mqtts://10.0.0.2:8883"),
            with(Some("mqtt://127.0.0.1:1883"), "https://10.0.0.2"),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.to_string().contains("broker.device_url"), "{err}");
        }
    }

    #[test]
    fn connection_limits_parse_and_zero_caps_are_refused() {
        let text = "[broker]\nhandshake_timeout_s = 1\nmax_connections = 8\n\
                    [api]\nlisten = \"127.0.0.1:0\"\nmax_connections = 4\nheader_timeout_s = 1\n";
        let config: ServeConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.broker.tls_limits().gate.total, 8);
        assert_eq!(config.api.limits().gate.total, 4);
        assert_eq!(config.api.limits().header_timeout, Duration::from_secs(1));
        assert_eq!(config.registry.max_connections, default_http_connections());
        for (text, field) in [
            (
                "[api]\nlisten = \"127.0.0.1:0\"\nmax_connections = 0\n",
                "api",
            ),
            (
                "[registry]\nlisten = \"127.0.0.1:0\"\nbody_stall_s = 0\n",
                "registry",
            ),
            ("[broker]\nhandshake_timeout_s = 0\n", "broker"),
            ("[broker]\nmax_connections = 20000\n", "broker"),
        ] {
            let config: ServeConfig = toml::from_str(text).unwrap();
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains(field), "{text}: {err}");
        }
    }

    #[test]
    fn registries_and_platforms_parse_and_validate() {
        let text = "[fleet]\nplatforms = [\"linux/arm64\"]\n[[registries]]\nhost = \"registry.lan:5000\"\ninsecure = true\ncredentials_file = \"/etc/coracle/lan.toml\"\n[[registries]]\nhost = \"ghcr.io\"\nca_file = \"/ca.pem\"\n";
        let config: ServeConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.registries.len(), 2);
        assert_eq!(config.fleet.parsed_platforms().len(), 1);
        let bad: ServeConfig = toml::from_str("[fleet]\nplatforms = [\"arm64\"]\n").unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("fleet.platforms"));
        let bad: ServeConfig =
            toml::from_str("[[registries]]\nhost = \"x.lan\"\ninsecure = true\nca_file = \"/c\"\n")
                .unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("x.lan"));
    }

    #[test]
    fn plain_http_off_loopback_is_refused_without_the_tls_setting_naming_it() {
        // (section, listen, tls) → the error names this setting, or `None`: valid.
        let table = [
            ("api", "127.0.0.1:8080", None, None),
            ("api", "[::1]:8080", None, None),
            ("api", "0.0.0.0:8080", None, Some("api.tls")),
            ("api", "10.0.0.2:8080", None, Some("api.tls")),
            ("api", "10.0.0.2:8080", Some(true), None),
            ("api", "10.0.0.2:8080", Some(false), None),
            ("registry", "0.0.0.0:5000", None, Some("registry.tls")),
            ("registry", "[::]:5000", None, Some("registry.tls")),
            ("registry", "0.0.0.0:5000", Some(true), None),
            ("registry", "0.0.0.0:5000", Some(false), None),
            ("registry", "127.0.0.1:5000", Some(true), None),
        ];
        for (section, listen, tls, refused) in table {
            let tls_line = tls.map(|t| format!("tls = {t}\n")).unwrap_or_default();
            let text = format!("[{section}]\nlisten = \"{listen}\"\n{tls_line}");
            let config: ServeConfig = toml::from_str(&text).unwrap();
            match (config.validate(), refused) {
                (Ok(()), None) => {}
                (Err(err), Some(setting)) => {
                    let message = err.to_string();
                    assert!(message.contains(setting), "{text}: {message}");
                    assert!(message.contains(listen), "{text}: {message}");
                }
                (result, _) => panic!("{text}: {result:?}, expected refusal: {refused:?}"),
            }
        }
    }

    #[test]
    fn tls_is_served_only_when_set_and_plain_off_loopback_is_flagged() {
        let config = ServeConfig::default();
        assert!(!config.api.serves_tls() && !config.registry.http().serves_tls());
        let text = "[api]\nlisten = \"0.0.0.0:8080\"\ntls = false\n\
                    [registry]\nlisten = \"127.0.0.1:5000\"\ntls = true\n";
        let config: ServeConfig = toml::from_str(text).unwrap();
        assert!(!config.api.serves_tls() && config.api.plain_off_loopback());
        let registry = config.registry.http();
        assert!(registry.serves_tls() && !registry.plain_off_loopback());
    }

    #[test]
    fn the_certificate_names_cover_loopback_the_public_host_and_listener_ips() {
        let text = "public_host = \"controller.lan\"\n\
                    [broker]\ntls_listen = \"0.0.0.0:8883\"\n\
                    [api]\nlisten = \"127.0.0.1:8080\"\n\
                    [registry]\nlisten = \"10.0.0.2:5000\"\ntls = true\n";
        let config: ServeConfig = toml::from_str(text).unwrap();
        assert_eq!(
            config.tls_names(),
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "controller.lan",
                "10.0.0.2"
            ]
        );
        // Without a public host, the TLS listener's IP is the device-facing one; a
        // wildcard names nothing.
        let text = "[broker]\ntls_listen = \"0.0.0.0:8883\"\n";
        let config: ServeConfig = toml::from_str(text).unwrap();
        assert_eq!(config.tls_names(), ["localhost", "127.0.0.1", "::1"]);
    }

    #[test]
    fn load_names_the_missing_file() {
        let err = ServeConfig::load(Path::new("/nonexistent/coracle.toml")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/coracle.toml"),
            "{err}"
        );
    }
}
