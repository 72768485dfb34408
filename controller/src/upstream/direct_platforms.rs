//! The platforms an image on a direct registry offers, read from that registry at deploy
//! time (the controller stores nothing of such images), so a device that cannot run it is
//! refused before anything is sent: an index's entries, or a single manifest's config.

use coracle_images::oci::{ImageConfig, Index, Manifest, OciError, Platform};
use coracle_proto::ImageRef;

use super::client::UpstreamClient;
use super::endpoint::Endpoint;
use super::mirror::{is_index, Mirror, MirrorSettings};
use super::reference::Reference;
use super::UpstreamError;
use crate::registry::BlobDigest;

/// An image config is a few KiB; more is not a config.
const CONFIG_LIMIT: u64 = 1 << 20;

impl Mirror {
    /// The platforms `image` (pinned on a direct registry) offers; empty when its config
    /// names none, which no device is refused for.
    pub async fn direct_platforms(&self, image: &ImageRef) -> Result<Vec<Platform>, UpstreamError> {
        let settings = self.settings().clone();
        let job = image.clone();
        tokio::task::spawn_blocking(move || read_platforms(&settings, &job))
            .await
            .map_err(|source| UpstreamError::Task {
                image: image.to_string(),
                source,
            })?
    }
}

fn read_platforms(
    settings: &MirrorSettings,
    image: &ImageRef,
) -> Result<Vec<Platform>, UpstreamError> {
    let endpoint = Endpoint::resolve(&image.registry, &settings.registries, &settings.logins)?;
    let mut client = UpstreamClient::new(endpoint, &image.repository)?;
    let digest = |text: String| {
        BlobDigest::parse(&text).map_err(|_| UpstreamError::DigestMismatch {
            host: image.registry.clone(),
            repository: image.repository.clone(),
            what: "manifest",
            expected: "a sha256 digest".into(),
            actual: text,
        })
    };
    let invalid = |reference: String| {
        move |source: OciError| UpstreamError::ManifestInvalid {
            host: image.registry.clone(),
            repository: image.repository.clone(),
            reference,
            source,
        }
    };
    let top = client.manifest(&Reference::Digest(digest(image.digest.to_string())?))?;
    if is_index(&top) {
        let index = Index::parse(&top.bytes).map_err(invalid(image.digest.to_string()))?;
        return Ok(index
            .manifests
            .into_iter()
            .filter_map(|entry| entry.platform)
            .filter(|p| p.os != "unknown" && p.architecture != "unknown")
            .collect());
    }
    let manifest = Manifest::parse(&top.bytes).map_err(invalid(image.digest.to_string()))?;
    let config_digest = manifest.config.digest.to_string();
    let bytes = client.small_blob("config", &digest(config_digest.clone())?, CONFIG_LIMIT)?;
    let config = ImageConfig::parse(&bytes).map_err(invalid(config_digest))?;
    if config.os.is_empty() || config.architecture.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Platform {
        architecture: config.architecture,
        os: config.os,
        variant: config.variant,
    }])
}
