//! A layer's tar skeleton: its tar stream minus the contents of regular files (headers, PAX
//! and GNU records, padding, end blocks), zstd-compressed beside the unpacked layer as
//! `<layer dir>.skeleton.zst`. A delta compresses the new layer's skeleton against the old
//! one, so unchanged tar headers cost almost nothing, as they do for whole-tar diff tools.
//! It is recorded while unpacking, from the same bytes whose digest is verified.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

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

/// Uncompressed length of a skeleton file.
pub fn skeleton_len(path: &Path) -> io::Result<u64> {
    io::copy(
        &mut zstd::stream::read::Decoder::new(File::open(path)?)?,
        &mut io::sink(),
    )
}

/// `len` bytes of a skeleton at `offset` (decoding from the start: skeletons are small).
pub fn read_skeleton_window(path: &Path, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut decoder = zstd::stream::read::Decoder::new(File::open(path)?)?;
    io::copy(&mut (&mut decoder).take(offset), &mut io::sink())?;
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    decoder.take(len).read_to_end(&mut out)?;
    if out.len() as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("skeleton {path:?} is shorter than {}", offset + len),
        ));
    }
    Ok(out)
}
