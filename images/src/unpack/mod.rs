//! Hardened layer unpack: a hostile tar stream becomes `layers/<diff_id>/` or nothing.
//!
//! Steps: unpack into a fresh temp dir beside the destination while hashing the stream →
//! check every entry (paths, links, node kinds, mode bits, quotas) → verify the diff_id →
//! `syncfs` → rename into place → fsync the parent. Any error removes the temp dir, so a
//! failed unpack leaves nothing behind. OCI whiteouts become overlayfs whiteouts.

mod entry;
mod node;
mod path;
mod whiteout;

use std::io::Read;
use std::path::{Path, PathBuf};

use tracing::{debug, info};

pub use node::{is_opaque, OverlayXattrs};
pub use path::{sanitize as sanitize_path, PathProblem};
pub use whiteout::WhiteoutProblem;

use crate::digest::{Digest, HashingReader};
use crate::layer_index::LayerIndex;
use crate::skeleton::{skeleton_path, SkeletonRecorder};

/// Bytes a layer may carry after the tar's first end block: the second end block plus the
/// padding of a tar record (10 KiB for GNU tar) fit many times over.
pub const MAX_BYTES_AFTER_END: u64 = 1 << 20;

/// What a layer may contain and how big it may get.
#[derive(Debug, Clone)]
pub struct UnpackLimits {
    /// Sum of file sizes (apparent sizes: a sparse file counts in full).
    pub max_bytes: u64,
    /// Number of tar entries.
    pub max_entries: u64,
    /// Allow character and block devices (fifos are always allowed).
    pub allow_devices: bool,
    /// Allow setuid/setgid bits.
    pub allow_setid: bool,
    /// Where opaque-directory markers go.
    pub overlay_xattrs: OverlayXattrs,
}

impl Default for UnpackLimits {
    /// As Docker takes layers: 4 GiB, 1M entries, device nodes and setuid/setgid files kept
    /// as the image has them (every Debian-based image has `su`, `passwd` and `/dev/console`).
    /// A device node in a layer is inert: the container's device allow-list decides what may
    /// be opened, and its `/dev` is a fresh tmpfs. Everything that leaves the layer is still
    /// refused.
    fn default() -> Self {
        Self {
            max_bytes: 4 << 30,
            max_entries: 1 << 20,
            allow_devices: true,
            allow_setid: true,
            overlay_xattrs: OverlayXattrs::Trusted,
        }
    }
}

