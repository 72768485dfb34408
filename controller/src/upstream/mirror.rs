//! `Mirror`: pulls an image from an upstream registry into the controller's registry and
//! pins it. The download (blocking HTTP) runs on a blocking thread; blobs enter the store
//! only once verified; manifests go in last, through the registry's push path
//! (`put_manifest`), children before the index, so a tag never names something absent and
//! a new tag queues background deltas exactly as a push does.

use std::sync::Arc;

use coracle_images::oci::{Descriptor, Index, Manifest, Platform};
use coracle_proto::ImageRef;

use super::client::{Document, UpstreamClient};
use super::credentials::Logins;
use super::endpoint::{Endpoint, RegistrySection};
use super::reference::{Reference, UpstreamRef};
use super::UpstreamError;
use crate::registry::{BlobDigest, BlobStore, Registry};

/// What the mirror needs from the serve config.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    pub registries: Vec<RegistrySection>,
    pub logins: Logins,
    /// The platforms the fleet runs: the index entries mirrored.
    pub platforms: Vec<Platform>,
}

/// Mirrors upstream images into the controller's registry; cheap to clone.
#[derive(Debug, Clone)]
pub struct Mirror {
    registry: Registry,
    settings: Arc<MirrorSettings>,
}

/// Manifests downloaded for one image: the image's own, and an index's chosen entries.
#[derive(Debug)]
struct Fetched {
    top: Document,
    children: Vec<Document>,
}

impl Mirror {
    pub fn new(registry: Registry, settings: MirrorSettings) -> Self {
        Self {
            registry,
            settings: Arc::new(settings),
        }
    }

    /// The serve config's registries, logins and platforms.
    pub(super) fn settings(&self) -> &Arc<MirrorSettings> {
        &self.settings
    }

    /// Pulls `image` (what the fleet's platforms need of it) into the controller's registry
    /// under [`UpstreamRef::mirror_repository`] and returns the reference devices pull:
    /// the controller's registry, the upstream digest (an index's digest for multi-arch).
    pub async fn mirror(&self, image: &UpstreamRef) -> Result<ImageRef, UpstreamError> {
        let settings = self.settings.clone();
        let blobs = self.registry.blobs.clone();
        let job = image.clone();
        let fetched = tokio::task::spawn_blocking(move || fetch(&settings, &job, &blobs))
            .await
            .map_err(|source| UpstreamError::Task {
                image: image.to_string(),
                source,
            })??;
        let repository = image.mirror_repository();
        let store = |doc: &Document, reference: String| {
            let registry = self.registry.clone();
            let repository = repository.clone();
            let bytes = doc.bytes.clone();
            let media_type = doc.media_type.clone();
            async move {
                registry
                    .put_mirrored_manifest(&repository, &reference, &media_type, &bytes)
                    .await
            }
        };
        let stored = |doc: &Document| {
            let image = image.to_string();
            let digest = doc.digest.as_str().to_string();
            move |source| UpstreamError::StoreManifest {
                image,
                digest,
                source,
            }
        };
        for child in &fetched.children {
            store(child, child.digest.as_str().to_string())
                .await
                .map_err(stored(child))?;
        }
        store(&fetched.top, image.reference.to_string())
            .await
            .map_err(stored(&fetched.top))?;
        tracing::info!(
            image = %image,
            repository = %repository,
            digest = fetched.top.digest.as_str(),
            platforms = fetched.children.len(),
            "image mirrored"
        );
        let digest =
            fetched
                .top
                .digest
                .as_str()
                .parse()
                .map_err(|_| UpstreamError::DigestMismatch {
                    host: image.host.clone(),
                    repository: image.repository.clone(),
                    what: "manifest",
                    expected: "a sha256 digest".into(),
                    actual: fetched.top.digest.as_str().into(),
                })?;
        Ok(ImageRef {
            registry: String::new(),
            repository,
            digest,
        })
    }
}

