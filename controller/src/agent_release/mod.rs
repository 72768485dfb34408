//! Agent releases: builds of `coracle-agent` kept in the controller's own registry
//! (repository `coracle-agent`, tag = version, an index with one manifest per platform; see
//! `artifact`), so devices pull them with their pull tokens, deltas included, like any
//! image. `AgentReleases::publish` checks a build before storing it: an ELF program whose
//! machine matches the platform, and a version that agrees with the stamp in the binary.
//! Rollouts of a release go through `rollout/` (an agent rollout sends `AgentUpdate`s).

pub mod artifact;

use coracle_images::oci::Platform;
use coracle_proto::{AgentRelease, Digest, ImageRef, Signed, SigningKey, AGENT_REPOSITORY};
use serde::{Deserialize, Serialize};

use crate::registry::{check_tag, BlobDigest, Registry, RegistryError};

/// One platform's build of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    pub platform: String,
    /// `coracle-agent@<manifest digest>`: what devices pull.
    pub image: String,
    /// `sha256:` of the binary file.
    pub binary: String,
    pub size: u64,
    /// Hex of the encoded `Signed<AgentRelease>`: (version, platform, binary) signed by the
    /// deployment key when the release was stored (empty for none).
    #[serde(default)]
    pub signature: String,
    /// The short id of the key that made `signature` (empty for none).
    #[serde(default)]
    pub signed_by: String,
}

/// The key id of a release signature (hex of an encoded `Signed<AgentRelease>`), if it is one.
fn signer_of(signature: &str) -> String {
    hex::decode(signature)
        .ok()
        .and_then(|bytes| coracle_proto::decode::<Signed<AgentRelease>>(&bytes).ok())
        .map(|signed| signed.key_id.to_string())
        .unwrap_or_default()
}

impl Release {
    /// The image reference devices pull (`image` was built from one).
    pub fn image_ref(&self) -> Result<ImageRef, ReleaseError> {
        self.image.parse().map_err(|_| ReleaseError::Damaged {
            version: self.version.clone(),
            what: format!("image reference {:?}", self.image),
        })
    }

    pub fn binary_digest(&self) -> Result<Digest, ReleaseError> {
        self.binary.parse().map_err(|_| ReleaseError::Damaged {
            version: self.version.clone(),
            what: format!("binary digest {:?}", self.binary),
        })
    }
}

/// Why a build was not released or releases could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("the file is not an ELF program of a known architecture (it starts with {start:?})")]
    NotAProgram { start: String },
    #[error("the file is built for {elf}, not for {given}")]
    WrongArchitecture { elf: String, given: String },
    #[error("platform {given:?} is not os/arch[/variant] (such as linux/arm64)")]
    BadPlatform { given: String },
    #[error("the file is a 32-bit ARM build: give --arch linux/arm/v6 or linux/arm/v7")]
    ArmVariantNeeded,
    #[error("the file carries no version stamp: give --version")]
    VersionMissing,
    #[error("the file says it is version {stamped}, not {given}")]
    VersionMismatch { stamped: String, given: String },
    #[error("version {version:?} cannot be a registry tag (letters, digits, . _ -; at most 128)")]
    BadVersion { version: String },
    #[error("agent release {version} is damaged: {what}")]
    Damaged { version: String, what: String },
    #[error("build the release image")]
    Build(#[source] std::io::Error),
    #[error("store the release in the registry")]
    Registry(#[source] RegistryError),
}

/// The releases in the controller's registry; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentReleases {
    registry: Registry,
}

