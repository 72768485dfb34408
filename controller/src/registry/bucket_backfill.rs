//! Copying what a data dir held before `[blobs.s3]` was configured into the bucket, once at
//! start, in the background: blobs the bucket lacks, and repository entries (tags, manifest
//! media types) it lacks. An entry the bucket already has is left alone: another replica
//! may have moved that tag since. Until it is done, such blobs are streamed from the cache
//! (never redirected: the bucket does not have them).

use std::path::{Path, PathBuf};

use coracle_images::Digest;

use super::{io, Registry, RegistryError};

/// What one backfill copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backfill {
    pub blobs: usize,
    pub entries: usize,
}

impl Registry {
    /// Uploads the local blobs and repository entries the bucket lacks. Blocking.
    pub fn backfill_bucket_blocking(&self) -> Result<Backfill, RegistryError> {
        let Some(remote) = self.blobs.remote.clone() else {
            return Ok(Backfill::default());
        };
        let mut done = Backfill::default();
        let dir = self.blobs.blob_dir();
        let entries = std::fs::read_dir(&dir).map_err(io("list blobs", &dir))?;
        for entry in entries.flatten() {
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
            else {
                continue;
            };
            if remote.blob_size(&digest)?.is_none() {
                remote.store_blob(&digest, &entry.path())?;
                done.blobs += 1;
            }
        }
        for path in files_under(&self.repos) {
            let Some((_, key)) = self.remote_key(&path) else {
                continue;
            };
            if remote.get_entry(&key)?.is_none() {
                let bytes = std::fs::read(&path).map_err(io("read repository entry", &path))?;
                remote.put_entry(&key, &bytes)?;
                done.entries += 1;
            }
        }
        Ok(done)
    }

    /// [`Registry::backfill_bucket_blocking`] on a blocking thread, logged (from `serve`).
    pub async fn backfill_bucket(self) {
        let outcome = tokio::task::spawn_blocking(move || self.backfill_bucket_blocking()).await;
        match outcome {
            Ok(Ok(Backfill {
                blobs: 0,
                entries: 0,
            })) => {}
            Ok(Ok(done)) => tracing::info!(
                blobs = done.blobs,
                entries = done.entries,
                "local blobs and repository entries copied to the object store"
            ),
            Ok(Err(err)) => tracing::warn!(
                error = %crate::api::error::error_chain(&err),
                "cannot copy local blobs to the object store; they are served from the cache"
            ),
            Err(err) => tracing::warn!(error = %err, "object store backfill stopped"),
        }
    }
}

/// Every file below `dir` (tags and manifest entries of nested repositories included).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files
}
