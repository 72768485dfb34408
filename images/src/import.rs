//! Import images from an OCI layout directory, an `oci-archive` tar, or a `docker save` /
//! `docker-archive` tar (legacy `manifest.json` layout whose layer paths may be symlinks).
//! The result, [`ImageSource`], names every blob by path; [`crate::store::Store::import`]
//! verifies and unpacks them.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::{digest_file, Digest};
use crate::media_type::{self, Compression};
use crate::oci::{Descriptor, ImageConfig, Index, Manifest, OciError, Platform};
use crate::unpack::{unpack_layer, UnpackError, UnpackLimits};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("read {path:?}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("extract archive {path:?}")]
    ExtractArchive {
        path: PathBuf,
        #[source]
        source: Box<UnpackError>,
    },
    #[error("archive {path:?} has neither index.json (OCI) nor manifest.json (docker)")]
    UnknownArchive { path: PathBuf },
    #[error("parse {path:?}")]
    ParseJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("image model in {path:?}")]
    Model {
        path: PathBuf,
        #[source]
        source: OciError,
    },
    #[error("blob {digest} does not match its content ({actual})")]
    VerifyBlob { digest: Digest, actual: Digest },
    #[error("layer path {path:?} resolves outside the archive")]
    LayerOutsideArchive { path: PathBuf },
    #[error("docker archive {path:?} has {count} images; exactly one is supported")]
    DockerImageCount { path: PathBuf, count: usize },
    #[error("layer {digest} has media type {media_type:?}, which is not a layer")]
    LayerMediaType { digest: Digest, media_type: String },
}

/// One layer blob ready to be unpacked.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub path: PathBuf,
    /// Digest of the blob as stored (compressed); equals `diff_id` for plain tars.
    pub digest: Digest,
    pub compression: Compression,
    pub diff_id: Digest,
}

/// An image whose manifest and config are verified and parsed; layers are still blobs on disk.
#[derive(Debug)]
pub struct ImageSource {
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    /// The manifest exactly as the image holds it (its digest is `manifest_digest`), so a
    /// registry storing these bytes keeps the source's digest; a docker-archive has no
    /// manifest, so its bytes are the one made from `manifest.json`.
    pub manifest_bytes: Vec<u8>,
    /// The manifest's media type as the index names it (or the manifest's own field).
    pub manifest_media_type: String,
    pub config: ImageConfig,
    pub config_digest: Digest,
    /// The config exactly as the image holds it (its digest is `config_digest`).
    pub config_bytes: Vec<u8>,
    pub layers: Vec<LayerBlob>,
    /// Extracted archive contents; removed when the source is dropped.
    scratch: Option<PathBuf>,
}

impl Drop for ImageSource {
    fn drop(&mut self) {
        if let Some(dir) = self.scratch.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ImportError> {
    fs::read(path).map_err(|source| ImportError::ReadFile {
        path: path.into(),
        source,
    })
}

fn read_verified(root: &Path, digest: &Digest) -> Result<Vec<u8>, ImportError> {
    let bytes = read(&blob_path(root, digest))?;
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(ImportError::VerifyBlob {
            digest: *digest,
            actual,
        });
    }
    Ok(bytes)
}

fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(digest.hex())
}

fn model<T>(path: &Path, r: Result<T, OciError>) -> Result<T, ImportError> {
    r.map_err(|source| ImportError::Model {
        path: path.into(),
        source,
    })
}

/// Open an OCI image layout directory and pick the manifest for `platform`.
pub fn open_layout(root: &Path, platform: &Platform) -> Result<ImageSource, ImportError> {
    let index_path = root.join("index.json");
    let mut index = model(&index_path, Index::parse(&read(&index_path)?))?;
    let mut chosen = model(&index_path, index.select(platform))?.clone();
    // A layout's index may point at a multi-arch index: descend once.
    if chosen.media_type == media_type::OCI_INDEX
        || chosen.media_type == media_type::DOCKER_MANIFEST_LIST
    {
        index = model(
            &index_path,
            Index::parse(&read_verified(root, &chosen.digest)?),
        )?;
        chosen = model(&index_path, index.select(platform))?.clone();
    }
    let manifest_bytes = read_verified(root, &chosen.digest)?;
    let manifest = model(&index_path, Manifest::parse(&manifest_bytes))?;
    let manifest_media_type = if chosen.media_type.is_empty() {
        manifest
            .media_type
            .clone()
            .unwrap_or_else(|| media_type::OCI_MANIFEST.to_string())
    } else {
        chosen.media_type.clone()
    };
    let config_bytes = read_verified(root, &manifest.config.digest)?;
    let config = model(&index_path, ImageConfig::parse(&config_bytes))?;
    model(&index_path, config.check_layers(&manifest))?;
    if chosen.platform.is_none() {
        // The index did not say; the config must.
        model(&index_path, config.check_platform(platform))?;
    }
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(d, diff_id)| {
            let compression = Compression::of_layer_media_type(&d.media_type).ok_or_else(|| {
                ImportError::LayerMediaType {
                    digest: d.digest,
                    media_type: d.media_type.clone(),
                }
            })?;
            Ok(LayerBlob {
                path: blob_path(root, &d.digest),
                digest: d.digest,
                compression,
                diff_id: *diff_id,
            })
        })
        .collect::<Result<_, ImportError>>()?;
    Ok(ImageSource {
        manifest_digest: chosen.digest,
        config_digest: manifest.config.digest,
        manifest,
        manifest_bytes,
        manifest_media_type,
        config,
        config_bytes,
        layers,
        scratch: None,
    })
}

