//! The compact form of a raw skeleton as a `Read`er, so a caller can pull exactly the bytes
//! it needs and keep its place ([`super::windows::SkeletonWindows`]).

use std::io::{self, BufReader, Read};

use super::{header_kind_and_size, is_content_kind, read_full};

/// Raw skeleton in, compact form out: every block as it is, except the zero padding that
/// followed each regular file's (absent) content. See [`super::compact_skeleton`].
pub struct CompactReader<R> {
    raw: BufReader<R>,
    block: [u8; 512],
    /// The current block: `block[served..len]` is still to be read out.
    len: usize,
    served: usize,
    then: After,
}

/// What follows the current block once it has been read out.
#[derive(Debug, Clone, Copy)]
enum After {
    /// The next block.
    Block,
    /// This many bytes of an entry's data (not file content: a long name, PAX records) and
    /// their padding, as they are.
    Data(u64),
    /// The stream stopped parsing as tar: the rest as it is.
    Raw,
    /// End of the skeleton (end of input, or a short last block).
    End,
}

impl<R> std::fmt::Debug for CompactReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactReader")
            .field("then", &self.then)
            .finish_non_exhaustive()
    }
}

impl<R: Read> CompactReader<R> {
    pub fn new(raw: R) -> Self {
        Self {
            raw: BufReader::new(raw),
            block: [0; 512],
            len: 0,
            served: 0,
            then: After::Block,
        }
    }

    /// Read the next block and decide what follows it.
    fn next_block(&mut self) -> io::Result<()> {
        let n = read_full(&mut self.raw, &mut self.block)?;
        (self.len, self.served) = (n, 0);
        if n < self.block.len() {
            self.then = After::End;
            return Ok(());
        }
        if self.block.iter().all(|b| *b == 0) {
            self.then = After::Block;
            return Ok(());
        }
        self.then = match header_kind_and_size(&self.block) {
            None => After::Raw,
            Some((kind, size)) => {
                let padding = (512 - size % 512) % 512;
                if is_content_kind(kind) && size > 0 {
                    io::copy(&mut (&mut self.raw).take(padding), &mut io::sink())?;
                    After::Block
                } else {
                    After::Data(size + padding)
                }
            }
        };
        Ok(())
    }
}

impl<R: Read> Read for CompactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.served < self.len {
                let n = buf.len().min(self.len - self.served);
                buf[..n].copy_from_slice(&self.block[self.served..self.served + n]);
                self.served += n;
                return Ok(n);
            }
            match self.then {
                After::End => return Ok(0),
                After::Raw => return self.raw.read(buf),
                After::Data(0) | After::Block => self.next_block()?,
                After::Data(left) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.raw.read(&mut buf[..want])?;
                    self.then = if n == 0 {
                        After::End
                    } else {
                        After::Data(left - n as u64)
                    };
                    if n > 0 {
                        return Ok(n);
                    }
                }
            }
        }
    }
}
