//! `RemoteBlobs`: the registry's view of the object store (`[blobs.s3]`). Blobs live under
//! `blobs/sha256/<hex>` and repository entries (tags, manifest media types) under
//! `repos/<name>/…`, the same names as in the data dir, which stays as a cache.
//!
//! Write-through: a blob is in the bucket before it is renamed into the local store, so a
//! failed upload leaves nothing recorded as stored, and every blob a controller holds (that
//! was written while the bucket was configured) is one its replicas can fetch.
//! Blocking: callers on the runtime use `spawn_blocking`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coracle_images::Digest;
use sha2::{Digest as _, Sha256};

use super::RegistryError;
use crate::net::throttle::SharedThrottle;
use crate::object_store::{ObjectStore, ObjectStoreError};

/// The bucket behind the blob store, shared by its clones.
#[derive(Debug, Clone)]
pub struct RemoteBlobs {
    store: Arc<ObjectStore>,
    /// Falling back to the local cache while the store is down is logged at most this often.
    fallbacks: Arc<SharedThrottle>,
}

/// The object key of a blob.
fn blob_key(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn failed(
    step: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(ObjectStoreError) -> RegistryError {
    let object = object.into();
    move |source| RegistryError::ObjectStore {
        step,
        object,
        source: Box::new(source),
    }
}

impl RemoteBlobs {
    pub fn new(store: ObjectStore) -> Self {
        Self {
            store: Arc::new(store),
            fallbacks: Arc::new(SharedThrottle::new(Duration::from_secs(60))),
        }
    }

    /// Whether devices get blobs through redirects to pre-signed URLs.
    pub fn redirects(&self) -> bool {
        self.store.redirects()
    }

    /// Uploads the verified file `path` as blob `digest` (its hex is the payload hash the
    /// store checks the bytes against).
    pub fn store_blob(&self, digest: &Digest, path: &Path) -> Result<(), RegistryError> {
        self.store
            .put_file(&blob_key(digest), path, &digest.hex())
            .map_err(failed("store blob", digest.to_string()))
    }

    /// The blob's size in the bucket, `None` when absent.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        self.store
            .head(&blob_key(digest))
            .map_err(failed("look up blob", digest.to_string()))
    }

    /// Downloads blob `digest` into the new file `into`, checking its digest; `None` when
    /// the bucket has no such blob. The caller renames `into` into the store.
    pub fn fetch_blob(&self, digest: &Digest, into: &Path) -> Result<Option<u64>, RegistryError> {
        let local = |source| RegistryError::Io {
            step: "write fetched blob",
            path: into.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(into).map_err(local)?;
        let mut out = HashingWriter {
            file,
            hasher: Sha256::new(),
        };
        let Some(size) = self
            .store
            .get_into(&blob_key(digest), &mut out)
            .map_err(failed("fetch blob", digest.to_string()))?
        else {
            return Ok(None);
        };
        out.file.sync_all().map_err(local)?;
        let actual = format!("sha256:{}", hex::encode(out.hasher.finalize()));
        if actual != digest.to_string() {
            return Err(RegistryError::DigestMismatch {
                claimed: digest.to_string(),
                actual: format!("{actual} (fetched from the object store)"),
            });
        }
        Ok(Some(size))
    }

    /// Deletes blob `digest` from the bucket; whether it was there.
    pub fn delete_blob(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let existed = self.blob_size(digest)?.is_some();
        self.store
            .delete(&blob_key(digest))
            .map_err(failed("delete blob", digest.to_string()))?;
        Ok(existed)
    }

    /// A URL a client may GET the blob from without credentials, until it expires.
    pub fn presigned_url(&self, digest: &Digest) -> String {
        self.store.presigned_get(&blob_key(digest))
    }

    /// Writes a repository entry (`repos/<name>/tags/<tag>`, `…/manifests/<hex>`).
    pub fn put_entry(&self, key: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        self.store
            .put_bytes(key, bytes)
            .map_err(failed("store repository entry", key))
    }

    /// Reads a repository entry, `None` when absent.
    pub fn get_entry(&self, key: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let mut bytes = Vec::new();
        let found = self
            .store
            .get_into(key, &mut bytes)
            .map_err(failed("fetch repository entry", key))?;
        Ok(found.map(|_| bytes))
    }

    /// Logs (rate-limited) that `err` made the registry serve from its local cache.
    pub fn note_fallback(&self, err: &RegistryError) {
        if let Some(suppressed) = self.fallbacks.hit() {
            tracing::warn!(error = %crate::api::error::error_chain(err), suppressed,
                "object store failed; serving the blob from the local cache");
        }
    }
}

/// A file writer that hashes what passes through it.
struct HashingWriter {
    file: std::fs::File,
    hasher: Sha256,
}

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
