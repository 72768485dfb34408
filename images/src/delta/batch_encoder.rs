//! The encoder's side of batches ([`super::batch`]): patch a run of small changed files as
//! one stream and keep it only where that is smaller than patching them one by one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use tracing::debug;

use super::batch::BatchPart;
use super::encode::{cheapest, OpWriter, Region};
use super::matcher::{Counterpart, OldFiles};
use super::op::{Op, PatchMethod};
use super::patch::{best_bsdiff, zstd_ref_encode};
use super::{BaseLayer, DeltaError, EncodeOptions};

/// Bytes an op costs in the stream besides its payload, roughly: a per-file patch op with
/// its lengths, against a `FromBatch` op.
const PATCH_OP_BYTES: usize = 8;

/// Decide the batch of `members` (changed files in tar order with their old counterparts)
/// and, if it is smaller than their own patches, write its `Batch` op and payload; the
/// caller then serves the members with `FromBatch`. Returns whether it did.
pub(super) fn emit_batch_if_smaller(
    enc: &mut OpWriter,
    new: &File,
    members: &[(&Region, &Counterpart)],
    old: &OldFiles,
    bases: &[BaseLayer<'_>],
    window: u64,
    options: &EncodeOptions,
) -> Result<bool, DeltaError> {
    let mut parts = Vec::with_capacity(members.len());
    let (mut reference, mut output) = (Vec::new(), Vec::new());
    let mut own_cost = 0usize;
    for (region, counterpart) in members {
        let Counterpart::Similar { from, size } = **counterpart else {
            return Ok(false); // the planner only batches changed files
        };
        let read_new = |source| DeltaError::ReadNewTar {
            path: region.path.clone().into(),
            source,
        };
        let old_path = bases[usize::from(from.base)].dir.join(old.path(&from));
        let read_old = |source| DeltaError::ReadOldFile {
            path: old_path.clone(),
            source,
        };
        let mut new_bytes = vec![0u8; region.size as usize];
        new.read_exact_at(&mut new_bytes, region.offset)
            .map_err(read_new)?;
        let mut old_bytes = vec![0u8; size as usize];
        File::open(&old_path)
            .and_then(|f| f.read_exact_at(&mut old_bytes, 0))
            .map_err(read_old)?;
        // What this file costs on its own: literal below the patch threshold, else its
        // cheapest patch (as `encode_region` would choose).
        own_cost += PATCH_OP_BYTES
            + if region.size < options.min_patch_size {
                zstd::bulk::compress(&new_bytes, options.level)
                    .map_err(DeltaError::WriteDelta)?
                    .len()
            } else {
                cheapest(&old_bytes, &new_bytes, options.level)
                    .map_err(DeltaError::WriteDelta)?
                    .cost
            };
        parts.push(BatchPart {
            from,
            offset: 0,
            len: size,
        });
        reference.extend_from_slice(&old_bytes);
        output.extend_from_slice(&new_bytes);
    }
    let write = DeltaError::WriteDelta;
    let zstd = zstd_ref_encode(&reference, &output, options.level).map_err(write)?;
    let zstd_len = zstd.len();
    let (mut method, mut payload, mut cost) = (PatchMethod::ZstdRef, zstd, zstd_len);
    let (bs_method, bs_payload, bs_cost) =
        best_bsdiff(&reference, &output, options.level).map_err(write)?;
    if bs_cost < cost {
        (method, payload, cost) = (bs_method, bs_payload, bs_cost);
    }
    debug!(
        files = members.len(),
        bytes = output.len(),
        cost,
        own_cost,
        ?method,
        "batch measured"
    );
    if cost + PATCH_OP_BYTES * members.len() / 4 >= own_cost
        || payload.len() as u64 > super::max_payload(window)
    {
        return Ok(false);
    }
    enc.op(&Op::Batch {
        method,
        parts,
        out_len: output.len() as u64,
        payload_len: payload.len() as u64,
    })
    .map_err(write)?;
    io::Write::write_all(&mut enc.out, &payload).map_err(write)?;
    Ok(true)
}
