//! The device's content-addressed image store.
//!
//! ```text
//! root/layers/<hex>/            unpacked layer (overlayfs lower dir), named by diff_id
//! root/layers/<hex>.index.json  its file index (path → size, sha256)
//! root/layers/<hex>.skeleton.zst its tar skeleton (headers without file contents, for deltas)
//! root/blobs/sha256/<hex>       manifests, configs, verified downloads
//! root/images/<hex>.json        one record per image (manifest digest → layer diff_ids)
//! root/partial/<hex>            downloads in progress (resumable, unverified)
//! root/tmp/                     scratch (archive imports); emptied on open
//! ```
//! Nothing appears under `layers/` or `blobs/` before its digest is verified. Reference
//! counts are derived from the image records rather than stored, so a crash cannot make
//! them disagree with the records.

mod atomic;
mod gc;
mod partial;
mod space;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use atomic::{write_atomic, write_atomic_with_mode};
pub use gc::GcReport;
pub use partial::{plan_resume, PartialDownload, PartialError, RangeReply, ResumeAction};
pub use space::{available_bytes, disk_space, estimate_unpacked, pull_space_needed, DiskSpace};

use crate::codec;
use crate::digest::{Digest, HashingReader};
use crate::import::ImageSource;
use crate::layer_index::{LayerIndex, LayerIndexError};
use crate::unpack::{unpack_layer, UnpackError, UnpackLimits};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("prepare store dir {path:?}")]
    PrepareDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not enough disk space: need {needed} bytes plus a reserve of {reserve} bytes, {available} bytes are free (free {short} more bytes)")]
    InsufficientSpace {
        needed: u64,
        reserve: u64,
        available: u64,
        short: u64,
    },
    #[error("read layer blob {digest} at {path:?}")]
    ReadBlob {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer blob {path:?} hashes to {actual}, its descriptor says {expected}")]
    VerifyBlob {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("unpack layer {diff_id}")]
    UnpackLayer {
        diff_id: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("write {path:?}")]
    WriteRecord {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read {path:?}")]
    ReadRecord {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer index")]
    Index(#[from] LayerIndexError),
    #[error("remove {path:?}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("partial download")]
    Partial(#[from] PartialError),
}

/// Store settings; every path comes from the caller.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Bytes that must stay free after any import or download.
    pub reserve_bytes: u64,
    pub unpack: UnpackLimits,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            reserve_bytes: 256 << 20,
            unpack: UnpackLimits::default(),
        }
    }
}

/// An image the store holds: what keeps its layers alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub layers: Vec<Digest>,
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    config: StoreConfig,
}

