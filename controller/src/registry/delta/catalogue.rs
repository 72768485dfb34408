//! A repository's images as lists of layers, the input of every delta decision. Reading it
//! means parsing every manifest and config of the repository, so it is cached per
//! repository: until this registry's push or delete forgets it, or the repository's
//! `manifests/` directory changes under another process (`coracle image import`): its
//! modification time or its number of entries (two changes within one clock tick leave the
//! time alone).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use coracle_images::oci::{ImageConfig, Manifest};
use coracle_images::Digest;

use super::pair_key;
use super::{Deltas, RegistryError};
use crate::registry::BlobStore;

/// A layer of an image in the repository: compressed blob and uncompressed diff_id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LayerRef {
    pub blob: Digest,
    pub diff_id: Digest,
}

/// Every image manifest of a repository as its list of layers.
pub(super) type Catalogue = Vec<Vec<LayerRef>>;

#[derive(Debug, Default)]
pub(super) struct Catalogues {
    cached: Mutex<HashMap<String, (Stamp, Arc<Catalogue>)>>,
}

impl Catalogues {
    pub fn forget(&self, repository: &str) {
        lock(&self.cached).remove(repository);
    }
}

/// What says a repository's manifests changed: the directory's modification time and its
/// number of entries; `None` when the directory cannot be read (never cached then).
type Stamp = Option<(SystemTime, usize)>;

fn stamp(dir: &Path) -> Stamp {
    let modified = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
    let entries = std::fs::read_dir(dir).ok()?.count();
    Some((modified, entries))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is one insert or remove: a panic cannot leave the map half-written.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Deltas {
    /// The repository's catalogue, read again only when it changed.
    pub(super) fn catalogue(&self, repository: &str) -> Result<Arc<Catalogue>, RegistryError> {
        let dir = self.repos.join(repository).join("manifests");
        let now = stamp(&dir);
        if let Some((seen, catalogue)) = lock(&self.catalogues.cached).get(repository) {
            if now.is_some() && *seen == now {
                return Ok(catalogue.clone());
            }
        }
        let catalogue = Arc::new(read_catalogue(&self.blobs, repository, &dir)?);
        lock(&self.catalogues.cached).insert(repository.to_string(), (now, catalogue.clone()));
        Ok(catalogue)
    }

    /// The layers of the image manifest `manifest`; `None` for an index, a foreign
    /// document, or one whose blobs are missing.
    pub(super) fn layers_of(&self, manifest: &Digest) -> Option<Vec<LayerRef>> {
        layers_of(&self.blobs, manifest)
    }
}

fn read_catalogue(
    blobs: &BlobStore,
    repository: &str,
    dir: &Path,
) -> Result<Catalogue, RegistryError> {
    let entries = std::fs::read_dir(dir).map_err(|_| RegistryError::DeltaRequestInvalid {
        reason: format!("repository {repository} has no images"),
    })?;
    let mut images = Vec::new();
    for entry in entries {
        let entry = entry.map_err(crate::registry::io("list manifests", dir))?;
        let Some(digest) = entry
            .file_name()
            .to_str()
            .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
        else {
            continue;
        };
        // Indexes and foreign documents are skipped: only image manifests have layers.
        if let Some(layers) = layers_of(blobs, &digest) {
            images.push(layers);
        }
    }
    Ok(images)
}

fn layers_of(blobs: &BlobStore, manifest: &Digest) -> Option<Vec<LayerRef>> {
    let manifest = Manifest::parse(&std::fs::read(blobs.path_of(manifest)).ok()?).ok()?;
    let config =
        ImageConfig::parse(&std::fs::read(blobs.path_of(&manifest.config.digest)).ok()?).ok()?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return None;
    }
    let layers = manifest.layers.iter().zip(&config.rootfs.diff_ids);
    Some(
        layers
            .map(|(layer, diff_id)| LayerRef {
                blob: layer.digest,
                diff_id: *diff_id,
            })
            .collect(),
    )
}

/// The target layer and its best base: a held layer at the same position in another image
/// of the repository (the usual previous version), else any held layer of the repository.
pub(super) fn choose_base(
    images: &[Vec<LayerRef>],
    target: &Digest,
    have: &[Digest],
) -> Option<(LayerRef, LayerRef)> {
    let held = |l: &&LayerRef| have.contains(&l.diff_id) && &l.diff_id != target;
    let (position, target_layer) = images.iter().find_map(|layers| {
        layers
            .iter()
            .enumerate()
            .find(|(_, l)| &l.diff_id == target)
    })?;
    let same_position = images
        .iter()
        .filter_map(|layers| layers.get(position))
        .find(held);
    let any = || images.iter().flatten().find(held);
    let base = same_position.or_else(any)?;
    Some((target_layer.clone(), base.clone()))
}

