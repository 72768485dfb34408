//! Delta layers: rebuild a new layer's exact tar stream from files the device already holds.
//!
//! A delta is a tar+zstd artifact (media type [`crate::media_type::CORACLE_DELTA`]) holding two
//! entries: `delta.json` ([`DeltaHeader`]: new diff_id and size, base diff_ids, window size)
//! and `ops`, a stream of [`op::Op`]s: literal bytes (tar headers, padding, new content),
//! copies of old files or ranges, and patches of old file windows (zstd `--patch-from` or
//! bsdiff, whichever is smallest per window). Tar headers come from the new layer's
//! skeleton, compressed against the old layer's skeleton, both in compact form (no padding
//! after file content, header checksums as stand-ins: [`crate::skeleton`]); the reader
//! synthesises the padding and restores the checksums. Encoding ([`encode`]) may be slow; applying
//! ([`DeltaReader`]) streams with memory bounded by the window size, and the result is
//! accepted only if its sha256 equals the new diff_id.
//!
//! For a small layer over one base the encoder also makes a whole-layer delta ([`whole`]):
//! one patch of the whole new tar against the base's whole tar, rebuilt on both sides from
//! the unpacked layer, behind a header of a few bytes; the smaller of the two is kept.

mod apply;
pub mod batch;
mod batch_encoder;
mod encode;
mod gaps;
pub mod matcher;
pub mod op;
pub mod patch;
pub mod whole;
pub mod window;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use apply::{
    apply_to_file, apply_to_file_with, apply_to_store, open_in_layer, BaseDir, BaseName,
    DeltaReader,
};
pub use encode::{encode, full_zstd_size, BaseLayer, EncodeOptions, EncodeReport};

use crate::digest::Digest;

/// Newest delta format version this build reads and writes. 2: skeletons are diffed without
/// file padding (the `Gap` op implies it; `RawGap` keeps padding that is not zeros) and with
/// normalised header checksums; a version 1 delta would rebuild a wrong tar, so it is
/// refused by version. 3: adds bsdiff with its three streams compressed apart
/// ([`op::PatchMethod::BsdiffBz2Split`]). The encoder stamps the oldest version that holds
/// the ops it used, so a delta where nothing new paid off stays readable by version-2 agents,
/// and one that needs 3 is refused by them by version, before anything is written.
/// 4: a whole-layer delta ([`whole`]): not a tar container but a header of a few bytes and
/// one zstd frame over the base's whole tar, for small layers where that is smaller.
pub const FORMAT_VERSION: u32 = whole::WHOLE_FORMAT_VERSION;
/// Newest version of the op stream in the tar+zstd container (`delta.json`'s `version`).
pub const OPS_FORMAT_VERSION: u32 = 3;
/// Oldest delta format version this build reads (and the one it writes when it can).
pub const OLDEST_FORMAT_VERSION: u32 = 2;
/// Window log of the outer zstd stream: 8 MiB of decoder history.
pub const OUTER_WINDOW_LOG: u32 = 23;
/// Output size of one skeleton chunk; its reference is at most twice this.
pub const SKELETON_CHUNK: u64 = 1 << 20;
/// Default memory budget for applying a delta.
pub const DEFAULT_BUDGET: u64 = 64 << 20;
/// A delta that is larger than this share of the full zstd layer does not pay.
pub const PAYS_BELOW_RATIO: f64 = 0.9;

/// `delta.json`: what the delta rebuilds and from what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaHeader {
    pub version: u32,
    pub new_diff_id: Digest,
    pub new_size: u64,
    /// Layers the ops refer to by index, in order.
    pub bases: Vec<Digest>,
    /// Largest output window of a patch op; reference windows are at most twice this.
    pub window: u64,
}

impl DeltaHeader {
    /// Peak memory of applying: outer zstd history + reference window + output window +
    /// payload and its decompressed form (each at most [`max_payload`]) + a skeleton chunk with
    /// its reference and payload + slack for buffers.
    pub fn memory_needed(&self) -> u64 {
        // reference 2W + output W + payload 1.25W + decompressed bzip2 bsdiff 1.25W (+1 MiB).
        (1u64 << OUTER_WINDOW_LOG)
            + 2 * self.window
            + self.window
            + 2 * max_payload(self.window)
            + (5 << 20)
            + 4 * SKELETON_CHUNK
    }
}

/// Window size that keeps applying within `budget` (see [`DeltaHeader::memory_needed`]).
pub fn window_for_budget(budget: u64) -> u64 {
    let spare = budget.saturating_sub((1u64 << OUTER_WINDOW_LOG) + (5 << 20) + 4 * SKELETON_CHUNK);
    (spare * 2 / 11).max(64 << 10)
}

/// Largest patch payload (and decompressed bsdiff payload) for an output window.
pub fn max_payload(window: u64) -> u64 {
    window + window / 4
}

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("read new layer tar {path:?}")]
    ReadNewTar {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read old file {path:?}")]
    ReadOldFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write delta")]
    WriteDelta(#[source] std::io::Error),
    #[error("read delta")]
    ReadDelta(#[source] std::io::Error),
    #[error("delta entry {found:?} where {expected:?} was expected")]
    Layout {
        expected: &'static str,
        found: String,
    },
    #[error("parse delta.json")]
    ParseHeader(#[source] serde_json::Error),
    #[error("delta format version {found} is not supported (this build reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}; encode the delta again)")]
    Version { found: u32 },
    #[error("the delta rebuilds layer {found}, not {expected}")]
    WrongLayer { expected: Digest, found: Digest },
    #[error("a whole-layer delta does not name the layer it rebuilds: give its diff_id")]
    NeedsDiffId,
    #[error("rebuild base layer {dir:?} as a tar")]
    RebuildBase {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("delta needs {needed} bytes of memory to apply, the budget is {budget} bytes")]
    Budget { needed: u64, budget: u64 },
    #[error("delta is built on {expected} base layers, {given} were given")]
    BaseCount { expected: usize, given: usize },
    #[error("base layer {base} of the delta is not in the store")]
    MissingBase { base: BaseName },
    #[error("rebuild layer {diff_id}")]
    Rebuild {
        diff_id: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("rebuilt layer is {actual} ({bytes} bytes), the delta promised {expected}")]
    VerifyDigest {
        expected: Digest,
        actual: Digest,
        bytes: u64,
    },
    #[error("write rebuilt layer {path:?}")]
    WriteOutput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store rebuilt layer")]
    Store(#[source] Box<crate::store::StoreError>),
}
