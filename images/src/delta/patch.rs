//! The two patch methods: zstd with the old window as reference prefix (great on text and
//! interpreted code) and bsdiff (suffix-array matches + bytewise differences: great on native
//! binaries, where code moves shift addresses by small constant amounts).

use std::io::{self, Read};

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter};

use super::op::{invalid, PatchMethod};

/// zstd `--patch-from`: compress `new` against `reference`.
pub fn zstd_ref_encode(reference: &[u8], new: &[u8], level: i32) -> io::Result<Vec<u8>> {
    zstd_ref_encode_framed(reference, new, level, true)
}

/// [`zstd_ref_encode`] without the frame's content size (the caller's header carries it):
/// a few bytes less, which counts on a delta of a few hundred bytes.
pub fn zstd_ref_encode_unsized(reference: &[u8], new: &[u8], level: i32) -> io::Result<Vec<u8>> {
    zstd_ref_encode_framed(reference, new, level, false)
}

fn zstd_ref_encode_framed(
    reference: &[u8],
    new: &[u8],
    level: i32,
    content_size: bool,
) -> io::Result<Vec<u8>> {
    let mut cctx = CCtx::create();
    let total = (reference.len() + new.len()).max(1) as u64;
    let window_log = (64 - (total - 1).leading_zeros()).clamp(10, 30);
    let zerr = |code: usize| io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)));
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zerr)?;
    cctx.set_parameter(CParameter::WindowLog(window_log))
        .map_err(zerr)?;
    cctx.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .map_err(zerr)?;
    cctx.set_parameter(CParameter::ContentSizeFlag(content_size))
        .map_err(zerr)?;
    cctx.set_pledged_src_size(Some(new.len() as u64))
        .map_err(zerr)?;
    cctx.ref_prefix(reference).map_err(zerr)?;
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(new.len()));
    cctx.compress2(&mut out, new).map_err(zerr)?;
    Ok(out)
}

/// Decode a `zstd_ref_encode` payload into exactly `out_len` bytes. One-shot decoding writes
/// straight into `out`, so no separate zstd window buffer is allocated.
pub fn zstd_ref_decode(reference: &[u8], payload: &[u8], out_len: usize) -> io::Result<Vec<u8>> {
    let mut dctx = DCtx::create();
    let zerr = |code: usize| invalid(format!("zstd patch: {}", zstd_safe::get_error_name(code)));
    // The encoder caps the window at 2^30, which is also the most 32-bit zstd accepts.
    dctx.set_parameter(DParameter::WindowLogMax(30))
        .map_err(zerr)?;
    dctx.ref_prefix(reference).map_err(zerr)?;
    let mut out = Vec::with_capacity(out_len);
    let n = dctx.decompress(&mut out, payload).map_err(zerr)?;
    if n != out_len {
        return Err(invalid(format!(
            "zstd patch produced {n} bytes, expected {out_len}"
        )));
    }
    Ok(out)
}

/// bsdiff payload: `count: u32`, `count × (add: u64, copy: u64, seek: i64)`, diff bytes, extra
/// bytes. Left uncompressed: the delta's outer zstd compresses the mostly-zero diff bytes
/// better than bsdiff's own bzip2.
pub fn bsdiff_encode(reference: &[u8], new: &[u8]) -> io::Result<Vec<u8>> {
    let mut patch = Vec::new();
    qbsdiff::Bsdiff::new(reference, new)
        .compression_level(1)
        .parallel_scheme(qbsdiff::ParallelScheme::Never)
        .compare(io::Cursor::new(&mut patch))?;
    // BSDIFF40 header: magic, bz(ctrl) len, bz(diff) len, new size; then the three bz streams.
    let field = |at: usize| decode_offt(&patch[at..at + 8]) as usize;
    if patch.len() < 32 || &patch[..8] != b"BSDIFF40" {
        return Err(io::Error::other("qbsdiff wrote no BSDIFF40 header"));
    }
    let (ctrl_len, diff_len) = (field(8), field(16));
    let unbz = |bytes: &[u8]| -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        bzip2::read::BzDecoder::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    };
    let ctrl = unbz(&patch[32..32 + ctrl_len])?;
    let diff = unbz(&patch[32 + ctrl_len..32 + ctrl_len + diff_len])?;
    let extra = unbz(&patch[32 + ctrl_len + diff_len..])?;
    let count = ctrl.len() / 24;
    let mut out = Vec::with_capacity(4 + ctrl.len() + diff.len() + extra.len());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for c in ctrl.chunks_exact(24) {
        out.extend_from_slice(&(decode_offt(&c[0..8]) as u64).to_le_bytes());
        out.extend_from_slice(&(decode_offt(&c[8..16]) as u64).to_le_bytes());
        out.extend_from_slice(&decode_offt(&c[16..24]).to_le_bytes());
    }
    out.extend_from_slice(&diff);
    out.extend_from_slice(&extra);
    Ok(out)
}

