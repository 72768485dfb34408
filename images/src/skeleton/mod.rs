//! A layer's tar skeleton: its tar stream minus the contents of regular files (headers, PAX
//! and GNU records, padding, end blocks), zstd-compressed beside the unpacked layer as
//! `<layer dir>.skeleton.zst`. A delta compresses the new layer's skeleton against the old
//! one, so unchanged tar headers cost almost nothing, as they do for whole-tar diff tools.
//! It is recorded while unpacking, from the same bytes whose digest is verified, and stored
//! raw (with the padding after each file); deltas read it through [`compact_skeleton`],
//! which drops that padding, so a changed file size does not shift the headers after it.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

mod compact;
mod windows;

pub use compact::CompactReader;
pub use windows::{SkeletonWindows, MAX_REWINDS};

/// `layers/<hex>` → `layers/<hex>.skeleton.zst`.
pub fn skeleton_path(layer_dir: &Path) -> PathBuf {
    let mut name = layer_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".skeleton.zst");
    layer_dir.with_file_name(name)
}

/// Copies what is read through it into a zstd stream, except while `skip` is set.
pub struct SkeletonRecorder<'a, R, W: Write> {
    inner: R,
    out: zstd::stream::write::Encoder<'static, W>,
    skip: &'a Cell<bool>,
}

impl<R, W: Write> std::fmt::Debug for SkeletonRecorder<'_, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkeletonRecorder").finish_non_exhaustive()
    }
}

impl<'a, R: Read, W: Write> SkeletonRecorder<'a, R, W> {
    pub fn new(inner: R, out: W, skip: &'a Cell<bool>) -> io::Result<Self> {
        Ok(Self {
            inner,
            out: zstd::stream::write::Encoder::new(out, 3)?,
            skip,
        })
    }

    /// Record at most `limit` more bytes of the stream; how many there were.
    pub fn drain(&mut self, limit: u64) -> io::Result<u64> {
        io::copy(&mut self.take(limit), &mut io::sink())
    }

    /// Record the rest of the stream, finish the zstd frame, and give back the reader.
    pub fn finish(mut self) -> io::Result<(R, W)> {
        io::copy(&mut self, &mut io::sink())?;
        let out = self.out.finish()?;
        Ok((self.inner, out))
    }
}