/// Open an `oci-archive` or `docker-archive` tar. It is extracted (with the hardened
/// unpacker: archives are hostile input too) into a new dir below `scratch_parent`.
pub fn open_archive(
    archive: &Path,
    scratch_parent: &Path,
    platform: &Platform,
) -> Result<ImageSource, ImportError> {
    let file = fs::File::open(archive).map_err(|source| ImportError::ReadFile {
        path: archive.into(),
        source,
    })?;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    fs::create_dir_all(scratch_parent).map_err(|source| ImportError::ReadFile {
        path: scratch_parent.into(),
        source,
    })?;
    let scratch = scratch_parent.join(format!("import-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    // The archive's own tar holds blobs and JSON, never device nodes or setuid files.
    let limits = UnpackLimits {
        max_bytes: 64 << 30,
        ..UnpackLimits::strict()
    };
    unpack_layer(file, &scratch, None, &limits).map_err(|source| ImportError::ExtractArchive {
        path: archive.into(),
        source: Box::new(source),
    })?;
    let opened = if scratch.join("index.json").is_file() {
        open_layout(&scratch, platform)
    } else if scratch.join("manifest.json").is_file() {
        open_docker_dir(&scratch)
    } else {
        Err(ImportError::UnknownArchive {
            path: archive.into(),
        })
    };
    match opened {
        Ok(mut source) => {
            source.scratch = Some(scratch);
            Ok(source)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&scratch);
            Err(e)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    layers: Vec<String>,
}

/// The legacy `docker save` layout, already extracted.
fn open_docker_dir(root: &Path) -> Result<ImageSource, ImportError> {
    let manifest_path = root.join("manifest.json");
    let entries: Vec<DockerArchiveEntry> =
        serde_json::from_slice(&read(&manifest_path)?).map_err(|source| {
            ImportError::ParseJson {
                path: manifest_path.clone(),
                source,
            }
        })?;
    let [entry] = entries.as_slice() else {
        return Err(ImportError::DockerImageCount {
            path: manifest_path,
            count: entries.len(),
        });
    };
    let config_path = resolve_inside(root, &entry.config)?;
    let config_bytes = read(&config_path)?;
    let config = model(&config_path, ImageConfig::parse(&config_bytes))?;
    let config_digest = Digest::of(&config_bytes);
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    for (rel, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        let path = resolve_inside(root, rel)?;
        let (digest, size) = digest_file(&path).map_err(|source| ImportError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let mut head = [0u8; 4];
        let n = fs::File::open(&path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|source| ImportError::ReadFile {
                path: path.clone(),
                source,
            })?;
        let compression = Compression::sniff(&head[..n]);
        let media = match compression {
            Compression::None => media_type::DOCKER_LAYER_TAR,
            Compression::Gzip => media_type::DOCKER_LAYER_GZIP,
            Compression::Zstd => media_type::OCI_LAYER_ZSTD,
        };
        descriptors.push(Descriptor {
            media_type: media.into(),
            digest,
            size,
            platform: None,
            annotations: Default::default(),
        });
        layers.push(LayerBlob {
            path,
            digest,
            compression,
            diff_id: *diff_id,
        });
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::DOCKER_MANIFEST.into()),
        config: Descriptor {
            media_type: media_type::DOCKER_CONFIG.into(),
            digest: config_digest,
            size: config_bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        },
        layers: descriptors,
        annotations: Default::default(),
    };
    model(&manifest_path, config.check_layers(&manifest))?;
    let manifest_bytes = manifest.to_json();
    Ok(ImageSource {
        manifest_digest: Digest::of(&manifest_bytes),
        manifest,
        manifest_bytes,
        manifest_media_type: media_type::DOCKER_MANIFEST.into(),
        config,
        config_digest,
        config_bytes,
        layers,
        scratch: None,
    })
}

/// Follow symlinks (docker-archive `<id>/layer.tar` → `../<diffid>.tar`) but stay inside `root`.
fn resolve_inside(root: &Path, rel: &str) -> Result<PathBuf, ImportError> {
    let outside = || ImportError::LayerOutsideArchive { path: rel.into() };
    let clean = crate::unpack::sanitize_path(Path::new(rel)).map_err(|_| outside())?;
    let canonical_root = root
        .canonicalize()
        .map_err(|source| ImportError::ReadFile {
            path: root.into(),
            source,
        })?;
    let resolved = root
        .join(clean)
        .canonicalize()
        .map_err(|source| ImportError::ReadFile {
            path: rel.into(),
            source,
        })?;
    if !resolved.starts_with(&canonical_root) {
        return Err(outside());
    }
    Ok(resolved)
}