/// The smallest bsdiff form for the outer zstd stream: raw (cost: its zstd size), bzip2 of
/// the whole payload, or bzip2 of its three streams apart (controls, diff bytes, extra
/// bytes), as bsdiff's own format does: each stream then gets statistics of its own,
/// which on relinked binaries (mostly-zero diff bytes, code-like extra bytes) is smaller.
pub fn best_bsdiff(
    reference: &[u8],
    new: &[u8],
    level: i32,
) -> io::Result<(PatchMethod, Vec<u8>, usize)> {
    let raw = bsdiff_encode(reference, new)?;
    let raw_cost = zstd::bulk::compress(&raw, level)?.len();
    let bz = bzip2_best(&raw)?;
    let split = bzip2_split(&raw)?;
    let mut best = (PatchMethod::Bsdiff, raw_cost);
    if bz.len() < best.1 {
        best = (PatchMethod::BsdiffBz2, bz.len());
    }
    if split.len() < best.1 {
        best = (PatchMethod::BsdiffBz2Split, split.len());
    }
    Ok(match best.0 {
        PatchMethod::BsdiffBz2 => (best.0, bz, best.1),
        PatchMethod::BsdiffBz2Split => (best.0, split, best.1),
        _ => (best.0, raw, best.1),
    })
}

fn bzip2_best(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    io::Write::write_all(&mut bz, bytes)?;
    bz.finish()
}

