//! The container's terminal (OCI `process.terminal`, podman's `-t`): a pty opened by the
//! init after pivot_root, so the slave is one of the container's own `/dev/pts/N`. The
//! slave becomes the init's controlling terminal and stdio; the master is sent to the
//! caller's console socket with `SCM_RIGHTS`, as runc does, and closed here.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::InitError;
use crate::runtime::pty;

/// Where the terminal's master goes, and the terminal's size.
#[derive(Debug)]
pub struct Console {
    /// A Unix stream socket connected to the caller's `--console-socket` (close-on-exec).
    pub socket: OwnedFd,
    /// Rows and columns (OCI `process.consoleSize`), set before the master is sent.
    pub size: Option<(u16, u16)>,
}

/// Opens the pty, makes its slave this process's controlling terminal and fds 0-2, and
/// sends the master to the console socket.
pub fn attach(console: &Console) -> Result<(), InitError> {
    let terminal = |step, source| InitError::Terminal { step, source };
    let (master, slave_path) = pty::open_pair().map_err(|e| terminal("open a pty", e))?;
    if let Some((rows, cols)) = console.size {
        pty::resize(master.as_fd(), rows, cols).map_err(|e| terminal("set its size", e))?;
    }
    nix::unistd::setsid().map_err(|e| terminal("start a session", e))?;
    let slave = nix::fcntl::open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| terminal("open its slave", e))?;
    pty::make_controlling(slave).map_err(|e| terminal("make it the controlling terminal", e))?;
    for fd in 0..=2 {
        nix::unistd::dup2(slave, fd).map_err(|e| terminal("make it stdio", e))?;
    }
    nix::unistd::close(slave).map_err(|e| terminal("close its slave", e))?;
    pty::send_fd(console.socket.as_raw_fd(), master.as_raw_fd())
        .map_err(|e| terminal("send its master to the console socket", e))?;
    Ok(())
}
