//! Whole-layer deltas (format 4): for small layers, one zstd `--patch-from` frame that turns
//! the base layer's whole tar into the new one, with a header of a few bytes.
//!
//! On a small layer with a few changed text files (a pure-Python patch release), the op
//! stream's fixed costs — the tar container with `delta.json` and two digests (≈ 250 B),
//! the skeleton chunk and an op per file (≈ 200 B) — were larger than what a whole-tar tool
//! spends on everything but the changed bytes, because an unchanged stretch of the old tar
//! is one cheap match. So the encoder also tries the whole tar and keeps whichever is
//! smaller. The device has no old tar, only the unpacked layer and its skeleton, so both
//! sides rebuild the reference the same way ([`rebuild_base_tar`]); it need not equal the
//! original tar byte for byte, only be the same on both sides, and the result is checked
//! against the diff_id the caller expects.
//!
//! The frame is zstd `--patch-from`, or bsdiff (its three streams bzip2-compressed apart, as
//! bsdiff's own format) where that is smaller: a relinked native library in a small layer.
//!
//! Layout: [`WHOLE_MAGIC`], then LEB128 `new_size`, the first [`PREFIX_LEN`] bytes of the
//! base's diff_id, LEB128 `ref_len` (the rebuilt base tar's length), the method byte
//! ([`PatchMethod::ZstdRef`] or [`PatchMethod::BsdiffBz2Split`]), then the payload.
//! The delta names neither digest in full: the caller knows which layer it asked for (the
//! agent from the image config, an operator with `--diff-id`), and the base is found among
//! the layers held by its prefix. The first byte is not zstd's, so an agent that reads only
//! formats 2–3 refuses the delta and pulls the full layer.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use super::op::{invalid, read_method, read_u64, write_varint, PatchMethod};
use super::patch::{
    bsdiff_apply, bsdiff_encode, bzip2_split, unbzip2_split, zstd_ref_decode,
    zstd_ref_encode_unsized,
};
use super::{max_payload, open_in_layer};
use crate::digest::Digest;
use crate::skeleton::{header_kind_and_size, is_content_kind, read_full, skeleton_path};

/// First bytes of a whole-layer delta; a tar+zstd delta starts with zstd's magic (0x28).
pub const WHOLE_MAGIC: [u8; 2] = [0xC0, 0x04];
/// Format version of whole-layer deltas.
pub const WHOLE_FORMAT_VERSION: u32 = 4;
/// Bytes of the base's diff_id the header carries.
pub const PREFIX_LEN: usize = 8;
/// Largest base tar plus new tar tried whole: both sit in memory on the device, zstd's
/// strongest level encodes about 2 MB/s and bsdiff sorts every suffix of the base.
pub const MAX_WHOLE_BYTES: u64 = 24 << 20;
/// zstd level of the whole-layer frame: the strongest, as the layers are small.
const WHOLE_LEVEL: i32 = 22;

/// What a whole-layer delta's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeHeader {
    pub new_size: u64,
    pub base_prefix: [u8; PREFIX_LEN],
    pub ref_len: u64,
    pub method: PatchMethod,
}