impl Store {
    /// Open (creating if needed) and repair after a crash: scratch and half-unpacked layers are
    /// removed, a layer whose index write was cut gets its index rebuilt.
    pub fn open(root: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        let store = Self {
            root: root.into(),
            config,
        };
        for dir in ["layers", "blobs/sha256", "images", "partial", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|source| StoreError::PrepareDir { path, source })?;
        }
        let tmp = root.join("tmp");
        fs::remove_dir_all(&tmp)
            .and_then(|()| fs::create_dir(&tmp))
            .map_err(|source| StoreError::PrepareDir { path: tmp, source })?;
        store.repair_layers()?;
        Ok(store)
    }

    fn repair_layers(&self) -> Result<(), StoreError> {
        let layers = self.root.join("layers");
        for item in fs::read_dir(&layers).map_err(|source| StoreError::ReadRecord {
            path: layers.clone(),
            source,
        })? {
            let item = item.map_err(|source| StoreError::ReadRecord {
                path: layers.clone(),
                source,
            })?;
            let name = item.file_name().to_string_lossy().into_owned();
            let path = item.path();
            let remove = |p: &Path| {
                fs::remove_dir_all(p)
                    .or_else(|_| fs::remove_file(p))
                    .map_err(|source| StoreError::Remove {
                        path: p.into(),
                        source,
                    })
            };
            if name.starts_with(".partial-") || name.starts_with(".tmp-") {
                warn!(path = %path.display(), "removing half-written layer");
                remove(&path)?;
            } else if let Some(hex) = name
                .strip_suffix(".index.json")
                .or_else(|| name.strip_suffix(".skeleton.zst"))
            {
                if !layers.join(hex).is_dir() {
                    remove(&path)?;
                }
            } else if Digest::from_hex(&name).is_ok()
                && !layers.join(format!("{name}.index.json")).is_file()
            {
                warn!(layer = %name, "rebuilding missing layer index");
                let index = LayerIndex::scan(&path)?;
                self.write_index(&name, &index)?;
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// Where a verified blob (a manifest, a config) lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    pub fn layer_index(&self, diff_id: &Digest) -> Result<LayerIndex, StoreError> {
        Ok(LayerIndex::load(&self.index_path(&diff_id.hex()))?)
    }

    fn index_path(&self, hex: &str) -> PathBuf {
        self.root.join("layers").join(format!("{hex}.index.json"))
    }

    fn write_index(&self, hex: &str, index: &LayerIndex) -> Result<(), StoreError> {
        let path = self.index_path(hex);
        write_atomic(&path, &index.to_json())
            .map_err(|source| StoreError::WriteRecord { path, source })
    }

    /// Refuse work that would leave less than the reserve free.
    pub fn preflight(&self, needed: u64) -> Result<(), StoreError> {
        let available = available_bytes(&self.root).map_err(|source| StoreError::ReadRecord {
            path: self.root.clone(),
            source,
        })?;
        let want = needed.saturating_add(self.config.reserve_bytes);
        if available < want {
            return Err(StoreError::InsufficientSpace {
                needed,
                reserve: self.config.reserve_bytes,
                available,
                short: want - available,
            });
        }
        Ok(())
    }

    /// Unpack an uncompressed layer stream as `diff_id` (no-op if already held).
    pub fn add_layer(&self, tar: impl Read, diff_id: &Digest) -> Result<LayerIndex, StoreError> {
        if self.has_layer(diff_id) {
            return self.layer_index(diff_id);
        }
        let unpacked = unpack_layer(
            tar,
            &self.layer_path(diff_id),
            Some(diff_id),
            &self.config.unpack,
        )
        .map_err(|source| StoreError::UnpackLayer {
            diff_id: *diff_id,
            source,
        })?;
        self.write_index(&diff_id.hex(), &unpacked.index)?;
        Ok(unpacked.index)
    }

    /// Import a verified image source: preflight, unpack missing layers (checking both the
    /// blob digest and the diff_id), store manifest and config, then record the image.
    pub fn import(&self, source: &ImageSource) -> Result<ImageRecord, StoreError> {
        let missing: Vec<_> = source
            .layers
            .iter()
            .filter(|l| !self.has_layer(&l.diff_id))
            .collect();
        let mut needed = 0u64;
        for layer in &missing {
            let estimate = estimate_unpacked(&layer.path, layer.compression).map_err(|source| {
                StoreError::ReadBlob {
                    digest: layer.digest,
                    path: layer.path.clone(),
                    source,
                }
            })?;
            needed = needed.saturating_add(estimate);
        }
        self.preflight(needed)?;
        for layer in missing {
            let read_err = |source| StoreError::ReadBlob {
                digest: layer.digest,
                path: layer.path.clone(),
                source,
            };
            let file = fs::File::open(&layer.path).map_err(read_err)?;
            let mut blob = HashingReader::new(file);
            let tar = codec::decompress(&mut blob, layer.compression).map_err(read_err)?;
            self.add_layer(tar, &layer.diff_id)?;
            let (actual, _) = blob.finish().map_err(read_err)?;
            if actual != layer.digest {
                let _ = fs::remove_dir_all(self.layer_path(&layer.diff_id));
                return Err(StoreError::VerifyBlob {
                    path: layer.path.clone(),
                    expected: layer.digest,
                    actual,
                });
            }
        }
        self.put_blob(&source.manifest_digest, &source.manifest.to_json())?;
        let config_json = serde_json::to_vec(&source.config).expect("a config always serialises");
        self.put_blob(&source.config_digest, &config_json)?;
        let record = ImageRecord {
            manifest_digest: source.manifest_digest,
            config_digest: source.config_digest,
            layers: source.layers.iter().map(|l| l.diff_id).collect(),
        };
        self.add_image(&record)?;
        info!(manifest = %record.manifest_digest, layers = record.layers.len(), "image imported");
        Ok(record)
    }

    /// Store a small blob under its own digest (manifests and configs).
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.blob_path(digest);
        write_atomic(&path, bytes).map_err(|source| StoreError::WriteRecord { path, source })
    }

    pub fn add_image(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.image_path(&record.manifest_digest);
        let json = serde_json::to_vec(record).expect("a record always serialises");
        write_atomic(&path, &json).map_err(|source| StoreError::WriteRecord { path, source })
    }

    /// Forget an image; its layers stay until [`gc`](Self::gc) finds them unreferenced.
    pub fn remove_image(&self, manifest_digest: &Digest) -> Result<(), StoreError> {
        let path = self.image_path(manifest_digest);
        fs::remove_file(&path).map_err(|source| StoreError::Remove { path, source })
    }

    fn image_path(&self, manifest_digest: &Digest) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", manifest_digest.hex()))
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("images");
        let read_err = |source| StoreError::ReadRecord {
            path: dir.clone(),
            source,
        };
        let mut records = Vec::new();
        for item in fs::read_dir(&dir).map_err(read_err)? {
            let path = item.map_err(read_err)?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(|source| StoreError::ReadRecord {
                path: path.clone(),
                source,
            })?;
            match serde_json::from_slice(&bytes) {
                Ok(record) => records.push(record),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "skipping unreadable image record")
                }
            }
        }
        Ok(records)
    }

    /// Start or resume a download of `digest`.
    pub fn partial(&self, digest: &Digest) -> PartialDownload {
        let path = self.root.join("partial").join(digest.hex());
        let have = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        PartialDownload {
            digest: *digest,
            path,
            have,
            file: None,
        }
    }

    /// Verify a finished download and move it into `blobs/`.
    pub fn commit_partial(&self, download: PartialDownload) -> Result<PathBuf, StoreError> {
        let digest = download.digest;
        let verified = download.verify()?;
        let dest = self.blob_path(&digest);
        let commit_err = |source| StoreError::WriteRecord {
            path: dest.clone(),
            source,
        };
        fs::rename(&verified, &dest).map_err(commit_err)?;
        fs::File::open(self.root.join("blobs/sha256"))
            .and_then(|d| d.sync_all())
            .map_err(commit_err)?;
        Ok(dest)
    }
}
