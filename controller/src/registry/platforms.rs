//! The platforms an image in the registry offers: the `platform` of each entry of an index
//! (attestation entries, `unknown/unknown`, left out), or the os/architecture/variant of a
//! single manifest's config.

use coracle_images::oci::{ImageConfig, Platform};

use super::{BlobDigest, Registry, RegistryError};

impl Registry {
    /// Platforms of the manifest `reference` (tag or digest) of `repository`; `None` when the
    /// registry does not hold it (an image pinned elsewhere).
    pub fn image_platforms(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Vec<Platform>>, RegistryError> {
        let digest = match self.resolve(repository, reference) {
            Ok((digest, _)) => digest,
            Err(RegistryError::ManifestUnknown { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let manifest = self.read_json(&digest)?;
        if let Some(entries) = manifest.get("manifests").and_then(|m| m.as_array()) {
            let platforms = entries
                .iter()
                .filter_map(|entry| entry.get("platform"))
                .filter_map(|p| serde_json::from_value::<Platform>(p.clone()).ok())
                .filter(|p| p.os != "unknown" && p.architecture != "unknown")
                .collect();
            return Ok(Some(platforms));
        }
        let Some(config) = manifest.pointer("/config/digest").and_then(|d| d.as_str()) else {
            return Ok(Some(Vec::new()));
        };
        let config = BlobDigest::parse(config)?;
        let path = self.blobs.path(&config);
        let bytes = std::fs::read(&path).map_err(|source| RegistryError::Io {
            step: "read image config",
            path,
            source,
        })?;
        let config = ImageConfig::parse(&bytes).map_err(|err| RegistryError::ManifestInvalid {
            reason: format!("image config {}: {err}", config.as_str()),
        })?;
        if config.os.is_empty() || config.architecture.is_empty() {
            return Ok(Some(Vec::new()));
        }
        Ok(Some(vec![Platform {
            architecture: config.architecture,
            os: config.os,
            variant: config.variant,
        }]))
    }

    fn read_json(&self, digest: &BlobDigest) -> Result<serde_json::Value, RegistryError> {
        let path = self.blobs.path(digest);
        let bytes = std::fs::read(&path).map_err(|source| RegistryError::Io {
            step: "read manifest",
            path,
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|err| RegistryError::ManifestInvalid {
            reason: format!("manifest {}: {err}", digest.as_str()),
        })
    }
}
