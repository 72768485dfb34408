//! `BlobStore`: content-addressed blobs for the registry. An upload is written to a temp file
//! while hashed; only when its sha256 matches the claimed digest is it renamed into
//! `blobs/sha256/<hex>`. No path is visible in the store before its digest is verified.
//! Upload sessions live in `uploads.rs`.

use std::path::PathBuf;
use std::sync::Arc;

use coracle_images::Digest;
use sha2::{Digest as _, Sha256};

use super::remote_blobs::RemoteBlobs;
use super::uploads::SessionLocks;
use super::{io, RegistryError};

/// A `sha256:<64 hex>` digest, parsed once at the edge: its text (as the registry API
/// spells it) and the parsed [`Digest`] the image library keys things by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDigest {
    text: String,
    digest: Digest,
}

impl BlobDigest {
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let invalid = || RegistryError::DigestInvalid {
            digest: text.into(),
        };
        let hex = text.strip_prefix("sha256:").ok_or_else(invalid)?;
        // Lowercase only: the text names a file, and one blob must have one name.
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid());
        }
        let digest = text.parse().map_err(|_| invalid())?;
        Ok(Self {
            text: text.to_string(),
            digest,
        })
    }
    pub fn of(bytes: &[u8]) -> Self {
        Self::from(Digest::of(bytes))
    }
    pub fn hex(&self) -> &str {
        &self.text[7..]
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

impl From<Digest> for BlobDigest {
    fn from(digest: Digest) -> Self {
        Self {
            text: digest.to_string(),
            digest,
        }
    }
}

/// Blobs and upload sessions under one root.
#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    pub(super) uploads: PathBuf,
    /// One lock per open upload session, shared by clones (see `uploads.rs`).
    pub(super) sessions: Arc<SessionLocks>,
    /// The bucket every blob is written through to (`[blobs.s3]`), if any; the directory
    /// above is then its cache (`blob_cache.rs`).
    pub(super) remote: Option<RemoteBlobs>,
}

impl BlobStore {
    pub fn open(blobs: PathBuf, uploads: PathBuf) -> Result<Self, RegistryError> {
        let dir = blobs.join("sha256");
        std::fs::create_dir_all(&dir).map_err(io("create blob dir", &dir))?;
        std::fs::create_dir_all(&uploads).map_err(io("create upload dir", &uploads))?;
        Ok(Self {
            blobs,
            uploads,
            sessions: Arc::default(),
            remote: None,
        })
    }

    /// Writes every blob through to `remote` and fetches what the local dir lacks from it.
    pub fn with_remote(mut self, remote: RemoteBlobs) -> Self {
        self.remote = Some(remote);
        self
    }

    pub fn path(&self, digest: &BlobDigest) -> PathBuf {
        self.path_of(&digest.digest())
    }

    /// The file of the blob `digest`.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    /// The directory holding every blob, by hex digest.
    pub(super) fn blob_dir(&self) -> PathBuf {
        self.blobs.join("sha256")
    }

    /// The blob's size, if present.
    pub fn size(&self, digest: &BlobDigest) -> Option<u64> {
        self.size_of(&digest.digest())
    }

    /// The size of the blob `digest`, if present.
    pub fn size_of(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.path_of(digest))
            .ok()
            .map(|m| m.len())
    }

    /// Removes a blob. Manifests naming it are not checked: deleting blobs is the
    /// operator's (or the conformance suite's) explicit act, like in every OCI registry.
    pub async fn delete(&self, digest: &BlobDigest) -> Result<(), RegistryError> {
        // The bucket first: a blob left there would be fetched back into the cache.
        let in_bucket = match self.remote.clone() {
            Some(remote) => {
                let blob = digest.digest();
                tokio::task::spawn_blocking(move || remote.delete_blob(&blob))
                    .await
                    .map_err(|_| RegistryError::BlobUnknown {
                        digest: digest.as_str().into(),
                    })??
            }
            None => false,
        };
        let path = self.path(digest);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && in_bucket => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(RegistryError::BlobUnknown {
                    digest: digest.as_str().into(),
                })
            }
            Err(err) => Err(io("delete blob", &path)(err)),
        }
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
            self.store_verified_blocking(&path, &digest.digest())
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
