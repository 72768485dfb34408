//! Upload sessions of the `BlobStore`: one file per session under `uploads/`, appended to by
//! chunks and moved into the store by `finish` once its digest verifies.
//!
//! Every step on a session (append, finish, expire) holds that session's lock. Without it a
//! chunk still streaming when the upload is closed would keep writing through its open file
//! into the blob `finish` had just renamed into the store, so the stored bytes would no
//! longer match their digest. With it, the late chunk either lands before the digest is
//! checked or finds the session gone (`BLOB_UPLOAD_UNKNOWN`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use http_body_util::BodyExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::{io, BlobDigest, BlobStore, RegistryError};

/// How much of a request body is read and dropped after its write failed, so the client
/// sees the error; a longer body gets its connection closed instead.
const DRAIN_AFTER_ERROR: u64 = 256 << 20;

/// The lock of each session a request is working on, by session id.
#[derive(Debug, Default)]
pub struct SessionLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl SessionLocks {
    fn of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        // A poisoned map only means another request panicked while inserting; the map
        // itself is still whole.
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }

    /// Forgets a session that no longer exists (finished, expired or never known).
    fn forget(&self, id: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

impl BlobStore {
    pub(super) fn upload_path(&self, id: &str) -> Result<PathBuf, RegistryError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RegistryError::UploadUnknown { id: id.into() });
        }
        Ok(self.uploads.join(id))
    }

    /// Starts an upload session; returns its id.
    pub async fn start_upload(&self) -> Result<String, RegistryError> {
        let id = crate::secrets::random_token()[..32].to_string();
        let path = self.upload_path(&id)?;
        tokio::fs::File::create(&path)
            .await
            .map_err(io("create upload", &path))?;
        Ok(id)
    }

    /// Bytes received so far in a session.
    pub async fn upload_len(&self, id: &str) -> Result<u64, RegistryError> {
        let path = self.upload_path(id)?;
        tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .map_err(|_| RegistryError::UploadUnknown { id: id.into() })
    }

    /// Appends a request body to a session, streaming; returns the new length. `start` is
    /// where the client says the chunk begins (its `Content-Range`): a chunk that does not
    /// begin where the session ends (out of order, or sent twice) is refused and nothing is
    /// written. A body that fails half way (a full disk, a cut connection) is cut off
    /// again, so the session keeps the length it reported and the client can resume from
    /// there, and a full disk gets back the space of the failed chunk.
    pub async fn append(
        &self,
        id: &str,
        start: Option<u64>,
        body: Body,
    ) -> Result<u64, RegistryError> {
        let path = self.upload_path(id)?;
        let lock = self.sessions.of(id);
        let _held = lock.lock().await;
        let Ok(mut file) = tokio::fs::OpenOptions::new().append(true).open(&path).await else {
            self.sessions.forget(id);
            return Err(RegistryError::UploadUnknown { id: id.into() });
        };
        let before = file
            .metadata()
            .await
            .map_err(|_| RegistryError::UploadUnknown { id: id.into() })?
            .len();
        if let Some(start) = start.filter(|&start| start != before) {
            // Read the refused chunk so the client, still sending it, reads the 416 instead
            // of a reset connection.
            drain(body).await;
            return Err(RegistryError::ChunkOutOfOrder {
                id: id.into(),
                expected: before,
                start,
            });
        }
        if let Err(err) = write_body(&mut file, body, &path).await {
            if let Err(cut) = file.set_len(before).await {
                tracing::warn!(path = %path.display(), error = %cut, "cannot cut a failed chunk off the upload");
            }
            return Err(err);
        }
        self.upload_len(id).await
    }

    /// Verifies the session's bytes against `digest` and moves them into the store.
    pub async fn finish(&self, id: &str, digest: &BlobDigest) -> Result<(), RegistryError> {
        let path = self.upload_path(id)?;
        let lock = self.sessions.of(id);
        let _held = lock.lock().await;
        let result = self.verify_and_store(id, &path, digest).await;
        self.sessions.forget(id);
        result
    }

    async fn verify_and_store(
        &self,
        id: &str,
        path: &Path,
        digest: &BlobDigest,
    ) -> Result<(), RegistryError> {
        let hash_path = path.to_path_buf();
        let actual = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut file = std::fs::File::open(&hash_path)?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher)?;
            file.sync_all()?;
            Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
        })
        .await
        .map_err(|_| RegistryError::UploadUnknown { id: id.into() })?
        .map_err(|_| RegistryError::UploadUnknown { id: id.into() })?;
        if actual != digest.as_str() {
            let _ = tokio::fs::remove_file(path).await;
            return Err(RegistryError::DigestMismatch {
                claimed: digest.as_str().into(),
                actual,
            });
        }
        let store = self.clone();
        let (temp, blob) = (path.to_path_buf(), digest.digest());
        let stored =
            tokio::task::spawn_blocking(move || store.store_verified_blocking(&temp, &blob))
                .await
                .map_err(|_| RegistryError::UploadUnknown { id: id.into() })?;
        if stored.is_err() {
            // The session cannot be finished again with these bytes: the client uploads anew.
            let _ = tokio::fs::remove_file(path).await;
        }
        stored
    }

    /// Removes the sessions untouched (no chunk, no start) for longer than `max_age`;
    /// returns how many. A session being written to is skipped: its lock is held.
    pub async fn expire_uploads(&self, max_age: Duration) -> Result<usize, RegistryError> {
        let dir = &self.uploads;
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(io("list uploads", dir))?;
        let mut removed = 0;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io("list uploads", dir))?
        {
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let lock = self.sessions.of(&id);
            let Ok(_held) = lock.try_lock() else {
                continue;
            };
            let path = entry.path();
            if !untouched_for(&path, max_age).await {
                continue;
            }
            match tokio::fs::remove_file(&path).await {
                Ok(()) => removed += 1,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(io("remove expired upload", &path)(err)),
            }
            self.sessions.forget(&id);
        }
        Ok(removed)
    }

    /// Expires abandoned sessions every `period` until the task is dropped (from `serve`).
    pub async fn expire_uploads_every(self, max_age: Duration, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.expire_uploads(max_age).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "abandoned upload sessions removed"),
                Err(err) => tracing::warn!(error = %err, "cannot expire upload sessions"),
            }
        }
    }
}