/// The platform of `binary`, checked against `given` when there is one.
pub fn platform_of(binary: &[u8], given: Option<&str>) -> Result<Platform, ReleaseError> {
    let header = &binary[..binary.len().min(20)];
    let elf = coracle_proto::agent_update::elf_platform(header).ok_or_else(|| {
        ReleaseError::NotAProgram {
            start: String::from_utf8_lossy(&binary[..binary.len().min(8)]).into_owned(),
        }
    })?;
    let Some(given) = given else {
        if elf == "linux/arm" {
            return Err(ReleaseError::ArmVariantNeeded);
        }
        return Platform::parse(elf).ok_or(ReleaseError::BadPlatform { given: elf.into() });
    };
    let platform = Platform::parse(given).ok_or_else(|| ReleaseError::BadPlatform {
        given: given.into(),
    })?;
    if format!("{}/{}", platform.os, platform.architecture) != elf {
        return Err(ReleaseError::WrongArchitecture {
            elf: elf.into(),
            given: given.into(),
        });
    }
    Ok(platform)
}

/// The version of `binary`: its stamp, which `given` must agree with.
pub fn version_of(binary: &[u8], given: Option<&str>) -> Result<String, ReleaseError> {
    let stamped = coracle_proto::find_version_stamp(binary);
    let version = match (stamped, given) {
        (Some(stamped), Some(given)) if stamped != given => {
            return Err(ReleaseError::VersionMismatch {
                stamped: stamped.into(),
                given: given.into(),
            })
        }
        (_, Some(given)) => given.to_string(),
        (Some(stamped), None) => stamped.to_string(),
        (None, None) => return Err(ReleaseError::VersionMissing),
    };
    check_tag(&version).map_err(|_| ReleaseError::BadVersion {
        version: version.clone(),
    })?;
    Ok(version)
}

/// Signs a release with `key` (the deployment key).
pub fn sign_release(release: &AgentRelease, key: &SigningKey) -> Signed<AgentRelease> {
    Signed::sign(release, key)
}

impl AgentReleases {
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// Checks `binary` and stores it as the release `version` for its platform, with the
    /// detached signature `sign` makes of (version, platform, binary digest).
    pub async fn publish(
        &self,
        binary: &[u8],
        version: Option<&str>,
        platform: Option<&str>,
        sign: impl FnOnce(&AgentRelease) -> Signed<AgentRelease>,
    ) -> Result<Release, ReleaseError> {
        let platform = platform_of(binary, platform)?;
        let version = version_of(binary, version)?;
        let image =
            artifact::platform_image(binary, &version, &platform).map_err(ReleaseError::Build)?;
        let signature = hex::encode(coracle_proto::encode(&sign(&AgentRelease {
            version: version.clone(),
            platform: platform.to_string(),
            binary: image.binary,
        })));
        let registry = &self.registry;
        for blob in [&image.layer, &image.config] {
            registry
                .blobs
                .put_bytes(blob)
                .await
                .map_err(ReleaseError::Registry)?;
        }
        let manifest_digest = BlobDigest::of(&image.manifest);
        registry
            .put_manifest(
                AGENT_REPOSITORY,
                manifest_digest.as_str(),
                coracle_images::media_type::OCI_MANIFEST,
                &image.manifest,
            )
            .await
            .map_err(ReleaseError::Registry)?;
        let existing = self.index_bytes(&version)?;
        let index =
            artifact::merge_index(existing.as_deref(), &image, &version, &platform, &signature)
                .map_err(|what| ReleaseError::Damaged {
                    version: version.clone(),
                    what,
                })?;
        registry
            .put_manifest(
                AGENT_REPOSITORY,
                &version,
                coracle_images::media_type::OCI_INDEX,
                &index,
            )
            .await
            .map_err(ReleaseError::Registry)?;
        tracing::info!(%version, %platform, binary = %image.binary, bytes = binary.len(), "agent release stored");
        Ok(Release {
            version,
            platform: platform.to_string(),
            image: format!("{AGENT_REPOSITORY}@{}", manifest_digest.as_str()),
            binary: image.binary.to_string(),
            size: binary.len() as u64,
            signed_by: signer_of(&signature),
            signature,
        })
    }