impl<R: Read, W: Write> Read for SkeletonRecorder<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.skip.get() {
            self.out.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// Raw skeleton → compact form: every block as it is, except the zero padding that followed
/// each regular file's (absent) content, which a tar header's size implies. Deltas diff
/// skeletons in this form, so a file whose size changed alters its own header and nothing
/// after it. A stream that stops parsing as tar is passed through unchanged from there on:
/// the compact form is only ever a diff reference, so it must be deterministic, not exact.
///
/// `sink` gets the compact bytes in order and returns `false` to stop early.
pub fn compact_skeleton(raw: impl Read, mut sink: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    let mut compact = CompactReader::new(raw);
    let mut buf = [0u8; 8192];
    loop {
        let n = read_full(&mut compact, &mut buf)?;
        if n == 0 || !sink(&buf[..n]) || n < buf.len() {
            return Ok(());
        }
    }
}

/// Entry kinds whose data is file content, left out of the skeleton (as `encode` finds them).
pub fn is_content_kind(kind: u8) -> bool {
    matches!(kind, b'0' | b'\0' | b'7')
}

/// Type flag and size of a block that is a tar header with a valid checksum.
pub(crate) fn header_kind_and_size(block: &[u8; 512]) -> Option<(u8, u64)> {
    let header = tar::Header::from_byte_slice(block);
    let stored = header.cksum().ok()?;
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    if stored != computed {
        return None;
    }
    Some((block[156], header.entry_size().ok()?))
}

pub(crate) fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Length of a skeleton file in compact form.
pub fn compact_skeleton_len(path: &Path) -> io::Result<u64> {
    let mut len = 0u64;
    compact_skeleton(zstd::stream::read::Decoder::new(File::open(path)?)?, |b| {
        len += b.len() as u64;
        true
    })?;
    Ok(len)
}

/// Length of the run of skeleton at the start of `compact` that a plain tar puts before the
/// next file's content: headers (with their PAX/GNU records, and end blocks) up to and
/// including the next header of a regular file with content, else all of `compact`. The
/// delta's op codec codes a gap's length as the difference from this prediction. It looks
/// at most [`PREDICTION_BLOCKS`] blocks ahead: a delta's reader runs it per gap op, so a
/// crafted delta must not make it scan a whole chunk each time.
pub fn headers_before_content(compact: &[u8]) -> u64 {
    let compact = &compact[..compact.len().min(PREDICTION_BLOCKS * 512)];
    let mut at = 0usize;
    while let Some(block) = compact.get(at..at + 512) {
        at += 512;
        let block: &[u8; 512] = block.try_into().expect("a 512-byte slice");
        if block.iter().all(|b| *b == 0) {
            continue;
        }
        let Some((kind, size)) = header_kind_and_size(block) else {
            return compact.len() as u64;
        };
        if is_content_kind(kind) && size > 0 {
            return at as u64;
        }
        let data = usize::try_from(size.div_ceil(512) * 512).unwrap_or(usize::MAX);
        at = at.saturating_add(data);
    }
    compact.len() as u64
}

/// How far [`headers_before_content`] looks: long-name and PAX records, and short runs of
/// directories, fit; a longer run of headers is merely coded as a larger difference.
pub const PREDICTION_BLOCKS: usize = 32;

/// Stand-ins for a header checksum in the two usual spellings: `%07o\0` (tar-rs, BSD tar)
/// and `%06o\0 ` (GNU tar, Python). A header whose size or mode changed then differs from
/// its old version only in those fields, not also in checksum digits that carry.
const CHECKSUM_MARKERS: [(&[u8; 8], usize); 2] = [(b"\xffCKSUM7\0", 7), (b"\xffCKSUM6 ", 6)];
const CHECKSUM_FIELD: std::ops::Range<usize> = 148..156;

/// The checksum field of a tar header, spelled with `digits` octal digits.
fn checksum_field(block: &[u8], digits: usize) -> [u8; 8] {
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if CHECKSUM_FIELD.contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    let mut field = [0u8; 8];
    let text = format!("{sum:0digits$o}");
    let text = &text.as_bytes()[text.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(text);
    if digits == 6 {
        field[7] = b' ';
    }
    field
}

/// Every 512-byte block of `buf` that starts on a block boundary of the stream (`buf` starts
/// at `offset`): `f(block)`.
fn for_each_block(buf: &mut [u8], offset: u64, mut f: impl FnMut(&mut [u8])) {
    let mut at = ((512 - offset % 512) % 512) as usize;
    while at + 512 <= buf.len() {
        f(&mut buf[at..at + 512]);
        at += 512;
    }
}

/// Replace the checksum of every header block with a stand-in for its spelling (see
/// [`restore_checksums`]). A block whose checksum does not verify is left alone.
pub fn normalise_checksums(buf: &mut [u8], offset: u64) {
    for_each_block(buf, offset, |block| {
        for (marker, digits) in CHECKSUM_MARKERS {
            if block[CHECKSUM_FIELD] == checksum_field(block, digits) {
                block[CHECKSUM_FIELD].copy_from_slice(marker);
                return;
            }
        }
    });
}

/// Undo [`normalise_checksums`]: every block holding a stand-in gets its checksum back.
pub fn restore_checksums(buf: &mut [u8], offset: u64) {
    for_each_block(buf, offset, |block| {
        for (marker, digits) in CHECKSUM_MARKERS {
            if &block[CHECKSUM_FIELD] == marker {
                let field = checksum_field(block, digits);
                block[CHECKSUM_FIELD].copy_from_slice(&field);
                return;
            }
        }
    });
}

/// `chunk` with its header checksums normalised, if restoring gives back exactly `chunk`
/// (it would not if some other block happened to hold a stand-in).
pub fn normalised_if_reversible(chunk: &[u8], offset: u64) -> Option<Vec<u8>> {
    let mut normalised = chunk.to_vec();
    normalise_checksums(&mut normalised, offset);
    let mut restored = normalised.clone();
    restore_checksums(&mut restored, offset);
    (restored == chunk && normalised != chunk).then_some(normalised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compact_skeleton(raw, |b| {
            out.extend_from_slice(b);
            true
        })
        .unwrap();
        out
    }

    /// The skeleton the unpacker records: the tar without regular files' content.
    fn raw_skeleton(entries: &[(&str, tar::EntryType, usize)]) -> (Vec<u8>, Vec<[u8; 512]>) {
        let mut raw = Vec::new();
        let mut headers = Vec::new();
        for (path, kind, size) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            h.set_entry_type(*kind);
            h.set_size(*size as u64);
            h.set_cksum();
            let block: [u8; 512] = h.as_bytes()[..].try_into().unwrap();
            raw.extend_from_slice(&block);
            headers.push(block);
            if *kind != tar::EntryType::Regular {
                raw.extend(std::iter::repeat_n(b'r', *size));
            }
            raw.resize(raw.len() + (512 - size % 512) % 512, 0); // content absent, padding kept
        }
        raw.resize(raw.len() + 1024, 0);
        (raw, headers)
    }

    /// Two files with content around a long-name record and an empty file.
    fn sample_skeleton() -> (Vec<u8>, Vec<[u8; 512]>) {
        use tar::EntryType::{GNULongName, Regular};
        raw_skeleton(&[
            ("a", Regular, 700),
            ("long", GNULongName, 300),
            ("b", Regular, 0),
            ("c", Regular, 1024),
        ])
    }

    #[test]
    fn compact_skeleton_drops_file_padding_and_keeps_the_rest() {
        let (raw, headers) = sample_skeleton();
        let got = compact(&raw);
        let mut want = Vec::new();
        want.extend_from_slice(&headers[0]);
        want.extend_from_slice(&headers[1]);
        want.extend_from_slice(&[b'r'; 300]);
        want.extend_from_slice(&[0; 212]);
        want.extend_from_slice(&headers[2]);
        want.extend_from_slice(&headers[3]);
        want.extend_from_slice(&[0; 1024]);
        let first_difference = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!((got.len(), first_difference), (want.len(), None));
    }

    #[test]
    fn compact_reader_gives_the_same_bytes_whatever_the_read_size() {
        let (mut raw, _) = sample_skeleton();
        raw.extend_from_slice(b"junk after the end blocks, and a short last block");
        let want = compact(&raw);
        assert!(want.ends_with(b"short last block"));
        for size in [1, 7, 511, 512, 513, 100_000] {
            let mut reader = CompactReader::new(&raw[..]);
            let (mut got, mut buf) = (Vec::new(), vec![0u8; size]);
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == want, "reads of {size} bytes");
        }
    }

