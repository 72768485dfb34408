//! Pseudo-terminals for `exec -t`: opened by the exec helper inside the container's mount
//! namespace (so the slave is one of the container's own `/dev/pts/N`), the master handed
//! to the agent over a Unix socket (`SCM_RIGHTS`), the window size set with `TIOCSWINSZ`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);
nix::ioctl_write_int_bad!(set_controlling_tty, libc::TIOCSCTTY);

/// A new pty pair in the current mount namespace: the master, and the slave's path.
pub fn open_pair() -> nix::Result<(OwnedFd, String)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let path = nix::pty::ptsname_r(&master)?;
    // SAFETY: `into_raw_fd`-like: the PtyMaster owns a valid fd; we take it over and forget
    // the PtyMaster so it is not closed twice.
    let fd = unsafe { OwnedFd::from_raw_fd(master.as_raw_fd()) };
    std::mem::forget(master);
    Ok((fd, path))
}

/// Sets the terminal's window size (the foreground process group gets SIGWINCH).
pub fn resize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points at a live
    // local for the duration of the call; a non-tty fd fails with ENOTTY.
    unsafe { set_winsize(fd.as_raw_fd(), &size) }.map(|_| ())
}

/// Makes the terminal on `fd` the caller's controlling terminal (the caller leads a new
/// session and has none yet).
pub fn make_controlling(fd: RawFd) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal from another session) and
    // touches no memory of ours.
    unsafe { set_controlling_tty(fd, 0) }.map(|_| ())
}

/// Sends `fd` over the Unix socket `socket` (one byte of payload carries it).
pub fn send_fd(socket: RawFd, fd: RawFd) -> nix::Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        socket,
        &[IoSlice::new(b"T")],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map(|_| ())
}

/// Receives one fd sent by [`send_fd`]; `None` when the peer closed without sending one.
pub fn receive_fd(socket: RawFd) -> nix::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd in our table for us; nothing
                // else owns it.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Ok(None)
}
