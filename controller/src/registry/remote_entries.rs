//! Repository entries (tags and manifest media types) in the bucket (`[blobs.s3]`), so a
//! controller replica with an empty data dir answers pulls of what another one stored.
//! An entry is written to the bucket before the local file; a pull refreshes the entries
//! it names from the bucket into the local dir (a tag another replica moved included), and
//! serves the local copy when the bucket cannot be reached.

use std::path::Path;

use super::manifests::write_entry;
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

    /// Copies the entries `reference` needs (its tag, its manifest's media type) and the
    /// manifest's bytes from the bucket into the local dir. Without a bucket, or when it is
    /// down, the local dir answers as it is.
    pub(super) async fn refresh_entries(&self, name: &str, reference: &str) {
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
        let manifest = repo.join("manifests").join(digest.hex());
        if !manifest.is_file() {
            self.refresh_entry(&manifest).await;
        }
        if let Err(err) = self.blobs.ensure_local(&digest).await {
            tracing::debug!(error = %err, "manifest not fetched from the object store");
        }
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
    fn remote_key(&self, path: &Path) -> Option<(super::RemoteBlobs, String)> {
        let remote = self.blobs.remote.clone()?;
        let relative = path.strip_prefix(&self.repos).ok()?;
        Some((remote, format!("repos/{}", relative.to_str()?)))
    }
}
