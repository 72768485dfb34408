//! `AsyncPipe`: a pipe end or pty master the session task reads and writes without
//! blocking the agent's single-threaded runtime (tokio's `AsyncFd`, the fd non-blocking).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;

#[derive(Debug)]
pub struct AsyncPipe {
    fd: AsyncFd<std::fs::File>,
}

impl AsyncPipe {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: the File owns the fd and lives inside the AsyncFd until it is dropped, so
        // the fd stays open and means the same file description all that time.
        let fd = unsafe { AsyncFd::register(std::fs::File::from(fd)) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Reads what is there; `Ok(0)` at the end (a pty master's EIO, once every process
    /// holding the terminal is gone, is the end too).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| inner.get_ref().read(buf)) {
                Ok(Err(err)) if err.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|inner| inner.get_ref().write(data)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}
