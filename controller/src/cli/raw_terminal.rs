//! The local terminal in raw mode for `coracle exec -t`: keys go to the remote terminal
//! as typed (Ctrl-C included), and the old mode comes back when the guard drops — on a
//! normal end, an error or a panic unwinding through it. `coracle exec` also restores it
//! before `process::exit`, which runs no destructors.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::termios::{self, SetArg, Termios};

/// Holds the terminal's previous mode.
#[derive(Debug)]
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Raw mode on stdin's terminal; `None` when stdin is not a terminal.
    pub fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let fd = stdin.as_fd();
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSAFLUSH, &raw).ok()?;
        Some(Self { saved })
    }

    fn restore(&self) {
        let stdin = std::io::stdin();
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSAFLUSH, &self.saved);
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The size of the terminal on `fd` as (rows, cols); `None` when it is not a terminal.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points at a live
    // local; a non-terminal fd fails with ENOTTY and writes nothing.
    unsafe { get_winsize(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut size) }.ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}