/// A raw bsdiff payload cut at its stream boundaries: (controls with their count, diff
/// bytes, extra bytes).
fn bsdiff_streams(raw: &[u8]) -> io::Result<[&[u8]; 3]> {
    let bad = |what: &str| invalid(format!("bsdiff payload: {what}"));
    let count = u32::from_le_bytes(
        raw.get(..4)
            .ok_or_else(|| bad("truncated"))?
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    let ctrl_end = count
        .checked_mul(24)
        .and_then(|n| n.checked_add(4))
        .ok_or_else(|| bad("control count"))?;
    let ctrls = raw
        .get(..ctrl_end)
        .ok_or_else(|| bad("truncated controls"))?;
    let mut add = 0usize;
    for c in ctrls[4..].chunks_exact(24) {
        add = add
            .checked_add(u64_at(c, 0) as usize)
            .ok_or_else(|| bad("add overflow"))?;
    }
    let diff_end = ctrl_end
        .checked_add(add)
        .filter(|end| *end <= raw.len())
        .ok_or_else(|| bad("truncated diff"))?;
    Ok([ctrls, &raw[ctrl_end..diff_end], &raw[diff_end..]])
}

/// `BsdiffBz2Split` payload: the bzip2 sizes of the control and diff streams (u32 LE
/// each), then the three bzip2 streams.
pub(super) fn bzip2_split(raw: &[u8]) -> io::Result<Vec<u8>> {
    let [ctrls, diff, extra] = bsdiff_streams(raw)?;
    let (ctrls, diff, extra) = (bzip2_best(ctrls)?, bzip2_best(diff)?, bzip2_best(extra)?);
    let len = |v: &Vec<u8>| u32::try_from(v.len()).map_err(io::Error::other);
    let mut out = Vec::with_capacity(8 + ctrls.len() + diff.len() + extra.len());
    out.extend_from_slice(&len(&ctrls)?.to_le_bytes());
    out.extend_from_slice(&len(&diff)?.to_le_bytes());
    for stream in [ctrls, diff, extra] {
        out.extend_from_slice(&stream);
    }
    Ok(out)
}

/// Expand a `BsdiffBz2Split` payload of an op producing `out_len` bytes back into the raw
/// bsdiff payload, under the same limit as [`unbzip2`] for all three streams together.
pub fn unbzip2_split(payload: &[u8], out_len: u64) -> io::Result<Vec<u8>> {
    let bad = |what: &str| invalid(format!("split bzip2 bsdiff payload: {what}"));
    let len_at = |at: usize| -> io::Result<usize> {
        let bytes = payload
            .get(at..at + 4)
            .ok_or_else(|| bad("truncated sizes"))?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
    };
    let (ctrl_len, diff_len) = (len_at(0)?, len_at(4)?);
    let diff_start = 8usize
        .checked_add(ctrl_len)
        .filter(|end| *end <= payload.len())
        .ok_or_else(|| bad("control stream runs past the payload"))?;
    let extra_start = diff_start
        .checked_add(diff_len)
        .filter(|end| *end <= payload.len())
        .ok_or_else(|| bad("diff stream runs past the payload"))?;
    let limit = super::max_payload(out_len) + (1 << 20);
    let mut out = Vec::with_capacity(usize::try_from(limit + 1).unwrap_or(usize::MAX));
    for stream in [
        &payload[8..diff_start],
        &payload[diff_start..extra_start],
        &payload[extra_start..],
    ] {
        let room = limit + 1 - out.len() as u64;
        bzip2::read::BzDecoder::new(stream)
            .take(room)
            .read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(bad(&format!("expands past {limit} bytes")));
        }
    }
    Ok(out)
}

/// Decompress a bzip2 bsdiff payload of an op producing `out_len` bytes; a payload that
/// expands past what such a patch can hold is corrupt (and would blow the memory budget).
pub fn unbzip2(payload: &[u8], out_len: u64) -> io::Result<Vec<u8>> {
    let limit = super::max_payload(out_len) + (1 << 20);
    // Sized once: growing by doubling would briefly need twice the memory.
    let mut out = Vec::with_capacity(usize::try_from(limit + 1).unwrap_or(usize::MAX));
    bzip2::read::BzDecoder::new(payload)
        .take(limit + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(invalid(format!(
            "bzip2 bsdiff payload expands past {limit} bytes"
        )));
    }
    Ok(out)
}

/// bsdiff's sign-magnitude integers.
fn decode_offt(b: &[u8]) -> i64 {
    let x = u64::from_le_bytes(b.try_into().expect("caller passes 8 bytes"));
    let magnitude = (x & !(1 << 63)) as i64;
    if x >> 63 == 1 {
        -magnitude
    } else {
        magnitude
    }
}

