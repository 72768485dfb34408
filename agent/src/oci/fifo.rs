//! The exec fifo, `<root>/<id>/exec.fifo`, that holds a created container before exec, as
//! in runc and crun. `create` makes it and hands the init a read end (opened O_RDWR, which
//! never blocks and keeps the fifo open with no writer); the init blocks reading it. `start`
//! opens the write end — which fails at once when no init holds the fifo any more — writes
//! the container's state as one JSON line (the startContainer hooks' stdin), and removes
//! the file. So the file exists exactly while the container is created.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;

pub const FIFO_FILE: &str = "exec.fifo";

/// Failures of the exec fifo, naming its path.
#[derive(Debug, thiserror::Error)]
pub enum FifoError {
    #[error("make exec fifo {path}")]
    Make {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("open exec fifo {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the container's init no longer waits on {path}: it has exited")]
    NoInit { path: PathBuf },
    #[error("release the container's init through {path}")]
    Release {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Makes `dir/exec.fifo` and returns the init's read end.
pub fn make(dir: &Path) -> Result<OwnedFd, FifoError> {
    let path = dir.join(FIFO_FILE);
    nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).map_err(|source| {
        FifoError::Make {
            path: path.clone(),
            source,
        }
    })?;
    // O_RDWR: opening a fifo read-only would block until a writer comes (`start`).
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|source| FifoError::Open { path, source })?;
    Ok(file.into())
}

/// Whether the container is still waiting for `start`.
pub fn is_waiting(dir: &Path) -> bool {
    dir.join(FIFO_FILE).exists()
}

/// Lets the init waiting on `dir/exec.fifo` go on to exec, handing it `state` (one line).
pub fn release(dir: &Path, state: &[u8]) -> Result<(), FifoError> {
    let path = dir.join(FIFO_FILE);
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path);
    let mut fifo: File = match opened {
        Ok(file) => file,
        // ENXIO: a non-blocking open for writing finds no reader.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            let _ = std::fs::remove_file(&path);
            return Err(FifoError::NoInit { path });
        }
        Err(source) => return Err(FifoError::Open { path, source }),
    };
    let mut line = state.to_vec();
    line.push(b'\n');
    // Non-blocking, yet a state line fits the pipe buffer (64 KiB) unless its annotations
    // are huge; then EAGAIN comes back as an error rather than a hang.
    fifo.write_all(&line)
        .and_then(|()| std::fs::remove_file(&path))
        .map_err(|source| FifoError::Release { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn release_hands_the_waiting_reader_the_state_and_removes_the_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let reader = make(dir.path()).unwrap();
        assert!(is_waiting(dir.path()));
        release(dir.path(), b"{\"id\":\"a\"}").unwrap();
        assert!(!is_waiting(dir.path()));
        let mut got = [0u8; 11];
        File::from(reader).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"{\"id\":\"a\"}\n");
    }

    #[test]
    fn release_without_a_reader_says_the_init_has_exited() {
        let dir = tempfile::tempdir().unwrap();
        drop(make(dir.path()).unwrap());
        let err = release(dir.path(), b"{}").unwrap_err();
        assert!(matches!(err, FifoError::NoInit { .. }), "{err}");
    }
}
