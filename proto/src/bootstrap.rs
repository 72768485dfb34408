//! `Bootstrap`: the one file `coracle device add` writes and the agent reads at enrolment.
//! It carries everything a device needs to reach and trust its controller. Serialized as
//! TOML by the binaries; the type lives here so both sides agree on it.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;
use crate::VerifyingKey;

/// A device's enrolment bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    pub device: DeviceId,
    /// `mqtts://host:port` (TLS, checked against `ca_pem`) or `mqtt://host:port`.
    pub broker_url: String,
    /// PEM of the CA that signed the broker's certificate (and the client certificate).
    pub ca_pem: String,
    pub auth: BrokerAuth,
    /// The controller's ed25519 deployment public key, 64 hex characters; pinned by the
    /// device: only desired states signed by it are applied.
    pub deployment_key: String,
    /// Base URL of the controller's OCI registry, e.g. `https://10.0.0.2:8443`.
    pub registry_url: String,
    /// Bearer token for the registry, when it requires one.
    pub registry_token: Option<String>,
}

/// How the device proves its identity to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BrokerAuth {
    /// MQTT username (the device id) and password.
    Password { username: String, password: String },
    /// Mutual TLS with a client certificate whose CN is the device id.
    ClientCert { cert_pem: String, key_pem: String },
}

/// Why a deployment key in a bootstrap file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeploymentKeyError {
    #[error("deployment key must be 64 hex characters, got {len} characters")]
    Length { len: usize },
    #[error("deployment key has a non-hex character")]
    Hex,
    #[error("deployment key is not a valid ed25519 public key")]
    Curve,
}

/// Lowercase hex of a public key, as written into bootstrap files.
pub fn deployment_key_hex(key: &VerifyingKey) -> String {
    key.as_bytes().iter().fold(String::new(), |mut out, b| {
        out.push_str(&alloc::format!("{b:02x}"));
        out
    })
}

impl Bootstrap {
    /// Parses the pinned deployment key.
    pub fn deployment_key(&self) -> Result<VerifyingKey, DeploymentKeyError> {
        parse_deployment_key(&self.deployment_key)
    }
}

/// Parses 64 hex characters into an ed25519 public key.
pub fn parse_deployment_key(text: &str) -> Result<VerifyingKey, DeploymentKeyError> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(DeploymentKeyError::Length {
            len: text.chars().count(),
        });
    }
    let mut bytes = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let pair = core::str::from_utf8(pair).map_err(|_| DeploymentKeyError::Hex)?;
        bytes[i] = u8::from_str_radix(pair, 16).map_err(|_| DeploymentKeyError::Hex)?;
    }
    VerifyingKey::from_bytes(&bytes).map_err(|_| DeploymentKeyError::Curve)
}

impl core::fmt::Display for BrokerAuth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BrokerAuth::Password { username, .. } => write!(f, "password for {username}"),
            BrokerAuth::ClientCert { .. } => f.write_str("client certificate"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    #[test]
    fn deployment_key_round_trips_through_hex() {
        let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let hex = deployment_key_hex(&key);
        assert_eq!(hex.len(), 64);
        assert_eq!(parse_deployment_key(&hex).unwrap(), key);
    }

    #[test]
    fn bad_deployment_keys_are_named() {
        assert_eq!(
            parse_deployment_key("abc"),
            Err(DeploymentKeyError::Length { len: 3 })
        );
        assert_eq!(
            parse_deployment_key(&"zz".repeat(32)),
            Err(DeploymentKeyError::Hex)
        );
    }
}
