//! `BlobStore`: content-addressed blobs for the registry. An upload is written to a temp file
//! while hashed; only when its sha256 matches the claimed digest is it renamed into
//! `blobs/sha256/<hex>`. No path is visible in the store before its digest is verified.

use std::path::PathBuf;

use axum::body::Body;
use http_body_util::BodyExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::{io, RegistryError};

/// How much of a request body is read and dropped after its write failed, so the client
/// sees the error; a longer body gets its connection closed instead.
const DRAIN_AFTER_ERROR: u64 = 256 << 20;

/// A `sha256:<64 hex>` digest, parsed once at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDigest(String);

impl BlobDigest {
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| RegistryError::DigestInvalid {
                digest: text.into(),
            })?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(RegistryError::DigestInvalid {
                digest: text.into(),
            });
        }
        Ok(Self(text.to_string()))
    }
    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Blobs and upload sessions under one root.
#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    uploads: PathBuf,
}

impl BlobStore {
    pub fn open(blobs: PathBuf, uploads: PathBuf) -> Result<Self, RegistryError> {
        let dir = blobs.join("sha256");
        std::fs::create_dir_all(&dir).map_err(io("create blob dir", &dir))?;
        std::fs::create_dir_all(&uploads).map_err(io("create upload dir", &uploads))?;
        Ok(Self { blobs, uploads })
    }

    pub fn path(&self, digest: &BlobDigest) -> PathBuf {
        self.blobs.join("sha256").join(digest.hex())
    }

    /// The blob's size, if present.
    pub fn size(&self, digest: &BlobDigest) -> Option<u64> {
        std::fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf, RegistryError> {
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

    /// Appends a request body to a session, streaming; returns the new length. A body that
    /// fails half way (a full disk, a cut connection) is cut off again, so the session keeps
    /// the length it reported and the client can resume from there, and a full disk gets
    /// back the space of the failed chunk.
    pub async fn append(&self, id: &str, body: Body) -> Result<u64, RegistryError> {
        let path = self.upload_path(id)?;
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .await
            .map_err(|_| RegistryError::UploadUnknown { id: id.into() })?;
        let before = file
            .metadata()
            .await
            .map_err(|_| RegistryError::UploadUnknown { id: id.into() })?
            .len();
        if let Err(err) = Self::write_body(&mut file, body, &path).await {
            if let Err(cut) = file.set_len(before).await {
                tracing::warn!(path = %path.display(), error = %cut, "cannot cut a failed chunk off the upload");
            }
            return Err(err);
        }
        self.upload_len(id).await
    }

    /// Writes the body to the session file. After a write error the rest of the body is
    /// still read (up to [`DRAIN_AFTER_ERROR`]) so the client, still sending, gets the error
    /// response instead of a broken pipe.
    async fn write_body(
        file: &mut tokio::fs::File,
        mut body: Body,
        path: &std::path::Path,
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

    /// Verifies the session's bytes against `digest` and moves them into the store.
    pub async fn finish(&self, id: &str, digest: &BlobDigest) -> Result<(), RegistryError> {
        let path = self.upload_path(id)?;
        let hash_path = path.clone();
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
            let _ = tokio::fs::remove_file(&path).await;
            return Err(RegistryError::DigestMismatch {
                claimed: digest.as_str().into(),
                actual,
            });
        }
        let target = self.path(digest);
        tokio::fs::rename(&path, &target)
            .await
            .map_err(io("move verified blob", &target))?;
        Ok(())
    }

    /// Stores a blob read from `reader` (a mirror's download) the way an upload is stored:
    /// hashed while written to a session file, synced, and renamed into the store only when
    /// it is exactly `size` bytes with digest `digest`. Blocking: call it on a blocking thread.
    pub fn import_blocking(
        &self,
        digest: &BlobDigest,
        size: u64,
        reader: &mut dyn std::io::Read,
    ) -> Result<(), RegistryError> {
        use std::io::{Read as _, Write as _};
        let id = crate::secrets::random_token()[..32].to_string();
        let path = self.upload_path(&id)?;
        let result = (|| {
            let mut file = std::fs::File::create(&path).map_err(io("create upload", &path))?;
            let mut hasher = Sha256::new();
            let mut received = 0u64;
            let mut buf = vec![0u8; 256 << 10];
            // One byte past the declared size is read, to notice a longer blob.
            let mut limited = reader.take(size.saturating_add(1));
            loop {
                let n = limited.read(&mut buf).map_err(io("receive blob", &path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(io("write blob", &path))?;
                received += n as u64;
            }
            file.sync_all().map_err(io("sync blob", &path))?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest.as_str() || received != size {
                return Err(RegistryError::DigestMismatch {
                    claimed: format!("{} ({size} bytes)", digest.as_str()),
                    actual: format!("{actual} ({received} bytes)"),
                });
            }
            let target = self.path(digest);
            std::fs::rename(&path, &target).map_err(io("move verified blob", &target))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    /// Stores bytes already in memory (manifests), verified by construction.
    pub async fn put_bytes(&self, bytes: &[u8]) -> Result<BlobDigest, RegistryError> {
        let digest = BlobDigest::of(bytes);
        let id = self.start_upload().await?;
        let path = self.upload_path(&id)?;
        tokio::fs::write(&path, bytes)
            .await
            .map_err(io("write manifest", &path))?;
        self.finish(&id, &digest).await?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upload_is_visible_only_after_its_digest_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("b"), dir.path().join("u")).unwrap();
        let id = store.start_upload().await.unwrap();
        store.append(&id, Body::from("hello ")).await.unwrap();
        assert_eq!(store.append(&id, Body::from("world")).await.unwrap(), 11);
        let wrong = BlobDigest::of(b"other");
        assert!(matches!(
            store.finish(&id, &wrong).await,
            Err(RegistryError::DigestMismatch { .. })
        ));
        assert_eq!(store.size(&wrong), None);
        let id = store.start_upload().await.unwrap();
        store.append(&id, Body::from("hello world")).await.unwrap();
        let right = BlobDigest::of(b"hello world");
        store.finish(&id, &right).await.unwrap();
        assert_eq!(store.size(&right), Some(11));
    }

    #[test]
    fn imported_blobs_are_stored_only_with_their_digest_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("b"), dir.path().join("u")).unwrap();
        let right = BlobDigest::of(b"layer bytes");
        for (size, body) in [
            (11, &b"layer bytez"[..]),
            (5, b"layer bytes"),
            (11, b"layer"),
        ] {
            let err = store
                .import_blocking(&right, size, &mut &body[..])
                .unwrap_err();
            assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
            assert_eq!(store.size(&right), None);
        }
        store
            .import_blocking(&right, 11, &mut &b"layer bytes"[..])
            .unwrap();
        assert_eq!(store.size(&right), Some(11));
        assert_eq!(std::fs::read_dir(dir.path().join("u")).unwrap().count(), 0);
    }

    #[test]
    fn digests_are_checked_at_the_edge() {
        assert!(BlobDigest::parse("sha256:abc").is_err());
        assert!(BlobDigest::parse(&format!("md5:{}", "a".repeat(64))).is_err());
        assert!(BlobDigest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(BlobDigest::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
