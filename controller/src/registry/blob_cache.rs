//! The data dir as a cache of the bucket (`[blobs.s3]`): storing a verified blob writes it
//! through to the bucket before it becomes visible locally, and a blob the local dir lacks
//! is fetched from the bucket (checked against its digest) before it is read. Without a
//! bucket these are the local store's own rename and lookup.

use std::path::Path;

use coracle_images::Digest;

use super::{io, BlobDigest, BlobStore, RegistryError};

impl BlobStore {
    /// Moves the verified file `temp` into the store as blob `digest`, after uploading it
    /// to the bucket: when the upload fails, nothing is recorded as stored (the caller
    /// removes `temp`), and a blob already stored stays as it was. Blocking.
    pub fn store_verified_blocking(
        &self,
        temp: &Path,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        if let Some(remote) = &self.remote {
            remote.store_blob(digest, temp)?;
        }
        let target = self.path_of(digest);
        std::fs::rename(temp, &target).map_err(io("move verified blob", &target))
    }

    /// Makes sure blob `digest` is in the local dir, fetching it from the bucket when it is
    /// not; its size, or `None` when neither holds it. Blocking.
    pub fn ensure_local_blocking(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        if let Some(size) = self.size_of(digest) {
            return Ok(Some(size));
        }
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        let id = crate::secrets::random_token()[..32].to_string();
        let temp = self.upload_path(&id)?;
        let fetched = remote
            .fetch_blob(digest, &temp)
            .and_then(|found| match found {
                Some(size) => {
                    let target = self.path_of(digest);
                    std::fs::rename(&temp, &target).map_err(io("cache fetched blob", &target))?;
                    tracing::debug!(%digest, size, "blob fetched from the object store");
                    Ok(Some(size))
                }
                None => Ok(None),
            });
        if !matches!(fetched, Ok(Some(_))) {
            let _ = std::fs::remove_file(&temp);
        }
        fetched
    }

    /// [`BlobStore::ensure_local_blocking`] on a blocking thread.
    pub async fn ensure_local(&self, digest: &BlobDigest) -> Result<Option<u64>, RegistryError> {
        if let Some(size) = self.size(digest) {
            return Ok(Some(size));
        }
        let store = self.clone();
        let digest = digest.digest();
        tokio::task::spawn_blocking(move || store.ensure_local_blocking(&digest))
            .await
            .map_err(|_| RegistryError::BlobUnknown {
                digest: digest.to_string(),
            })?
    }

    /// The blob's size, from the local dir or else the bucket (nothing is downloaded): for
    /// existence checks (a manifest's layers, a mount, a HEAD).
    pub async fn stat(&self, digest: &BlobDigest) -> Result<Option<u64>, RegistryError> {
        if let Some(size) = self.size(digest) {
            return Ok(Some(size));
        }
        let Some(remote) = self.remote.clone() else {
            return Ok(None);
        };
        let digest = digest.digest();
        tokio::task::spawn_blocking(move || remote.blob_size(&digest))
            .await
            .map_err(|_| RegistryError::BlobUnknown {
                digest: digest.to_string(),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_bucket_the_local_dir_is_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("b"), dir.path().join("u")).unwrap();
        let digest = Digest::of(b"x");
        assert_eq!(store.ensure_local_blocking(&digest).unwrap(), None);
        let temp = dir.path().join("u").join("t");
        std::fs::write(&temp, b"x").unwrap();
        store.store_verified_blocking(&temp, &digest).unwrap();
        assert_eq!(store.ensure_local_blocking(&digest).unwrap(), Some(1));
    }
}