    fn index_bytes(&self, version: &str) -> Result<Option<Vec<u8>>, ReleaseError> {
        let digest = match self.registry.resolve(AGENT_REPOSITORY, version) {
            Ok((digest, _)) => digest,
            Err(RegistryError::ManifestUnknown { .. }) => return Ok(None),
            Err(err) => return Err(ReleaseError::Registry(err)),
        };
        let path = self.registry.blobs.path(&digest);
        std::fs::read(&path).map(Some).map_err(|source| {
            ReleaseError::Registry(RegistryError::Io {
                step: "read agent release index",
                path,
                source,
            })
        })
    }

    /// Every release, by version then platform.
    pub fn list(&self) -> Result<Vec<Release>, ReleaseError> {
        let tags = match self.registry.tags(AGENT_REPOSITORY) {
            Ok(tags) => tags,
            Err(RegistryError::NameUnknown { .. }) => return Ok(Vec::new()),
            Err(err) => return Err(ReleaseError::Registry(err)),
        };
        let mut out = Vec::new();
        for version in tags {
            let Some(index) = self.index_bytes(&version)? else {
                continue;
            };
            for entry in artifact::index_entries(&index) {
                out.push(Release {
                    version: version.clone(),
                    platform: entry.platform,
                    image: format!("{AGENT_REPOSITORY}@{}", entry.manifest),
                    binary: entry.binary.to_string(),
                    size: entry.size,
                    signed_by: signer_of(&entry.signature),
                    signature: entry.signature,
                });
            }
        }
        out.sort_by(|a, b| {
            crate::registry::version_order(&a.version, &b.version)
                .then_with(|| a.platform.cmp(&b.platform))
        });
        Ok(out)
    }

    /// The build of `version` for `platform`.
    pub fn find(&self, version: &str, platform: &str) -> Result<Option<Release>, ReleaseError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|r| r.version == version && r.platform == platform))
    }

    /// The builds of `version`, one per platform (empty: no such release).
    pub fn of_version(&self, version: &str) -> Result<Vec<Release>, ReleaseError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.version == version)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[18..20].copy_from_slice(&machine.to_le_bytes());
        header
    }

    #[test]
    fn the_platform_comes_from_the_elf_header_and_must_agree_with_arch() {
        assert_eq!(
            platform_of(&elf(183), None).unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            platform_of(&elf(183), Some("linux/arm64"))
                .unwrap()
                .to_string(),
            "linux/arm64"
        );
        let err = platform_of(&elf(62), Some("linux/arm64")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the file is built for linux/amd64, not for linux/arm64"
        );
        assert!(matches!(
            platform_of(&elf(40), None),
            Err(ReleaseError::ArmVariantNeeded)
        ));
        assert_eq!(
            platform_of(&elf(40), Some("linux/arm/v7"))
                .unwrap()
                .to_string(),
            "linux/arm/v7"
        );
        assert!(matches!(
            platform_of(b"#!/bin/sh\nexit 1\n", None),
            Err(ReleaseError::NotAProgram { .. })
        ));
    }

    #[test]
    fn the_version_comes_from_the_stamp_and_must_agree_with_the_flag() {
        let mut binary = elf(62);
        binary.extend_from_slice(coracle_proto::VERSION_STAMP_PREFIX);
        binary.extend_from_slice(b"0.3.0");
        binary.resize(64 + coracle_proto::VERSION_STAMP_LEN, 0);
        assert_eq!(version_of(&binary, None).unwrap(), "0.3.0");
        assert_eq!(version_of(&binary, Some("0.3.0")).unwrap(), "0.3.0");
        let err = version_of(&binary, Some("0.4.0")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the file says it is version 0.3.0, not 0.4.0"
        );
        assert!(matches!(
            version_of(&elf(62), None),
            Err(ReleaseError::VersionMissing)
        ));
        assert_eq!(version_of(&elf(62), Some("1.0")).unwrap(), "1.0");
        assert!(matches!(
            version_of(&elf(62), Some("1.0+build")),
            Err(ReleaseError::BadVersion { .. })
        ));
    }
}