impl UnpackLimits {
    /// For operators who want no device nodes and no setuid/setgid files on their devices at
    /// all: such a layer is refused, naming the entry.
    pub fn strict() -> Self {
        Self {
            allow_devices: false,
            allow_setid: false,
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("read tar stream")]
    ReadTar(#[source] std::io::Error),
    #[error("refuse entry {path:?}: {problem}")]
    EntryPath { path: PathBuf, problem: PathProblem },
    #[error("refuse whiteout {path:?}: {problem}")]
    Whiteout {
        path: PathBuf,
        problem: WhiteoutProblem,
    },
    #[error("refuse layer: more than {limit} bytes follow the tar's end-of-archive blocks")]
    TrailingData { limit: u64 },
    #[error("refuse entry {path:?}: its parent {through:?} is a symlink, writing through it could leave the layer")]
    WriteThroughSymlink { path: PathBuf, through: PathBuf },
    #[error("refuse entry {path:?}: its parent {through:?} is not a directory")]
    ParentNotDirectory { path: PathBuf, through: PathBuf },
    #[error("refuse hardlink {path:?} to {target:?}: {problem}")]
    HardlinkTarget {
        path: PathBuf,
        target: PathBuf,
        problem: String,
    },
    #[error("refuse device node {path:?}: device nodes are not allowed in this layer")]
    DeviceNode { path: PathBuf },
    #[error("refuse entry {path:?}: mode {mode:o} has setuid/setgid bits, which are not allowed")]
    SetId { path: PathBuf, mode: u32 },
    #[error("refuse entry {path:?}: unpacking it would exceed the size quota of {limit} bytes")]
    QuotaBytes { path: PathBuf, limit: u64 },
    #[error("refuse layer: more than {limit} entries")]
    QuotaEntries { limit: u64 },
    #[error("refuse entry {path:?}: unsupported entry type {kind}")]
    UnsupportedEntry { path: PathBuf, kind: String },
    #[error("create {path:?}")]
    CreateEntry {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer digest mismatch: expected {expected}, stream has {actual}")]
    VerifyDigest { expected: Digest, actual: Digest },
    #[error("destination {path:?} already exists")]
    DestinationExists { path: PathBuf },
    #[error("commit unpacked layer to {path:?}")]
    Commit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A layer that is now in place.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    pub index: LayerIndex,
}

/// Removes a temp file if it is still there.
pub(crate) struct RemoveFile(pub(crate) PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes the temp dir unless the unpack committed.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Unpack `tar` (uncompressed) into `dest`, which must not exist. With `expected`, the layer is
/// kept only if the stream's sha256 equals it.
pub fn unpack_layer(
    tar: impl Read,
    dest: &Path,
    expected: Option<&Digest>,
    limits: &UnpackLimits,
) -> Result<Unpacked, UnpackError> {
    if dest.symlink_metadata().is_ok() {
        return Err(UnpackError::DestinationExists { path: dest.into() });
    }
    let temp_path = temp_sibling(dest);
    let create = |source| UnpackError::CreateEntry {
        path: temp_path.clone(),
        source,
    };
    std::fs::create_dir(&temp_path).map_err(create)?;
    let mut temp = TempDir(Some(temp_path.clone()));

    // The skeleton is written beside the temp dir and renamed beside the layer with it.
    let skeleton_temp = skeleton_path(&temp_path);
    let _skeleton_guard = RemoveFile(skeleton_temp.clone());
    let skeleton_file = std::fs::File::create(&skeleton_temp).map_err(create)?;
    let skip = std::cell::Cell::new(false);
    // Buffered: the tar reader asks for 512-byte headers one at a time.
    let buffered = std::io::BufReader::with_capacity(256 << 10, HashingReader::new(tar));
    let mut recorder = SkeletonRecorder::new(buffered, skeleton_file, &skip).map_err(create)?;
    let index = entry::unpack_entries(&mut recorder, &temp_path, limits, &skip)?;
    // The digest covers the whole stream, but a layer must not make us read (and decompress)
    // gigabytes of anything after its end blocks.
    let trailing = recorder
        .drain(MAX_BYTES_AFTER_END + 1)
        .map_err(UnpackError::ReadTar)?;
    if trailing > MAX_BYTES_AFTER_END {
        return Err(UnpackError::TrailingData {
            limit: MAX_BYTES_AFTER_END,
        });
    }
    let (buffered, skeleton_file) = recorder.finish().map_err(UnpackError::ReadTar)?;
    let hashing = buffered.into_inner();
    let (actual, tar_bytes) = hashing.finish().map_err(UnpackError::ReadTar)?;
    if let Some(expected) = expected {
        if *expected != actual {
            return Err(UnpackError::VerifyDigest {
                expected: *expected,
                actual,
            });
        }
    }
    let commit = |source| UnpackError::Commit {
        path: dest.into(),
        source,
    };
    skeleton_file.sync_all().map_err(commit)?;
    std::fs::rename(&skeleton_temp, skeleton_path(dest)).map_err(commit)?;
    node::sync_filesystem(&temp_path).map_err(commit)?;
    std::fs::rename(&temp_path, dest).map_err(commit)?;
    temp.0 = None;
    if let Some(parent) = dest.parent() {
        node::sync_dir(parent).map_err(commit)?;
    }
    info!(diff_id = %actual, path = %dest.display(), files = index.files.len(), tar_bytes, "layer unpacked");
    Ok(Unpacked {
        diff_id: actual,
        tar_bytes,
        index,
    })
}

fn temp_sibling(dest: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dest.with_file_name(format!(".partial-{name}-{}-{n}", std::process::id()));
    debug!(temp = %temp.display(), "unpacking into temp dir");
    temp
}
