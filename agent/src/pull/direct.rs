//! Registries a device pulls from directly (`RegistryAccess` in its desired state): the
//! client for one, with the pull credential unsealed by the device's sealing key.

use coracle_proto::{DeviceId, RegistryAccess, SealError};

use super::client::{BasicCredentials, RegistryClient, RegistryEndpoint};
use super::error::PullError;
use crate::sealing_key::SealingKey;

/// Why a direct registry's client could not be made. Never carries the credential.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("open the sealed pull credential of registry {host}")]
    Unseal {
        host: String,
        #[source]
        source: SealError,
    },
    #[error("pull credential of registry {host} is not \"user:password\" text")]
    CredentialShape { host: String },
    #[error("set up the client of registry {host}")]
    Client {
        host: String,
        #[source]
        source: Box<PullError>,
    },
}

/// The client for `access`, its credential opened with `key` for `device`.
pub fn direct_client(
    access: &RegistryAccess,
    key: &SealingKey,
    device: &DeviceId,
) -> Result<RegistryClient, DirectError> {
    let host = || access.host.clone();
    let basic = match &access.sealed_credentials {
        None => None,
        Some(sealed) => {
            let plain = key
                .open(device, sealed)
                .map_err(|source| DirectError::Unseal {
                    host: host(),
                    source,
                })?;
            let text = String::from_utf8(plain)
                .map_err(|_| DirectError::CredentialShape { host: host() })?;
            let (username, password) = text
                .split_once(':')
                .ok_or_else(|| DirectError::CredentialShape { host: host() })?;
            Some(BasicCredentials {
                username: username.to_string(),
                password: password.to_string(),
            })
        }
    };
    let endpoint = RegistryEndpoint {
        base_url: access.url.clone(),
        ca_pem: access.ca_pem.clone().filter(|pem| !pem.trim().is_empty()),
        token: Default::default(),
    };
    RegistryClient::direct(endpoint, basic).map_err(|source| DirectError::Client {
        host: host(),
        source: Box::new(source),
    })
}
