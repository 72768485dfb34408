//! Size-capped, rotating container logs (flash friendly): `container.log` grows to
//! `max_bytes`, then becomes `container.log.1` (older ones shift up, the oldest beyond
//! `keep` is deleted). Plain files, so they are readable while the container runs.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::log_time::LineStamper;
use crate::private_dir::private_file;

/// The current log file's name in the container's state dir.
pub const LOG_FILE: &str = "container.log";

/// Failures writing logs.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("write log file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("wait for container output")]
    Poll(#[source] nix::Error),
    #[error("rotate log file {path}")]
    Rotate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Appends to a log file and rotates it at a size cap.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    written: u64,
}

impl RotatingLog {
    pub fn open(dir: &Path, max_bytes: u64, keep: u32) -> Result<Self, LogError> {
        let path = dir.join(LOG_FILE);
        let file = private_file()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| LogError::Write {
                path: path.clone(),
                source,
            })?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path,
            max_bytes: max_bytes.max(1),
            keep,
            file,
            written,
        })
    }

    /// Writes `bytes`, rotating first when they would pass the cap. A single chunk larger
    /// than the cap is cut to it: a log storm costs at most `max_bytes × (keep + 1)`.
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<(), LogError> {
        if bytes.len() as u64 > self.max_bytes {
            bytes = &bytes[bytes.len() - self.max_bytes as usize..];
        }
        if self.written + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(bytes)
            .map_err(|source| LogError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let err = |path: PathBuf| move |source| LogError::Rotate { path, source };
        if self.keep == 0 {
            self.file.set_len(0).map_err(err(self.path.clone()))?;
        } else {
            let _ = fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                if numbered(n).exists() {
                    fs::rename(numbered(n), numbered(n + 1)).map_err(err(numbered(n)))?;
                }
            }
            fs::rename(&self.path, numbered(1)).map_err(err(self.path.clone()))?;
            self.file = private_file()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.path)
                .map_err(err(self.path.clone()))?;
        }
        self.written = 0;
        Ok(())
    }
}

/// Copies the container's stdout and stderr into the log until both close (they close when
/// the container's pid namespace is gone), each line stamped with the time it began
/// (`log_time`).
pub fn pump(pipes: &[OwnedFd; 2], log: &mut RotatingLog) -> Result<(), LogError> {
    let mut open = [true, true];
    let mut buf = [0u8; 4096];
    let mut stampers = [LineStamper::default(), LineStamper::default()];
    let mut stamped = Vec::with_capacity(8192);
    while open.iter().any(|o| *o) {
        let mut fds: Vec<PollFd<'_>> = pipes
            .iter()
            .zip(open)
            .filter(|(_, o)| *o)
            .map(|(p, _)| PollFd::new(p.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(source) => return Err(LogError::Poll(source)),
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let live: Vec<usize> = (0..2).filter(|&i| open[i]).collect();
        for (slot, i) in live.into_iter().enumerate() {
            if !ready[slot] {
                continue;
            }
            match nix::unistd::read(pipes[i].as_raw_fd(), &mut buf) {
                Ok(0) => open[i] = false,
                Ok(n) => stampers[i].feed(&buf[..n], now_unix_ns(), &mut stamped),
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                Err(_) => open[i] = false,
            }
            if !open[i] {
                stampers[i].finish(&mut stamped);
            }
            if !stamped.is_empty() {
                log.write(&stamped)?;
                stamped.clear();
            }
        }
    }
    Ok(())
}

/// The device clock in nanoseconds since the Unix epoch (0 before 1970).
pub fn now_unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rotates_at_the_cap_and_keeps_only_keep_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::open(dir.path(), 10, 2).unwrap();
        for chunk in [b"aaaaaa", b"bbbbbb", b"cccccc", b"dddddd"] {
            log.write(chunk).unwrap();
        }
        let read = |name: &str| fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("container.log"), "dddddd");
        assert_eq!(read("container.log.1"), "cccccc");
        assert_eq!(read("container.log.2"), "bbbbbb");
        assert!(!dir.path().join("container.log.3").exists());
    }

    #[test]
    fn oversized_chunk_keeps_its_tail_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::open(dir.path(), 4, 0).unwrap();
        log.write(b"0123456789").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(LOG_FILE)).unwrap(),
            "6789"
        );
    }
}
