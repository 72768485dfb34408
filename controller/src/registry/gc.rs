//! Registry garbage collection: removes the blobs nothing names. What is kept (the live
//! set) is every manifest of every repository, every manifest a device's desired state
//! pins (the caller passes those digests: a device may still pull an image whose tag was
//! removed), everything those manifests name (config, layers, an index's manifests), and
//! the delta blobs the delta verdicts name. A blob younger than `min_age` is kept too: it
//! may belong to a push whose manifest has not arrived yet.
//!
//! The decision is the pure [`live_set`] over a manifest reader, and [`sweepable`];
//! `Registry::collect_garbage` does the reading and the removing.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::{io, BlobDigest, Registry, RegistryError};

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub kept: usize,
    pub removed: Vec<BlobDigest>,
    pub removed_bytes: u64,
}

/// The digests named by a manifest (or index) document: config, layers, manifests.
pub fn named_by(manifest: &[u8]) -> Vec<BlobDigest> {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(manifest) else {
        return Vec::new();
    };
    let config = json.get("config").into_iter();
    let arrays = ["layers", "manifests"]
        .into_iter()
        .filter_map(|field| json.get(field)?.as_array())
        .flatten();
    config
        .chain(arrays)
        .filter_map(|d| BlobDigest::parse(d.get("digest")?.as_str()?).ok())
        .collect()
}

/// Every digest reachable from `roots`, reading manifests with `read` (`None`: not stored,
/// or a plain blob).
pub fn live_set(
    roots: impl IntoIterator<Item = BlobDigest>,
    read: impl Fn(&BlobDigest) -> Option<Vec<u8>>,
) -> HashSet<String> {
    let mut live = HashSet::new();
    let mut todo: Vec<BlobDigest> = roots.into_iter().collect();
    while let Some(digest) = todo.pop() {
        if !live.insert(digest.as_str().to_string()) {
            continue;
        }
        if let Some(bytes) = read(&digest) {
            todo.extend(named_by(&bytes));
        }
    }
    live
}

/// The stored blobs (digest, age) that are neither live nor younger than `min_age`.
pub fn sweepable(
    stored: &[(BlobDigest, Duration)],
    live: &HashSet<String>,
    min_age: Duration,
) -> Vec<BlobDigest> {
    stored
        .iter()
        .filter(|(digest, age)| !live.contains(digest.as_str()) && *age >= min_age)
        .map(|(digest, _)| digest.clone())
        .collect()
}

impl Registry {
    /// Removes the blobs nothing names (see the module note); `pinned` are the manifest
    /// digests of the devices' desired states. `dry_run` reports without removing.
    pub fn collect_garbage(
        &self,
        pinned: &[BlobDigest],
        min_age: Duration,
        dry_run: bool,
    ) -> Result<GcReport, RegistryError> {
        let mut roots: Vec<BlobDigest> = pinned.to_vec();
        for repository in self.repositories()? {
            roots.extend(self.manifest_digests(&repository)?);
        }
        roots.extend(self.delta_blobs()?);
        // Small documents only: a layer is never read as a manifest.
        let read = |digest: &BlobDigest| {
            let size = self.blobs.size(digest)?;
            (size <= 4 << 20)
                .then(|| std::fs::read(self.blobs.path(digest)).ok())
                .flatten()
        };
        let live = live_set(roots, read);
        let stored = self.blobs.list_with_age()?;
        let mut report = GcReport {
            kept: stored.len(),
            ..GcReport::default()
        };
        for digest in sweepable(&stored, &live, min_age) {
            let size = self.blobs.size(&digest).unwrap_or(0);
            if !dry_run {
                let path = self.blobs.path(&digest);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(io("remove unreferenced blob", &path)(err)),
                }
            }
            report.kept -= 1;
            report.removed_bytes += size;
            report.removed.push(digest);
        }
        Ok(report)
    }

    /// The manifests stored in one repository.
    fn manifest_digests(&self, repository: &str) -> Result<Vec<BlobDigest>, RegistryError> {
        let dir = self.repos.join(repository).join("manifests");
        let entries = std::fs::read_dir(&dir).map_err(io("list manifests", &dir))?;
        Ok(entries
            .filter_map(|e| {
                let e = e.ok()?;
                e.file_type().ok()?.is_file().then_some(())?;
                BlobDigest::parse(&format!("sha256:{}", e.file_name().to_str()?)).ok()
            })
            .collect())
    }

    /// The delta blobs the stored delta verdicts name.
    fn delta_blobs(&self) -> Result<Vec<BlobDigest>, RegistryError> {
        let blobs = self.deltas.recorded_blobs()?;
        Ok(blobs.into_iter().map(BlobDigest::from).collect())
    }
}

impl super::BlobStore {
    /// Every stored blob with the time since it was written.
    pub(super) fn list_with_age(&self) -> Result<Vec<(BlobDigest, Duration)>, RegistryError> {
        let dir = self.blob_dir();
        let entries = std::fs::read_dir(&dir).map_err(io("list blobs", &dir))?;
        let now = SystemTime::now();
        Ok(entries
            .filter_map(|e| {
                let e = e.ok()?;
                let digest =
                    BlobDigest::parse(&format!("sha256:{}", e.file_name().to_str()?)).ok()?;
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((digest, now.duration_since(modified).unwrap_or_default()))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn manifest(config: &BlobDigest, layers: &[&BlobDigest]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|d| serde_json::json!({"digest": d.as_str()}))
            .collect();
        serde_json::json!({"schemaVersion": 2, "config": {"digest": config.as_str()}, "layers": layers})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn live_set_follows_indexes_manifests_and_pins() {
        let (config, layer, shared) = (
            BlobDigest::of(b"c"),
            BlobDigest::of(b"l"),
            BlobDigest::of(b"s"),
        );
        let (old_config, old_layer) = (BlobDigest::of(b"oc"), BlobDigest::of(b"ol"));
        let image = manifest(&config, &[&layer, &shared]);
        let image_digest = BlobDigest::of(&image);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": image_digest.as_str()}]})
            .to_string()
            .into_bytes();
        let old = manifest(&old_config, &[&old_layer, &shared]);
        let old_digest = BlobDigest::of(&old);
        let docs: HashMap<String, Vec<u8>> = [
            (BlobDigest::of(&index), index.clone()),
            (image_digest.clone(), image),
            (old_digest.clone(), old),
        ]
        .into_iter()
        .map(|(d, b)| (d.as_str().to_string(), b))
        .collect();
        let read = |d: &BlobDigest| docs.get(d.as_str()).cloned();

        let live = live_set([BlobDigest::of(&index)], read);
        for kept in [&image_digest, &config, &layer, &shared] {
            assert!(live.contains(kept.as_str()));
        }
        assert!(!live.contains(old_layer.as_str()));

        // The old image is untagged, but a device's desired state still pins it.
        let live = live_set([BlobDigest::of(&index), old_digest], read);
        assert!(live.contains(old_layer.as_str()) && live.contains(old_config.as_str()));
    }

    #[test]
    fn only_old_unnamed_blobs_are_swept() {
        let (live_blob, old, young) = (
            BlobDigest::of(b"1"),
            BlobDigest::of(b"2"),
            BlobDigest::of(b"3"),
        );
        let stored = vec![
            (live_blob.clone(), Duration::from_secs(7200)),
            (old.clone(), Duration::from_secs(7200)),
            (young, Duration::from_secs(10)),
        ];
        let live: HashSet<String> = [live_blob.as_str().to_string()].into();
        assert_eq!(
            sweepable(&stored, &live, Duration::from_secs(3600)),
            vec![old]
        );
    }
}