impl WholeHeader {
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&WHOLE_MAGIC)?;
        write_varint(out, self.new_size)?;
        out.write_all(&self.base_prefix)?;
        write_varint(out, self.ref_len)?;
        out.write_all(&[self.method as u8])
    }

    /// The header after [`WHOLE_MAGIC`].
    pub fn read(input: &mut impl Read) -> io::Result<Self> {
        let new_size = read_u64(input)?;
        let mut base_prefix = [0u8; PREFIX_LEN];
        input.read_exact(&mut base_prefix)?;
        let ref_len = read_u64(input)?;
        let method = read_method(input)?;
        if !matches!(method, PatchMethod::ZstdRef | PatchMethod::BsdiffBz2Split) {
            return Err(invalid(format!(
                "whole-layer delta with patch method {method:?}"
            )));
        }
        Ok(Self {
            new_size,
            base_prefix,
            ref_len,
            method,
        })
    }

    /// Whether `diff_id` is the base this delta names.
    pub fn names(&self, diff_id: &Digest) -> bool {
        diff_id.as_bytes()[..PREFIX_LEN] == self.base_prefix
    }

    /// Peak memory of applying: the rebuilt base tar, the payload (and for bsdiff its
    /// decompressed streams) and the new tar, plus slack for zstd's context and buffers.
    pub fn memory_needed(&self) -> u64 {
        let payloads = match self.method {
            PatchMethod::ZstdRef => 1,
            _ => 2,
        };
        self.ref_len
            .saturating_add(self.new_size)
            .saturating_add(payloads * max_payload(self.new_size))
            .saturating_add(4 << 20)
    }
}

/// The first [`PREFIX_LEN`] bytes of a diff_id.
pub fn prefix_of(diff_id: &Digest) -> [u8; PREFIX_LEN] {
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(&diff_id.as_bytes()[..PREFIX_LEN]);
    prefix
}

/// The whole-layer delta that rebuilds `new` (the new tar) from the base layer unpacked in
/// `base_dir`, or `None` when the base cannot be rebuilt as a tar (no skeleton, the two tars
/// past [`MAX_WHOLE_BYTES`], a file missing) or the delta would not fit `budget` on the
/// device. Of zstd and bsdiff, the smaller payload is kept.
pub fn encode_whole(
    new: &[u8],
    base_diff_id: &Digest,
    base_dir: &Path,
    budget: u64,
) -> io::Result<Option<Vec<u8>>> {
    let new_size = new.len() as u64;
    let Some(room) = MAX_WHOLE_BYTES.checked_sub(new_size) else {
        return Ok(None);
    };
    let reference = match rebuild_base_tar(base_dir, room) {
        Ok(reference) => reference,
        Err(err) => {
            tracing::debug!(dir = %base_dir.display(), error = %err, "base not rebuilt as a tar; no whole-layer delta");
            return Ok(None);
        }
    };
    let mut best: Option<(WholeHeader, Vec<u8>)> = None;
    for method in [PatchMethod::ZstdRef, PatchMethod::BsdiffBz2Split] {
        let header = WholeHeader {
            new_size,
            base_prefix: prefix_of(base_diff_id),
            ref_len: reference.len() as u64,
            method,
        };
        if header.memory_needed() > budget {
            continue;
        }
        let payload = match method {
            PatchMethod::ZstdRef => zstd_ref_encode_unsized(&reference, new, WHOLE_LEVEL)?,
            _ => bzip2_split(&bsdiff_encode(&reference, new)?)?,
        };
        if best.as_ref().is_none_or(|(_, p)| payload.len() < p.len()) {
            best = Some((header, payload));
        }
    }
    let Some((header, payload)) = best else {
        return Ok(None);
    };
    let mut delta = Vec::with_capacity(payload.len() + 32);
    header.write(&mut delta)?;
    delta.extend_from_slice(&payload);
    Ok(Some(delta))
}

/// Rebuild the new tar from a whole-layer delta's payload (the rest of the delta after its
/// header) and the base layer's tar as [`rebuild_base_tar`] made it.
pub fn decode_whole(
    header: &WholeHeader,
    reference: &[u8],
    payload: &mut impl Read,
) -> io::Result<Vec<u8>> {
    if reference.len() as u64 != header.ref_len {
        return Err(invalid(format!(
            "the base layer rebuilds as a {}-byte tar, the delta was made from {} bytes",
            reference.len(),
            header.ref_len
        )));
    }
    let limit = max_payload(header.new_size);
    let mut bytes = Vec::new();
    payload.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(invalid(format!(
            "whole-layer payload is larger than {limit} bytes"
        )));
    }
    let out_len = usize::try_from(header.new_size)
        .map_err(|_| invalid(format!("new layer of {} bytes", header.new_size)))?;
    match header.method {
        PatchMethod::ZstdRef => zstd_ref_decode(reference, &bytes, out_len),
        _ => {
            let raw = unbzip2_split(&bytes, header.new_size)?;
            drop(bytes);
            bsdiff_apply(reference, &raw, out_len)
        }
    }
}

