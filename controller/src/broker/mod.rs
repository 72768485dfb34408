//! The MQTT side of the controller: who may connect and touch which topic (`credentials`,
//! `acl`), the embedded broker (`embedded`), and the controller's own client (`client`).
//!
//! Everything outside this module speaks `coracle-proto` types; no `mqtt5` type leaks out.
//! The broker is behind `DeviceAccess`, so an external broker (`--broker URL`) only needs
//! its own way to grant and revoke device credentials: `mosquitto` does it for Mosquitto.

pub mod acl;
pub mod client;
pub mod credentials;
pub mod embedded;
pub mod mosquitto;
pub mod nats_accounts;
pub mod nats_config;
pub mod nats_ingest;
mod nats_wire;
pub mod tls_front;
mod v311_acks;

use std::fmt;

use coracle_proto::DeviceId;

pub use client::{ControllerClient, Inbound, Replicas};
pub use credentials::{password_sha256, Credentials};
pub use embedded::{EmbeddedBroker, EmbeddedBrokerSettings};
pub use mosquitto::MosquittoAccounts;
pub use nats_accounts::NatsAccounts;

/// What the controller needs from whichever broker carries device traffic: to give a
/// device its credentials (at enrolment, the only time the password is known) and to take
/// them away. The embedded broker's table cannot fail; an external broker's files can.
pub trait DeviceAccess: Send + Sync + fmt::Debug {
    fn grant(&self, device: &DeviceId, password: &str) -> Result<(), AccessError>;
    fn revoke(&self, device: &DeviceId) -> Result<(), AccessError>;
    /// Accepts `password` beside the current one while the device switches to it
    /// (`coracle device rotate`). A broker that holds one password per account cannot.
    fn allow_next(&self, device: &DeviceId, _password: &str) -> Result<(), AccessError> {
        Err(AccessError::NoRotation {
            device: device.clone(),
        })
    }
    /// Makes the next password the only one: the old one is refused from now on.
    fn commit_next(&self, device: &DeviceId) -> Result<(), AccessError> {
        Err(AccessError::NoRotation {
            device: device.clone(),
        })
    }
    /// Forgets the next password (the device did not switch).
    fn drop_next(&self, _device: &DeviceId) {}
}

/// Why a device's broker account could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot run mosquitto_passwd on {path} for {device}")]
    RunPasswd {
        device: DeviceId,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mosquitto_passwd on {path} for {device} failed: {stderr}")]
    Passwd {
        device: DeviceId,
        path: std::path::PathBuf,
        stderr: String,
    },
    #[error("cannot read mosquitto's password file {path}")]
    ReadPasswd {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read mosquitto's pid file {path}")]
    ReadPid {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the broker's pid file {path} holds {pid:?}, not a pid")]
    BadPid {
        path: std::path::PathBuf,
        pid: String,
    },
    #[error("cannot run kill to reload mosquitto (pid {pid})")]
    RunReload {
        pid: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reloading mosquitto (pid {pid}) failed: {stderr}")]
    Reload { pid: String, stderr: String },
    #[error("cannot read the NATS accounts in {path}")]
    ReadNatsUsers {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path} to change the NATS accounts")]
    LockNats {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the NATS users file {path} has no controller line (run `coracle broker nats-config`)"
    )]
    NoNatsController { path: std::path::PathBuf },
    #[error("cannot write the NATS accounts file {path}")]
    WriteNatsFile {
        path: std::path::PathBuf,
        #[source]
        source: crate::datadir::DataDirError,
    },
    #[error("cannot hash the NATS password of {device}")]
    HashNats {
        device: DeviceId,
        #[source]
        source: bcrypt::BcryptError,
    },
    #[error("cannot signal the nats-server of {path} to reload")]
    ReloadNats {
        path: std::path::PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the account change did not run: the controller is stopping")]
    Interrupted,
    #[error("cannot rotate the password of {device}: this broker holds one password per device (Mosquitto's password file), so the old one could not stay valid while the device switches; rotation needs the embedded broker")]
    NoRotation { device: DeviceId },
}

impl DeviceAccess for Credentials {
    fn grant(&self, device: &DeviceId, password: &str) -> Result<(), AccessError> {
        Credentials::grant(self, device.clone(), password_sha256(password));
        Ok(())
    }
    fn revoke(&self, device: &DeviceId) -> Result<(), AccessError> {
        Credentials::revoke(self, device);
        Ok(())
    }
    fn allow_next(&self, device: &DeviceId, password: &str) -> Result<(), AccessError> {
        Credentials::allow_next(self, device.clone(), password_sha256(password));
        Ok(())
    }
    fn commit_next(&self, device: &DeviceId) -> Result<(), AccessError> {
        if Credentials::commit_next(self, device) {
            Ok(())
        } else {
            Err(AccessError::NoRotation {
                device: device.clone(),
            })
        }
    }
    fn drop_next(&self, device: &DeviceId) {
        Credentials::drop_next(self, device);
    }
}

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    #[error("broker URL {url:?} must start with mqtt:// or mqtts://")]
    Scheme { url: String },
    #[error("broker URL {url:?} must be scheme://host:port")]
    HostPort { url: String },
}

/// `mqtt://host:port` or `mqtts://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<Self, BrokerUrlError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(BrokerUrlError::Scheme { url: url.into() });
        };
        let host_port = || BrokerUrlError::HostPort { url: url.into() };
        let (host, port) = rest.rsplit_once(':').ok_or_else(host_port)?;
        let port = port.parse().map_err(|_| host_port())?;
        if host.is_empty() || host.contains('/') {
            return Err(host_port());
        }
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_and_print_back() {
        for url in ["mqtt://127.0.0.1:1883", "mqtts://broker.example:8883"] {
            assert_eq!(BrokerUrl::parse(url).unwrap().to_string(), url);
        }
        assert!(BrokerUrl::parse("mqtts://h:8883").unwrap().tls);
    }

    #[test]
    fn bad_broker_urls_are_named() {
        assert!(matches!(
            BrokerUrl::parse("tcp://h:1"),
            Err(BrokerUrlError::Scheme { .. })
        ));
        for bad in ["mqtt://h", "mqtt://:1", "mqtt://h:port", "mqtt://h:99999"] {
            assert!(
                matches!(BrokerUrl::parse(bad), Err(BrokerUrlError::HostPort { .. })),
                "{bad}"
            );
        }
    }
}
