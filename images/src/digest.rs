//! Digests for the images crate: the wire contract's `Digest` (sha256, parsed once), plus
//! hashing while reading or writing, so a layer is hashed in the same pass that moves it.

use std::fmt;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

pub use coracle_proto::Digest;

/// Running sha256 over everything that passes through; also counts bytes.
#[derive(Default)]
pub struct DigestHasher {
    sha: Sha256,
    bytes: u64,
}

impl fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestHasher")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl DigestHasher {
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.bytes += data.len() as u64;
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn finish(self) -> Digest {
        Digest::from_bytes(self.sha.finalize().into())
    }
}

impl Write for DigestHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes what is read through it (the diff_id of a layer stream).
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: DigestHasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: DigestHasher::default(),
        }
    }
    /// Read the rest of the stream (tar padding counts for the diff_id), then return the digest.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let bytes = self.hasher.bytes();
        Ok((self.hasher.finish(), bytes))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Digest of a whole file, read in chunks.
pub fn digest_file(path: &std::path::Path) -> io::Result<(Digest, u64)> {
    HashingReader::new(std::fs::File::open(path)?).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_through_text() {
        let d = Digest::of(b"hello");
        let text = d.to_string();
        assert_eq!(
            text,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(text.parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn hashing_reader_counts_trailing_bytes() {
        let mut r = HashingReader::new(&b"abcdef"[..]);
        let mut two = [0u8; 2];
        r.read_exact(&mut two).unwrap();
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 6);
        assert_eq!(d, Digest::of(b"abcdef"));
    }
}