/// Whether the file was last written more than `max_age` ago (a file whose time cannot be
/// read is kept: expiry only ever removes what it knows is old).
async fn untouched_for(path: &Path, max_age: Duration) -> bool {
    let Ok(modified) = tokio::fs::metadata(path).await.and_then(|m| m.modified()) else {
        return false;
    };
    SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|age| age > max_age)
}

/// Reads and drops a body, up to [`DRAIN_AFTER_ERROR`] bytes.
async fn drain(mut body: Body) {
    let mut drained = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        drained += frame.data_ref().map_or(0, |d| d.len() as u64);
        if drained > DRAIN_AFTER_ERROR {
            break;
        }
    }
}

/// Writes the body to the session file. After a write error the rest of the body is still
/// read (up to [`DRAIN_AFTER_ERROR`]) so the client, still sending, gets the error response
/// instead of a broken pipe.
async fn write_body(
    file: &mut tokio::fs::File,
    mut body: Body,
    path: &Path,
) -> Result<(), RegistryError> {
    let mut failed = None;
    let mut drained = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| RegistryError::Body {
            source: source.into(),
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if failed.is_some() {
            drained += data.len() as u64;
            if drained > DRAIN_AFTER_ERROR {
                break;
            }
        } else if let Err(err) = file.write_all(&data).await {
            failed = Some(io("write upload", path)(err));
        }
    }
    match failed {
        Some(err) => Err(err),
        None => file.flush().await.map_err(io("flush upload", path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> BlobStore {
        BlobStore::open(dir.path().join("b"), dir.path().join("u")).unwrap()
    }

    #[tokio::test]
    async fn upload_is_visible_only_after_its_digest_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let id = store.start_upload().await.unwrap();
        store.append(&id, None, Body::from("hello ")).await.unwrap();
        assert_eq!(
            store.append(&id, None, Body::from("world")).await.unwrap(),
            11
        );
        let wrong = BlobDigest::of(b"other");
        assert!(matches!(
            store.finish(&id, &wrong).await,
            Err(RegistryError::DigestMismatch { .. })
        ));
        assert_eq!(store.size(&wrong), None);
        let id = store.start_upload().await.unwrap();
        store
            .append(&id, None, Body::from("hello world"))
            .await
            .unwrap();
        let right = BlobDigest::of(b"hello world");
        store.finish(&id, &right).await.unwrap();
        assert_eq!(store.size(&right), Some(11));
    }

    #[tokio::test]
    async fn chunk_not_starting_at_the_session_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let id = store.start_upload().await.unwrap();
        store.append(&id, Some(0), Body::from("abc")).await.unwrap();
        for start in [0, 1, 4] {
            assert!(matches!(
                store.append(&id, Some(start), Body::from("xyz")).await,
                Err(RegistryError::ChunkOutOfOrder { expected: 3, .. })
            ));
        }
        assert_eq!(
            store.append(&id, Some(3), Body::from("d")).await.unwrap(),
            4
        );
    }

    #[tokio::test]
    async fn chunk_after_finish_finds_no_session() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let id = store.start_upload().await.unwrap();
        store.append(&id, None, Body::from("blob")).await.unwrap();
        let digest = BlobDigest::of(b"blob");
        store.finish(&id, &digest).await.unwrap();
        assert!(matches!(
            store.append(&id, None, Body::from("late")).await,
            Err(RegistryError::UploadUnknown { .. })
        ));
        assert_eq!(std::fs::read(store.path(&digest)).unwrap(), b"blob");
    }

    #[tokio::test]
    async fn only_sessions_older_than_the_age_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let old = store.start_upload().await.unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(store.upload_path(&old).unwrap())
            .unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        let fresh = store.start_upload().await.unwrap();
        let age = Duration::from_secs(60);
        assert_eq!(store.expire_uploads(age).await.unwrap(), 1);
        assert!(store.upload_len(&old).await.is_err());
        assert_eq!(store.upload_len(&fresh).await.unwrap(), 0);
    }
}
