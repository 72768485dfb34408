//! Direct registries (`[[registries]]` with `direct = true`): devices pull from them
//! themselves (a LAN registry on a factory floor), so the controller only pins the digest —
//! it reads the manifest through the same upstream client, stores nothing — and gives each
//! device a `RegistryAccess` with the pull credential sealed to that device's reported
//! X25519 key (`coracle_proto::sealed`). The broker and other devices see ciphertext only.

use std::collections::BTreeSet;

use coracle_proto::{DeviceId, ImageRef, RegistryAccess, ServiceSpec};

use crate::device_seal::{seal_to_device, DeviceSealError};

use super::client::UpstreamClient;
use super::endpoint::Endpoint;
use super::mirror::Mirror;
use super::reference::UpstreamRef;
use super::UpstreamError;

/// Why a device cannot be given access to a direct registry. Never carries the credential.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("device {device} has not reported its sealing key yet, so the pull credential of registry {host} cannot be sealed for it; deploy again once the device is online")]
    NoSealingKey { device: DeviceId, host: String },
    #[error("seal the pull credential of registry {host}")]
    Seal {
        host: String,
        #[source]
        source: DeviceSealError,
    },
    #[error("resolve registry {host}")]
    Endpoint {
        host: String,
        #[source]
        source: Box<UpstreamError>,
    },
}

impl Mirror {
    /// Whether devices pull `host`'s images directly.
    pub fn is_direct(&self, host: &str) -> bool {
        self.settings()
            .registries
            .iter()
            .any(|s| s.direct && s.host.eq_ignore_ascii_case(host))
    }

    /// Pins `image` on a direct registry to its manifest digest (an index's digest for a
    /// multi-arch image) without storing anything in the controller's registry.
    pub async fn pin_direct(&self, image: &UpstreamRef) -> Result<ImageRef, UpstreamError> {
        let settings = self.settings().clone();
        let job = image.clone();
        let top = tokio::task::spawn_blocking(move || {
            let endpoint = Endpoint::resolve(&job.host, &settings.registries, &settings.logins)?;
            UpstreamClient::new(endpoint, &job.repository)?.manifest(&job.reference)
        })
        .await
        .map_err(|source| UpstreamError::Task {
            image: image.to_string(),
            source,
        })??;
        let digest = top
            .digest
            .as_str()
            .parse()
            .map_err(|_| UpstreamError::DigestMismatch {
                host: image.host.clone(),
                repository: image.repository.clone(),
                what: "manifest",
                expected: "a sha256 digest".into(),
                actual: top.digest.as_str().into(),
            })?;
        tracing::info!(image = %image, digest = top.digest.as_str(), "direct image pinned");
        Ok(ImageRef {
            registry: image.host.clone(),
            repository: image.repository.clone(),
            digest,
        })
    }

    /// The direct registries `services` pull from (hosts of images pinned on them).
    pub fn direct_hosts(&self, services: &[ServiceSpec]) -> BTreeSet<String> {
        services
            .iter()
            .map(|s| &s.image.registry)
            .filter(|host| !host.is_empty() && self.is_direct(host))
            .cloned()
            .collect()
    }

    /// `device`'s access to the direct registries `services` pull from (none for an app of
    /// mirrored or local images), credentials sealed to `sealing_key` as the device reported
    /// it. Used by a deploy and by each rollout send, so every device gets its own sealing.
    pub fn access_for(
        &self,
        device: &DeviceId,
        sealing_key: &str,
        services: &[ServiceSpec],
    ) -> Result<Vec<RegistryAccess>, DirectError> {
        let hosts = self.direct_hosts(services);
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        self.registry_access(device, sealing_key, &hosts)
    }

    /// The `RegistryAccess` of each direct registry in `hosts` for `device`, its credential
    /// (if the registry has one) sealed to `sealing_key` (hex, as the device reported it).
    pub fn registry_access(
        &self,
        device: &DeviceId,
        sealing_key: &str,
        hosts: &BTreeSet<String>,
    ) -> Result<Vec<RegistryAccess>, DirectError> {
        let settings = self.settings();
        let mut out = Vec::new();
        for host in hosts {
            let endpoint = Endpoint::resolve(host, &settings.registries, &settings.logins)
                .map_err(|source| DirectError::Endpoint {
                    host: host.clone(),
                    source: Box::new(source),
                })?;
            let sealed_credentials = match &endpoint.credentials {
                None => None,
                Some(credentials) => {
                    if sealing_key.is_empty() {
                        return Err(DirectError::NoSealingKey {
                            device: device.clone(),
                            host: host.clone(),
                        });
                    }
                    let plain = format!("{}:{}", credentials.username, credentials.password);
                    let boxed = seal_to_device(sealing_key, device, plain.as_bytes()).map_err(
                        |source| DirectError::Seal {
                            host: host.clone(),
                            source,
                        },
                    )?;
                    Some(boxed)
                }
            };
            out.push(RegistryAccess {
                host: host.clone(),
                url: endpoint.base_url,
                ca_pem: endpoint.ca.map(|(_, pem)| pem),
                sealed_credentials,
            });
        }
        Ok(out)
    }
}