/// The base layer's tar as both sides rebuild it: its skeleton (kept beside the unpacked
/// layer) with each regular file's content read back from the layer. At most `limit` bytes.
pub fn rebuild_base_tar(dir: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let skeleton = File::open(skeleton_path(dir))?;
    let mut tar = zero_filled(zstd::stream::read::Decoder::new(skeleton)?, limit)?;
    for slot in content_slots(&tar)? {
        let mut file = open_in_layer(dir, Path::new(&slot.path))?;
        let len = file.metadata()?.len();
        if len != slot.size {
            return Err(invalid(format!(
                "{} is {len} bytes, its tar header says {}",
                slot.path, slot.size
            )));
        }
        file.read_exact(&mut tar[slot.range()])?;
    }
    Ok(tar)
}

/// A regular file's content inside the rebuilt tar.
struct Slot {
    path: String,
    offset: usize,
    size: u64,
}

impl Slot {
    fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.size as usize
    }
}

/// The raw skeleton with zeros where each regular file's content was: a tar that parses.
fn zero_filled(raw: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut raw = BufReader::new(raw);
    let too_large = || invalid(format!("base tar is larger than {limit} bytes"));
    let mut tar = Vec::new();
    let mut block = [0u8; 512];
    loop {
        let n = read_full(&mut raw, &mut block)?;
        tar.extend_from_slice(&block[..n]);
        if tar.len() as u64 > limit {
            return Err(too_large());
        }
        if n < block.len() {
            return Ok(tar);
        }
        if block.iter().all(|b| *b == 0) {
            continue;
        }
        let Some((kind, size)) = header_kind_and_size(&block) else {
            // Not tar from here on (as the compact form treats it): the rest as it is.
            (&mut raw).take(limit + 1).read_to_end(&mut tar)?;
            return if tar.len() as u64 > limit {
                Err(too_large())
            } else {
                Ok(tar)
            };
        };
        let padding = (512 - size % 512) % 512;
        let after = (tar.len() as u64)
            .checked_add(size)
            .and_then(|n| n.checked_add(padding))
            .filter(|n| *n <= limit)
            .ok_or_else(too_large)?;
        if is_content_kind(kind) && size > 0 {
            tar.resize(tar.len() + size as usize, 0);
            (&mut raw).take(padding).read_to_end(&mut tar)?;
        } else {
            (&mut raw).take(size + padding).read_to_end(&mut tar)?;
        }
        if tar.len() as u64 != after {
            return Ok(tar); // the skeleton ended inside an entry
        }
    }
}

/// Where each regular file's content sits in the zero-filled tar, with its path as the
/// unpacker wrote it (long names and PAX paths resolved).
fn content_slots(tar: &[u8]) -> io::Result<Vec<Slot>> {
    let mut archive = tar::Archive::new(io::Cursor::new(tar));
    let mut slots = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let kind = entry.header().entry_type();
        if (kind.is_file() || kind == tar::EntryType::Continuous) && entry.size() > 0 {
            let offset = usize::try_from(entry.raw_file_position())
                .map_err(|_| invalid("entry offset out of range".into()))?;
            let end = offset as u64 + entry.size();
            if end > tar.len() as u64 {
                return Err(invalid(format!(
                    "entry {:?} runs past the skeleton",
                    entry.path()?
                )));
            }
            slots.push(Slot {
                path: entry
                    .path()?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_owned(),
                offset,
                size: entry.size(),
            });
        }
    }
    Ok(slots)
}
