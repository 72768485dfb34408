//! Encoding one pair: decompress the target layer to a tar, unpack the base into a scratch
//! directory through the hardened unpacker, encode, and keep the delta as a blob only when
//! it is smaller than the target's compressed blob. Scratch files go whatever happens.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use coracle_images::delta::{self, BaseLayer, EncodeOptions};
use coracle_images::unpack::{unpack_layer, UnpackLimits};

use super::catalogue::LayerRef;
use super::{DeltaOutcome, Deltas, RegistryError};
use crate::registry::io;

/// Unique scratch names for concurrent encodes.
static SCRATCH_SEQ: AtomicU64 = AtomicU64::new(0);

/// The prefix of an encode's scratch directory under the records dir.
pub(super) const SCRATCH_PREFIX: &str = ".work-";

impl Deltas {
    /// Encodes target from base; keeps it only if smaller than the target's blob.
    pub(super) fn encode(
        &self,
        target: &LayerRef,
        base: &LayerRef,
    ) -> Result<DeltaOutcome, RegistryError> {
        let started = std::time::Instant::now();
        let seq = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let scratch = ScratchDir(
            self.records
                .join(format!("{SCRATCH_PREFIX}{}-{seq}", std::process::id())),
        );
        std::fs::create_dir_all(&scratch.0).map_err(io("create delta scratch", &scratch.0))?;
        let failed = |step: &str, err: Box<dyn std::error::Error + Send + Sync>| {
            RegistryError::delta(
                format!("{step} for {} from {}", target.diff_id, base.diff_id),
                err,
            )
        };

        let new_tar = scratch.0.join("new.tar");
        let mut reader = self.decompressed(target)?;
        let mut out = File::create(&new_tar).map_err(io("create layer tar", &new_tar))?;
        std::io::copy(&mut reader, &mut out)
            .map_err(|e| failed("decompress target", Box::new(e)))?;

        let old_dir = scratch.0.join("old");
        let limits = UnpackLimits {
            max_bytes: u64::MAX,
            ..UnpackLimits::default()
        };
        let old = unpack_layer(self.decompressed(base)?, &old_dir, None, &limits)
            .map_err(|e| failed("unpack base", Box::new(e)))?;
        let bases = [BaseLayer {
            diff_id: old.diff_id,
            dir: &old_dir,
            index: &old.index,
        }];
        let delta_path = scratch.0.join("delta");
        let out = File::create(&delta_path).map_err(io("create delta", &delta_path))?;
        let report = delta::encode(
            &new_tar,
            &bases,
            &scratch.0,
            BufWriter::new(out),
            &EncodeOptions::default(),
        )
        .map_err(|e| failed("encode delta", Box::new(e)))?;
        let full = self.blobs.size_of(&target.blob).unwrap_or(0);
        tracing::info!(target = %target.diff_id, base = %base.diff_id,
            delta_bytes = report.delta_bytes, full_bytes = full,
            ms = started.elapsed().as_millis() as u64, "delta encoded");
        if report.delta_bytes >= full {
            return Ok(DeltaOutcome::NotWorth {
                delta_bytes: Some(report.delta_bytes),
            });
        }
        let (digest, _) = coracle_images::digest::digest_file(&delta_path)
            .map_err(io("hash delta", &delta_path))?;
        self.blobs.store_verified_blocking(&delta_path, &digest)?;
        Ok(DeltaOutcome::Delta {
            digest,
            bytes: report.delta_bytes,
        })
    }

    fn decompressed(&self, layer: &LayerRef) -> Result<Box<dyn Read>, RegistryError> {
        // A replica may not hold the layer yet: the bucket has it.
        self.blobs.ensure_local_blocking(&layer.blob)?;
        let path = self.blobs.path_of(&layer.blob);
        let file = File::open(&path).map_err(io("open layer blob", &path))?;
        coracle_images::codec::decompress_sniffed(file).map_err(io("decompress layer", &path))
    }

    /// Scratch dirs of encodes a killed controller left behind.
    pub(super) fn remove_stale_scratch(&self) {
        let Ok(entries) = std::fs::read_dir(&self.records) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(SCRATCH_PREFIX)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Removes an encode's scratch files whatever happened.
struct ScratchDir(PathBuf);
impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