    #[test]
    fn checksums_normalise_and_restore_in_both_spellings() {
        let (raw, _) = raw_skeleton(&[
            ("a", tar::EntryType::Regular, 512),
            ("b", tar::EntryType::Regular, 0),
        ]);
        let mut compact = compact(&raw);
        // Second header in GNU's spelling: six digits, NUL, space.
        let second = &mut compact[512..1024];
        let field = checksum_field(second, 6);
        second[CHECKSUM_FIELD].copy_from_slice(&field);
        let normalised = normalised_if_reversible(&compact, 0).unwrap();
        assert_eq!(&normalised[148..156], b"\xffCKSUM7\0");
        assert_eq!(&normalised[512 + 148..512 + 156], b"\xffCKSUM6 ");
        let mut restored = normalised.clone();
        restore_checksums(&mut restored, 0);
        assert!(restored == compact);
        // A stand-in where no header is, is not reversible: left as it is.
        let mut odd = compact.clone();
        odd[1024 + 148..1024 + 156].copy_from_slice(b"\xffCKSUM7\0");
        assert!(normalised_if_reversible(&odd, 0).is_none());
    }

    #[test]
    fn gap_prediction_runs_to_the_next_header_of_file_content() {
        let (raw, _) = sample_skeleton();
        let compact = compact(&raw);
        assert_eq!(headers_before_content(&compact), 512);
        // Long-name record (header + data), the empty file's header, then c's header.
        assert_eq!(headers_before_content(&compact[512..]), 4 * 512);
        assert_eq!(headers_before_content(&compact[5 * 512..]), 1024); // end blocks
        assert_eq!(headers_before_content(&[]), 0);
    }

    #[test]
    fn compact_skeleton_passes_through_what_is_not_tar() {
        let junk: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8 + 1).collect();
        assert_eq!(compact(&junk), junk);
    }
}
