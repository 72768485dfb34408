//! `GET /api/v1/images`: the registry's repositories, their tags with manifest digests,
//! sizes and layers, and for each tag how many bytes of layers are new compared with the
//! previous tag (what a device holding the previous version still has to fetch before any
//! delta encoding). Read from the registry's public methods; nothing here writes.

use std::collections::{BTreeSet, HashMap};

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::AppState;
use coracle_images::oci::{Descriptor, Index, Manifest};

use crate::registry::{BlobDigest, LayerDelta, Registry};

/// One layer of an image manifest.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// One platform's image of a multi-platform tag (an OCI index or Docker manifest list).
#[derive(Debug, Clone, Serialize)]
pub struct PlatformInfo {
    /// `os/architecture[/variant]` as the index says, or `unknown`.
    pub platform: String,
    pub digest: String,
    /// Its manifest + config + layers, as stored.
    pub size: u64,
    pub layers: Vec<LayerInfo>,
    /// Set when its manifest could not be read.
    pub problem: Option<String>,
}

/// One tag of a repository.
#[derive(Debug, Clone, Serialize)]
pub struct TagInfo {
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// Manifest + config + layers, as stored (compressed); for an index, the index and
    /// every platform's image.
    pub size: u64,
    /// The layers of a single-platform image (empty for an index: see `platforms`).
    pub layers: Vec<LayerInfo>,
    /// The images of an index, one per platform (empty for a single-platform image).
    pub platforms: Vec<PlatformInfo>,
    /// The tag this one is compared with (the previous in version order).
    pub previous: Option<String>,
    /// Bytes of layers this tag has that `previous` does not.
    pub new_bytes: Option<u64>,
    /// Those layers with the delta a device holding `previous` gets for each.
    pub deltas: Vec<LayerDelta>,
    /// What a device holding `previous` downloads: the delta where one is ready, else the
    /// full layer; `None` while a delta is queued or computing.
    pub update_bytes: Option<u64>,
    /// Set when the manifest could not be read (named, never fatal for the listing).
    pub problem: Option<String>,
}

/// One repository.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryInfo {
    pub name: String,
    pub tags: Vec<TagInfo>,
}

/// Finds the tag that names a manifest digest, reading each repository's tags once.
#[derive(Debug)]
pub struct TagIndex<'a> {
    registry: &'a Registry,
    by_repo: HashMap<String, HashMap<String, String>>,
}

impl<'a> TagIndex<'a> {
    pub fn new(registry: &'a Registry) -> Self {
        Self {
            registry,
            by_repo: HashMap::new(),
        }
    }

    /// A tag of `repository` pointing at `digest` (`sha256:…`), the highest version if several.
    pub fn tag_of(&mut self, repository: &str, digest: &str) -> Option<String> {
        let registry = self.registry;
        let tags = self
            .by_repo
            .entry(repository.to_string())
            .or_insert_with(|| {
                let mut tags: Vec<String> = registry.tags(repository).unwrap_or_default();
                tags.sort_by(|a, b| version_order(a, b));
                tags.into_iter()
                    .filter_map(|tag| {
                        let (d, _) = registry.resolve(repository, &tag).ok()?;
                        Some((d.as_str().to_string(), tag))
                    })
                    .collect()
            });
        tags.get(digest).cloned()
    }
}

pub use crate::registry::version_order;

/// A stored manifest, read with the image library's types.
enum Stored {
    Image(Manifest),
    Index(Index),
}

fn read_stored(registry: &Registry, digest: &BlobDigest) -> Result<Stored, String> {
    let path = registry.blobs.path(digest);
    let bytes = std::fs::read(&path).map_err(|err| format!("read {}: {err}", path.display()))?;
    // An index has `manifests`; an image manifest `config` and `layers` instead.
    if let Ok(index) = Index::parse(&bytes) {
        return Ok(Stored::Index(index));
    }
    Manifest::parse(&bytes)
        .map(Stored::Image)
        .map_err(|err| crate::api::error::error_chain(&err))
}

fn layer_info(descriptor: &Descriptor) -> LayerInfo {
    LayerInfo {
        digest: descriptor.digest.to_string(),
        size: descriptor.size,
        media_type: descriptor.media_type.clone(),
    }
}

/// The layers of an image manifest and its size with them (manifest, config, layers).
fn image_of(
    registry: &Registry,
    digest: &BlobDigest,
    manifest: &Manifest,
) -> (u64, Vec<LayerInfo>) {
    let layers: Vec<LayerInfo> = manifest.layers.iter().map(layer_info).collect();
    let size = registry.blobs.size(digest).unwrap_or(0)
        + manifest.config.size
        + layers.iter().map(|l| l.size).sum::<u64>();
    (size, layers)
}

/// Each platform's image an index names.
fn platforms_of(registry: &Registry, index: &Index) -> Vec<PlatformInfo> {
    index
        .manifests
        .iter()
        .map(|entry| {
            let mut info = PlatformInfo {
                platform: entry
                    .platform
                    .as_ref()
                    .map_or_else(|| "unknown".to_string(), ToString::to_string),
                digest: entry.digest.to_string(),
                size: 0,
                layers: Vec::new(),
                problem: None,
            };
            let digest = BlobDigest::from(entry.digest);
            match read_stored(registry, &digest) {
                Ok(Stored::Image(manifest)) => {
                    (info.size, info.layers) = image_of(registry, &digest, &manifest)
                }
                Ok(Stored::Index(_)) => info.problem = Some("an index inside an index".into()),
                Err(problem) => info.problem = Some(problem),
            }
            info
        })
        .collect()
}