/// The pairs to encode ahead: for each of the newest `history` tags (version order), every
/// layer a device holding one of the `history` tags before it lacks, with the base that
/// device's request would get (`choose_base` over all of the repository's images).
pub(super) fn plan_pairs(
    tagged: &[Vec<LayerRef>],
    images: &[Vec<LayerRef>],
    history: usize,
) -> Vec<(LayerRef, LayerRef)> {
    let mut seen = HashSet::new();
    let mut pairs = Vec::new();
    let first_target = tagged.len().saturating_sub(history).max(1);
    for i in first_target..tagged.len() {
        for held in &tagged[i.saturating_sub(history)..i] {
            let have: Vec<_> = held.iter().map(|l| l.diff_id).collect();
            for layer in tagged[i].iter().filter(|l| !have.contains(&l.diff_id)) {
                let Some((target, base)) = choose_base(images, &layer.diff_id, &have) else {
                    continue;
                };
                if seen.insert(pair_key(&target.diff_id, &base.diff_id)) {
                    pairs.push((target, base));
                }
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> LayerRef {
        let digest: Digest = format!("sha256:{}", format!("{n:02x}").repeat(32))
            .parse()
            .unwrap();
        LayerRef {
            blob: digest,
            diff_id: digest,
        }
    }

    fn keys(pairs: &[(LayerRef, LayerRef)]) -> Vec<(u8, u8)> {
        let n = |l: &LayerRef| u8::from_str_radix(&l.diff_id.hex()[..2], 16).unwrap();
        pairs.iter().map(|(t, b)| (n(t), n(b))).collect()
    }

    /// Stores an image manifest with one layer (and its config) in `repository` the way a
    /// push does: blobs first, then the `manifests/` entry.
    fn store_image(deltas: &Deltas, repository: &str, n: u8) {
        let put = |bytes: &[u8]| {
            let digest = Digest::of(bytes);
            std::fs::write(deltas.blobs.path_of(&digest), bytes).unwrap();
            digest
        };
        let diff_id = layer(n).diff_id;
        let config = put(
            format!(r#"{{"architecture":"arm64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#)
                .as_bytes(),
        );
        let manifest = put(
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{diff_id}","size":1}}]}}"#
            )
            .as_bytes(),
        );
        let dir = deltas.repos.join(repository).join("manifests");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(manifest.hex()),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .unwrap();
    }

    #[test]
    fn the_catalogue_is_read_once_until_the_repository_changes() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs"), dir.path().join("uploads")).unwrap();
        let deltas =
            Deltas::open(blobs, dir.path().join("repos"), dir.path().join("deltas")).unwrap();
        store_image(&deltas, "app", 1);
        let first = deltas.catalogue("app").unwrap();
        assert_eq!(*first, vec![vec![layer(1)]]);
        assert!(
            Arc::ptr_eq(&first, &deltas.catalogue("app").unwrap()),
            "read again"
        );
        // Another process adds an image (within the same clock tick, maybe): seen.
        store_image(&deltas, "app", 2);
        let second = deltas.catalogue("app").unwrap();
        assert_eq!(second.len(), 2);
        // A push in this process forgets it outright.
        deltas.forget("app");
        assert!(!Arc::ptr_eq(&second, &deltas.catalogue("app").unwrap()));
        assert!(matches!(
            deltas.catalogue("nothing"),
            Err(RegistryError::DeltaRequestInvalid { .. })
        ));
    }

    #[test]
    fn base_is_the_held_layer_at_the_same_position() {
        let v1 = vec![layer(0xa), layer(0xb)];
        let v2 = vec![layer(0xa), layer(0xc)];
        let have = vec![layer(0xa).diff_id, layer(0xb).diff_id];
        let (_, base) = choose_base(&[v1, v2], &layer(0xc).diff_id, &have).unwrap();
        assert_eq!(base, layer(0xb));
        assert!(choose_base(&[vec![layer(0xc)]], &layer(0xc).diff_id, &have).is_none());
    }

    #[test]
    fn plan_encodes_new_layers_from_the_previous_tags_at_the_same_position() {
        // Shared base layer 1; the app layer changes 2 → 3 → 4.
        let v1 = vec![layer(1), layer(2)];
        let v2 = vec![layer(1), layer(3)];
        let v3 = vec![layer(1), layer(4)];
        let images = vec![v1.clone(), v2.clone(), v3.clone()];
        let tagged = vec![v1, v2, v3];
        assert_eq!(
            keys(&plan_pairs(&tagged, &images, 2)),
            [(3, 2), (4, 2), (4, 3)]
        );
        assert_eq!(keys(&plan_pairs(&tagged, &images, 1)), [(4, 3)]);
        assert!(plan_pairs(&tagged[..1], &images, 3).is_empty());
    }
}
