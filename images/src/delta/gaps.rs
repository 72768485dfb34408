//! Encoding the bytes between file contents (the new tar's skeleton) against the old layer's
//! skeleton, in chunks of [`SKELETON_CHUNK`] so the device decodes one chunk at a time.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::encode::OpWriter;
use super::op::Op;
use super::op::PatchMethod;
use super::patch::{best_bsdiff, zstd_ref_encode};
use super::window::{plan_windows, Window};
use super::SKELETON_CHUNK;
use crate::skeleton::{read_skeleton_window, skeleton_len};

/// Emits `Gap` ops, preceded by a `Skeleton` op whenever a new chunk is needed.
pub(super) struct GapEncoder {
    new_skeleton: File,
    old_skeleton: PathBuf,
    base: u16,
    windows: std::vec::IntoIter<Window>,
    cursor: u64,
    chunk_end: u64,
    level: i32,
}

impl GapEncoder {
    /// `gaps`: (offset, len) of every byte range of the new tar that is not file content.
    pub(super) fn new(
        new_tar: &File,
        gaps: &[(u64, u64)],
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
        for &(offset, len) in gaps {
            let mut done = 0;
            while done < len {
                let n = buf.len().min((len - done) as usize);
                new_tar.read_exact_at(&mut buf[..n], offset + done)?;
                out.write_all(&buf[..n])?;
                done += n as u64;
            }
        }
        let new_len: u64 = gaps.iter().map(|g| g.1).sum();
        let old_len = skeleton_len(&old_skeleton)?;
        let windows = plan_windows(new_len, old_len, SKELETON_CHUNK).into_iter();
        Ok(Self {
            new_skeleton: out,
            old_skeleton,
            base,
            windows,
            cursor: 0,
            chunk_end: 0,
            level,
        })
    }

    /// Emit ops for the next `len` skeleton bytes.
    pub(super) fn emit(&mut self, out: &mut OpWriter, mut len: u64) -> io::Result<()> {
        while len > 0 {
            if self.cursor == self.chunk_end {
                self.emit_chunk(out)?;
            }
            let n = len.min(self.chunk_end - self.cursor);
            out.op(&Op::Gap { len: n })?;
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
        let reference = read_skeleton_window(
            &self.old_skeleton,
            w.reference.start,
            w.reference.end - w.reference.start,
        )?;
        // Headers often differ by small amounts at fixed offsets (mode, size, checksum):
        // bsdiff's bytewise differences beat zstd's matches there.
        let mut method = PatchMethod::ZstdRef;
        let mut payload = zstd_ref_encode(&reference, &chunk, self.level)?;
        let (bs_method, bsdiff, cost) = best_bsdiff(&reference, &chunk, self.level)?;
        if bsdiff.len() as u64 <= 2 * SKELETON_CHUNK && cost < payload.len() {
            method = bs_method;
            payload = bsdiff;
        }
        out.op(&Op::Skeleton {
            base: self.base,
            method,
            ref_offset: w.reference.start,
            ref_len: reference.len() as u64,
            out_len: chunk.len() as u64,
            payload_len: payload.len() as u64,
        })?;
        out.out.write_all(&payload)?;
        self.chunk_end = w.new.end;
        Ok(())
    }
}
