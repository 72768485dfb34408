//! Repository entries (tags and manifest media types) in the bucket (`[blobs.s3]`), so a
//! controller replica with an empty data dir answers pulls of what another one stored.
//! An entry is written to the bucket before the local file; a pull refreshes the entries
//! it names from the bucket into the local dir (a tag another replica moved included), and
//! serves the local copy when the bucket cannot be reached.

use std::path::Path;

use super::manifests::write_entry;

/// Manifests and indexes are small JSON documents; anything larger is not read as one.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// At most this many manifests of one index are refreshed (platforms of one image).
const MAX_INDEX_ENTRIES: usize = 64;
use super::{check_tag, BlobDigest, Registry, RegistryError};

impl Registry {
    /// Writes `contents` to the repository entry `path` (under `repos/`), through to the
    /// bucket first when there is one.
    pub(super) async fn write_entry_through(
        &self,
        path: &Path,
        contents: &[u8],
        step: &'static str,
    ) -> Result<(), RegistryError> {
        if let Some((remote, key)) = self.remote_key(path) {
            let bytes = contents.to_vec();
            tokio::task::spawn_blocking(move || remote.put_entry(&key, &bytes))
                .await
                .map_err(|join| RegistryError::Io {
                    step,
                    path: path.to_path_buf(),
                    source: std::io::Error::other(join),
                })??;
        }
        write_entry(path, contents, step)
    }

    /// Copies the entries `reference` needs (its tag, its manifest's media type), the
    /// manifest's bytes and, one level down, those of an index's manifests and every
    /// config, from the bucket into the local dir: what a pull, a deploy's pinning and its
    /// platform check read. Without a bucket, or when it is down, the local dir answers as
    /// it is.
    pub async fn refresh_entries(&self, name: &str, reference: &str) {
        if self.blobs.remote.is_none() || super::check_repository(name).is_err() {
            return;
        }
        let repo = self.repos.join(name);
        let digest = if reference.starts_with("sha256:") {
            BlobDigest::parse(reference).ok()
        } else if check_tag(reference).is_ok() {
            let text = self.refresh_entry(&repo.join("tags").join(reference)).await;
            text.and_then(|t| BlobDigest::parse(String::from_utf8_lossy(&t).trim()).ok())
        } else {
            None
        };
        let Some(digest) = digest else {
            return;
        };
        let children = self.refresh_manifest(&repo, &digest).await;
        for child in children.iter().take(MAX_INDEX_ENTRIES) {
            self.refresh_manifest(&repo, child).await;
        }
    }

    /// Refreshes one manifest's entry, bytes and config; the manifests it lists (an index).
    async fn refresh_manifest(&self, repo: &Path, digest: &BlobDigest) -> Vec<BlobDigest> {
        let entry = repo.join("manifests").join(digest.hex());
        if !entry.is_file() {
            self.refresh_entry(&entry).await;
        }
        if !matches!(self.blobs.ensure_local(digest).await, Ok(Some(size)) if size <= MAX_MANIFEST_BYTES)
        {
            return Vec::new();
        }
        let Ok(bytes) = tokio::fs::read(self.blobs.path(digest)).await else {
            return Vec::new();
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Vec::new();
        };
        let named = |pointer: &str| {
            json.pointer(pointer)
                .and_then(|d| d.as_str())
                .and_then(|d| BlobDigest::parse(d).ok())
        };
        if let Some(config) = named("/config/digest") {
            if let Err(err) = self.blobs.ensure_local(&config).await {
                tracing::debug!(error = %err, "image config not fetched from the object store");
            }
        }
        json.get("manifests")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("digest").and_then(|d| d.as_str()))
            .filter_map(|d| BlobDigest::parse(d).ok())
            .collect()
    }

    /// Copies one entry from the bucket to `path`; its bytes when the bucket has it.
    async fn refresh_entry(&self, path: &Path) -> Option<Vec<u8>> {
        let (remote, key) = self.remote_key(path)?;
        let fetched = tokio::task::spawn_blocking(move || remote.get_entry(&key))
            .await
            .ok()?;
        match fetched {
            Ok(Some(bytes)) => {
                let dir = path.parent()?;
                if std::fs::create_dir_all(dir).is_ok() {
                    if let Err(err) = write_entry(path, &bytes, "cache repository entry") {
                        tracing::warn!(error = %err, "cannot cache a repository entry");
                    }
                }
                Some(bytes)
            }
            Ok(None) => None,
            Err(err) => {
                if let Some(remote) = &self.blobs.remote {
                    remote.note_fallback(&err);
                }
                None
            }
        }
    }

    /// The bucket and the object key of a file under `repos/`.
    pub(super) fn remote_key(&self, path: &Path) -> Option<(super::RemoteBlobs, String)> {
        let remote = self.blobs.remote.clone()?;
        let relative = path.strip_prefix(&self.repos).ok()?;
        Some((remote, format!("repos/{}", relative.to_str()?)))
    }
}