/// What the registry holds under `repository:tag` (the listing's entry for one tag).
pub fn tag_info(registry: &Registry, repository: &str, tag: &str) -> TagInfo {
    let mut info = TagInfo {
        tag: tag.to_string(),
        digest: String::new(),
        media_type: String::new(),
        size: 0,
        layers: Vec::new(),
        platforms: Vec::new(),
        previous: None,
        new_bytes: None,
        deltas: Vec::new(),
        update_bytes: None,
        problem: None,
    };
    let (digest, media_type) = match registry.resolve(repository, tag) {
        Ok(found) => found,
        Err(err) => {
            info.problem = Some(err.to_string());
            return info;
        }
    };
    info.digest = digest.as_str().to_string();
    info.media_type = media_type;
    match read_stored(registry, &digest) {
        Ok(Stored::Index(index)) => {
            info.platforms = platforms_of(registry, &index);
            info.size = registry.blobs.size(&digest).unwrap_or(0)
                + info.platforms.iter().map(|p| p.size).sum::<u64>();
        }
        Ok(Stored::Image(manifest)) => {
            (info.size, info.layers) = image_of(registry, &digest, &manifest)
        }
        Err(problem) => info.problem = Some(problem),
    }
    info
}

/// Fills `previous` and `new_bytes` along the version order.
fn compare_with_previous(tags: &mut [TagInfo]) {
    for i in 1..tags.len() {
        let (before, after) = tags.split_at_mut(i);
        let previous = &before[i - 1];
        let held: BTreeSet<&str> = previous.layers.iter().map(|l| l.digest.as_str()).collect();
        let current = &mut after[0];
        current.previous = Some(previous.tag.clone());
        current.new_bytes = Some(
            current
                .layers
                .iter()
                .filter(|l| !held.contains(l.digest.as_str()))
                .map(|l| l.size)
                .sum(),
        );
    }
}

/// Delta bytes where a delta is ready, full bytes where none pays or none can be made;
/// unknown while any is still queued or computing.
fn update_bytes(deltas: &[LayerDelta]) -> Option<u64> {
    deltas.iter().try_fold(0u64, |sum, d| {
        let bytes = match d.state {
            "ready" => d.delta_bytes?,
            "queued" | "computing" => return None,
            _ => d.full_bytes,
        };
        Some(sum + bytes)
    })
}

/// Body of `POST /images/deltas/plan`.
#[derive(Debug, serde::Deserialize)]
pub struct PlanRequest {
    pub repository: String,
}

/// `POST /images/deltas/plan`: asks the background workers to plan the repository's deltas
/// now (sent by `coracle image import`, which writes the registry's files directly).
pub async fn plan_deltas(
    State(state): State<AppState>,
    Json(request): Json<PlanRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    crate::registry::check_repository(&request.repository).map_err(|err| ApiError::BadRequest {
        message: err.to_string(),
    })?;
    state.registry.deltas().plan(&request.repository);
    Ok(Json(serde_json::json!({ "planned": request.repository })))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<RepositoryInfo>>, ApiError> {
    let registry = state.registry.clone();
    let listing = tokio::task::spawn_blocking(move || {
        let names = registry.repositories().map_err(|err| err.to_string())?;
        Ok::<_, String>(
            names
                .into_iter()
                .map(|name| {
                    let mut tags: Vec<String> = registry.tags(&name).unwrap_or_default();
                    tags.sort_by(|a, b| version_order(a, b));
                    let mut tags: Vec<TagInfo> =
                        tags.iter().map(|t| tag_info(&registry, &name, t)).collect();
                    compare_with_previous(&mut tags);
                    for tag in &mut tags {
                        if let Some(previous) = &tag.previous {
                            tag.deltas = registry.layer_deltas(&name, &tag.tag, previous);
                            tag.update_bytes = update_bytes(&tag.deltas);
                        }
                    }
                    RepositoryInfo { name, tags }
                })
                .collect(),
        )
    })
    .await
    .map_err(|err| ApiError::Internal {
        what: format!("image listing stopped: {err}"),
    })?
    .map_err(|err| ApiError::Internal {
        what: format!("cannot list the registry: {err}"),
    })?;
    Ok(Json(listing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_sort_as_versions() {
        let mut tags = vec!["1.10", "1.9", "latest", "1.2", "2"];
        tags.sort_by(|a, b| version_order(a, b));
        assert_eq!(tags, ["1.2", "1.9", "1.10", "2", "latest"]);
    }

    #[test]
    fn new_bytes_count_layers_the_previous_tag_lacks() {
        let layer = |d: &str, size| LayerInfo {
            digest: d.into(),
            size,
            media_type: String::new(),
        };
        let tag = |t: &str, layers| TagInfo {
            tag: t.into(),
            digest: String::new(),
            media_type: String::new(),
            size: 0,
            layers,
            platforms: Vec::new(),
            previous: None,
            new_bytes: None,
            deltas: Vec::new(),
            update_bytes: None,
            problem: None,
        };
        let mut tags = vec![
            tag("1", vec![layer("a", 100), layer("b", 10)]),
            tag("2", vec![layer("a", 100), layer("c", 30)]),
        ];
        compare_with_previous(&mut tags);
        assert_eq!(tags[0].new_bytes, None);
        assert_eq!(tags[1].previous.as_deref(), Some("1"));
        assert_eq!(tags[1].new_bytes, Some(30));
    }
}
