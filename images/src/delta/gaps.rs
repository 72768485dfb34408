//! Encoding the bytes between file contents (the new tar's skeleton) against the old layer's
//! skeleton, in chunks of [`SKELETON_CHUNK`] so the device decodes one chunk at a time.
//! Both skeletons are diffed in compact form ([`crate::skeleton::compact_skeleton`]): without
//! the zero padding after file content, which the device synthesises from the sizes it
//! produced. So a file whose size changed costs its own header's few changed bytes, instead
//! of shifting every later header by a new padding length.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::encode::OpWriter;
use super::op::Op;
use super::op::{PatchMethod, PatchShape};
use super::patch::{best_bsdiff, zstd_ref_encode};
use super::window::{plan_windows, Window};
use super::SKELETON_CHUNK;
use crate::skeleton::{
    compact_skeleton_len, headers_before_content, normalise_checksums, normalised_if_reversible,
    SkeletonWindows,
};

/// A gap of the new tar: where it is, and the zero padding it starts with (that of the
/// file content before it).
#[derive(Debug, Clone, Copy)]
pub(super) struct GapSpan {
    pub offset: u64,
    pub len: u64,
    pub padding: u64,
}

/// Emits `Gap` ops, preceded by a `Skeleton` op whenever a new chunk is needed.
pub(super) struct GapEncoder {
    new_skeleton: File,
    /// Per gap: its length in the compact skeleton, and whether its padding is kept
    /// (`RawGap`: not all zeros).
    compact: std::vec::IntoIter<(u64, bool)>,
    old_skeleton: PathBuf,
    /// Reference windows of `old_skeleton`, decoded once front to back.
    old_windows: SkeletonWindows,
    base: u16,
    windows: std::vec::IntoIter<Window>,
    cursor: u64,
    chunk_end: u64,
    /// The current chunk as the device holds it (checksums restored), for gap predictions.
    chunk: Vec<u8>,
    level: i32,
}

impl GapEncoder {
    /// `gaps`: every byte range of the new tar that is not file content, in order.
    pub(super) fn new(
        new_tar: &File,
        gaps: &[GapSpan],
        scratch: &Path,
        old_skeleton: PathBuf,
        base: u16,
        level: i32,
    ) -> io::Result<Self> {
        let path = scratch.with_extension("skeleton");
        let mut out = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let _ = std::fs::remove_file(&path); // unlinked scratch: gone when dropped
        let mut buf = vec![0u8; 1 << 20];
        let mut compact = Vec::with_capacity(gaps.len());
        let mut new_len = 0;
        for gap in gaps {
            let mut padding = vec![0u8; gap.padding.min(gap.len) as usize];
            new_tar.read_exact_at(&mut padding, gap.offset)?;
            let raw = gap.padding > gap.len || padding.iter().any(|b| *b != 0);
            let skip = if raw { 0 } else { gap.padding };
            let (offset, len) = (gap.offset + skip, gap.len - skip);
            let mut done = 0;
            while done < len {
                let n = buf.len().min((len - done) as usize);
                new_tar.read_exact_at(&mut buf[..n], offset + done)?;
                out.write_all(&buf[..n])?;
                done += n as u64;
            }
            compact.push((len, raw));
            new_len += len;
        }
        let old_len = compact_skeleton_len(&old_skeleton)?;
        let windows = plan_windows(new_len, old_len, SKELETON_CHUNK).into_iter();
        Ok(Self {
            new_skeleton: out,
            compact: compact.into_iter(),
            old_skeleton,
            old_windows: SkeletonWindows::new(),
            base,
            windows,
            cursor: 0,
            chunk_end: 0,
            chunk: Vec::new(),
            level,
        })
    }

    /// Emit ops for the next gap: always at least one (its padding is implied by it), then
    /// one more per skeleton chunk it crosses.
    pub(super) fn emit(&mut self, out: &mut OpWriter) -> io::Result<()> {
        let (mut len, raw) = self
            .compact
            .next()
            .ok_or_else(|| io::Error::other("skeleton ran out of gaps"))?;
        let mut first = true;
        while len > 0 || first {
            if self.cursor == self.chunk_end && len > 0 {
                self.emit_chunk(out)?;
            }
            let n = len.min(self.chunk_end - self.cursor);
            let in_chunk = self.chunk.len() - (self.chunk_end - self.cursor) as usize;
            out.codec
                .predict_gap(headers_before_content(&self.chunk[in_chunk..]));
            out.op(&if first && raw {
                Op::RawGap { len: n }
            } else {
                Op::Gap { len: n }
            })?;
            first = false;
            self.cursor += n;
            len -= n;
        }
        Ok(())
    }

    fn emit_chunk(&mut self, out: &mut OpWriter) -> io::Result<()> {
        let w = self
            .windows
            .next()
            .ok_or_else(|| io::Error::other("skeleton ran out of chunks"))?;
        let mut chunk = vec![0u8; (w.new.end - w.new.start) as usize];
        self.new_skeleton.read_exact_at(&mut chunk, w.new.start)?;
        let mut reference = self.old_windows.window(
            &self.old_skeleton,
            w.reference.start,
            w.reference.end - w.reference.start,
        )?;
        // Header checksums as stand-ins on both sides, when the device can restore them.
        let normalised = match normalised_if_reversible(&chunk, w.new.start) {
            Some(n) => {
                self.chunk = std::mem::replace(&mut chunk, n);
                normalise_checksums(&mut reference, w.reference.start);
                true
            }
            None => {
                self.chunk.clone_from(&chunk);
                false
            }
        };
        // Headers often differ by small amounts at fixed offsets (mode, size, checksum):
        // bsdiff's bytewise differences beat zstd's matches there.
        let mut method = PatchMethod::ZstdRef;
        let mut payload = zstd_ref_encode(&reference, &chunk, self.level)?;
        let mut cost = payload.len();
        let (bs_method, bsdiff, bs_cost) = best_bsdiff(&reference, &chunk, self.level)?;
        if bsdiff.len() as u64 <= 2 * SKELETON_CHUNK && bs_cost < cost {
            method = bs_method;
            payload = bsdiff;
            cost = bs_cost;
        }
        out.op(&Op::Skeleton {
            base: self.base,
            normalised,
            shape: PatchShape::of(method, w.reference.start, &reference, &chunk, &payload),
        })?;
        out.out.write_all(&payload)?;
        out.report.skeleton_cost_bytes += cost as u64;
        self.chunk_end = w.new.end;
        Ok(())
    }
}