/// Apply a bsdiff payload to `reference`, producing exactly `out_len` bytes. Every index is
/// checked: a corrupt payload is an error, never a panic.
pub fn bsdiff_apply(reference: &[u8], payload: &[u8], out_len: usize) -> io::Result<Vec<u8>> {
    let bad = |what: &str| invalid(format!("bsdiff payload: {what}"));
    let [counted_ctrls, mut data, mut extra] = bsdiff_streams(payload)?;
    let ctrls = &counted_ctrls[4..];
    let mut out = Vec::with_capacity(out_len);
    let mut pos: i64 = 0;
    for c in ctrls.chunks_exact(24) {
        let (add, copy, seek) = (
            u64_at(c, 0) as usize,
            u64_at(c, 8) as usize,
            u64_at(c, 16) as i64,
        );
        if out.len() + add + copy > out_len {
            return Err(bad("output longer than declared"));
        }
        let start = usize::try_from(pos).map_err(|_| bad("negative position"))?;
        let old = reference
            .get(start..start + add)
            .ok_or_else(|| bad("reads past the reference"))?;
        let (d, rest) = data.split_at(add);
        out.extend(old.iter().zip(d).map(|(o, d)| o.wrapping_add(*d)));
        data = rest;
        let (e, rest) = extra
            .split_at_checked(copy)
            .ok_or_else(|| bad("truncated extra"))?;
        out.extend_from_slice(e);
        extra = rest;
        pos = pos
            .checked_add(add as i64)
            .and_then(|p| p.checked_add(seek))
            .ok_or_else(|| bad("seek overflow"))?;
    }
    if out.len() != out_len {
        return Err(bad("output shorter than declared"));
    }
    Ok(out)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(
        b[at..at + 8]
            .try_into()
            .expect("controls are 24-byte chunks"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions() -> (Vec<u8>, Vec<u8>) {
        let old: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 7).to_le_bytes())
            .collect();
        let mut new = old.clone();
        // Shift a "code" region by one word and bump embedded addresses, like a relinked binary.
        new.splice(1000..1000, [1, 2, 3, 4]);
        for chunk in new[50_000..90_000].chunks_mut(16) {
            chunk[0] = chunk[0].wrapping_add(8);
        }
        (old, new)
    }

    #[test]
    fn zstd_ref_round_trips_and_beats_plain_zstd() {
        let (old, new) = versions();
        let patch = zstd_ref_encode(&old, &new, 19).unwrap();
        assert_eq!(zstd_ref_decode(&old, &patch, new.len()).unwrap(), new);
        assert!(patch.len() * 10 < zstd::bulk::compress(&new, 19).unwrap().len());
    }

    #[test]
    fn bsdiff_round_trips() {
        let (old, new) = versions();
        let payload = bsdiff_encode(&old, &new).unwrap();
        assert_eq!(bsdiff_apply(&old, &payload, new.len()).unwrap(), new);
    }

    #[test]
    fn split_bzip2_bsdiff_round_trips() {
        let (old, new) = versions();
        let raw = bsdiff_encode(&old, &new).unwrap();
        let split = bzip2_split(&raw).unwrap();
        assert_eq!(unbzip2_split(&split, new.len() as u64).unwrap(), raw);
    }

    #[test]
    fn corrupt_split_bzip2_payload_is_an_error_naming_the_stream() {
        let (old, new) = versions();
        let split = bzip2_split(&bsdiff_encode(&old, &new).unwrap()).unwrap();
        let mut long_ctrl = split.clone();
        long_ctrl[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = unbzip2_split(&long_ctrl, new.len() as u64).unwrap_err();
        assert!(err.to_string().contains("control stream"), "{err}");
        let err = unbzip2_split(&split[..5], new.len() as u64).unwrap_err();
        assert!(err.to_string().contains("truncated sizes"), "{err}");
        let mut garbled = split.clone();
        let last = garbled.len() - 20;
        garbled[last..].fill(0x55);
        assert!(unbzip2_split(&garbled, new.len() as u64).is_err());
        // A payload whose streams expand past what the op may produce.
        let zeros = bzip2_split(&{
            let mut raw = 0u32.to_le_bytes().to_vec();
            raw.resize(8 << 20, 0);
            raw
        })
        .unwrap();
        let err = unbzip2_split(&zeros, 1000).unwrap_err();
        assert!(err.to_string().contains("expands past"), "{err}");
    }

    #[test]
    fn corrupt_bsdiff_payload_is_an_error() {
        let (old, new) = versions();
        let mut payload = bsdiff_encode(&old, &new).unwrap();
        payload[4] = 0xff; // first add length now huge
        payload[11] = 0x7f;
        assert!(bsdiff_apply(&old, &payload, new.len()).is_err());
        assert!(bsdiff_apply(&old, &payload[..3], new.len()).is_err());
        assert!(zstd_ref_decode(&old, b"not zstd", 10).is_err());
    }
}