/// Downloads the manifest(s) of `image` and every blob they name that the store lacks.
/// Blocking.
fn fetch(
    settings: &MirrorSettings,
    image: &UpstreamRef,
    blobs: &BlobStore,
) -> Result<Fetched, UpstreamError> {
    let endpoint = Endpoint::resolve(&image.host, &settings.registries, &settings.logins)?;
    let mut client = UpstreamClient::new(endpoint, &image.repository)?;
    let top = client.manifest(&image.reference)?;
    let invalid = |reference: String| {
        move |source| UpstreamError::ManifestInvalid {
            host: image.host.clone(),
            repository: image.repository.clone(),
            reference,
            source,
        }
    };
    if !is_index(&top) {
        fetch_blobs(&mut client, image, &top, blobs)?;
        return Ok(Fetched {
            top,
            children: Vec::new(),
        });
    }
    let index = Index::parse(&top.bytes).map_err(invalid(image.reference.to_string()))?;
    let mut children = Vec::new();
    for entry in select_platforms(&index, &settings.platforms, image)? {
        let digest = BlobDigest::parse(&entry.digest.to_string()).map_err(|_| {
            UpstreamError::DigestMismatch {
                host: image.host.clone(),
                repository: image.repository.clone(),
                what: "index entry",
                expected: "a sha256 digest".into(),
                actual: entry.digest.to_string(),
            }
        })?;
        let child = client.manifest(&Reference::Digest(digest))?;
        fetch_blobs(&mut client, image, &child, blobs)?;
        children.push(child);
    }
    Ok(Fetched { top, children })
}

pub(super) fn is_index(doc: &Document) -> bool {
    doc.media_type.contains("index") || doc.media_type.contains("manifest.list")
}

/// Downloads the config and layers of one image manifest, skipping blobs already held
/// (layers shared by platforms or versions are pulled once).
fn fetch_blobs(
    client: &mut UpstreamClient,
    image: &UpstreamRef,
    doc: &Document,
    blobs: &BlobStore,
) -> Result<(), UpstreamError> {
    let manifest =
        Manifest::parse(&doc.bytes).map_err(|source| UpstreamError::ManifestInvalid {
            host: image.host.clone(),
            repository: image.repository.clone(),
            reference: doc.digest.as_str().to_string(),
            source,
        })?;
    for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let text = descriptor.digest.to_string();
        let stored = |source| UpstreamError::StoreBlob {
            image: image.to_string(),
            digest: text.clone(),
            source,
        };
        let digest = BlobDigest::parse(&text).map_err(stored)?;
        if blobs.size(&digest) == Some(descriptor.size) {
            continue;
        }
        let mut reader = client.blob(&digest)?.into_reader();
        blobs
            .import_blocking(&digest, descriptor.size, &mut reader)
            .map_err(stored)?;
    }
    Ok(())
}

/// The index entries the fleet needs: one per wanted platform that the index offers,
/// without repeats. An index offering none of them is refused, naming both lists.
fn select_platforms<'a>(
    index: &'a Index,
    wanted: &[Platform],
    image: &UpstreamRef,
) -> Result<Vec<&'a Descriptor>, UpstreamError> {
    let mut chosen: Vec<&Descriptor> = Vec::new();
    for platform in wanted {
        if let Ok(entry) = index.select(platform) {
            if !chosen.iter().any(|c| c.digest == entry.digest) {
                chosen.push(entry);
            }
        }
    }
    if chosen.is_empty() {
        return Err(UpstreamError::NoPlatform {
            image: image.to_string(),
            wanted: wanted.iter().map(Platform::to_string).collect(),
            offered: index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
                .collect(),
        });
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[&str]) -> Index {
        let manifests = platforms
            .iter()
            .enumerate()
            .map(|(i, p)| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{}", format!("{i:02x}").repeat(32)),
                    "size": 100,
                    "platform": Platform::parse(p).unwrap(),
                })
            })
            .collect::<Vec<_>>();
        let json = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
        Index::parse(json.to_string().as_bytes()).unwrap()
    }

    fn platforms(list: &[&str]) -> Vec<Platform> {
        list.iter().map(|p| Platform::parse(p).unwrap()).collect()
    }

    #[test]
    fn index_entries_are_chosen_for_the_fleets_platforms() {
        let image = UpstreamRef::parse("ghcr.io/org/app:2").unwrap();
        let fleet = platforms(&["linux/arm64", "linux/arm/v7", "linux/amd64"]);
        let cases: [(&[&str], usize); 4] = [
            (
                &["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x"],
                3,
            ),
            (&["linux/amd64", "linux/arm64/v8", "unknown/unknown"], 2),
            (&["linux/arm/v6", "linux/arm/v7"], 1),
            (&["linux/amd64", "linux/amd64"], 1),
        ];
        for (offered, count) in cases {
            let index = index(offered);
            let chosen = select_platforms(&index, &fleet, &image).unwrap();
            assert_eq!(chosen.len(), count, "{offered:?}");
        }
        let err = select_platforms(&index(&["linux/s390x"]), &fleet, &image).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("linux/s390x") && text.contains("linux/arm/v7"),
            "{text}"
        );
        assert!(text.contains("ghcr.io/org/app:2"), "{text}");
    }
}
