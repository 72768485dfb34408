//! The few syscalls unpacking needs beyond std: device nodes, overlayfs whiteouts, opaque
//! markers, timestamps without following symlinks, and one `syncfs` per layer.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Which xattr namespace marks opaque directories. Overlayfs reads `trusted.overlay.*` (needs
/// CAP_SYS_ADMIN to write); a mount with the `userxattr` option (rootless, kernel >= 5.11)
/// reads `user.overlay.*`. Whiteouts are char 0/0 devices either way; since Linux 5.8 the
/// kernel lets unprivileged users create exactly that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayXattrs {
    Trusted,
    User,
}

impl OverlayXattrs {
    fn opaque_name(self) -> &'static str {
        match self {
            Self::Trusted => "trusted.overlay.opaque",
            Self::User => "user.overlay.opaque",
        }
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

/// `mknod(path, kind | perm, makedev(major, minor))`.
pub fn make_node(
    path: &Path,
    kind: libc::mode_t,
    perm: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let c = c_path(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; mknod reads only it.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | (perm & 0o7777), dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An overlayfs whiteout: a character device with number 0/0.
pub fn make_whiteout(path: &Path) -> io::Result<()> {
    make_node(path, libc::S_IFCHR, 0, 0, 0)
}

/// Mark a directory opaque so overlayfs hides everything below it in lower layers.
pub fn mark_opaque(dir: &Path, xattrs: OverlayXattrs) -> io::Result<()> {
    xattr::set(dir, xattrs.opaque_name(), b"y")
}

/// Read back the opaque marker (tests and `coracle image inspect`).
pub fn is_opaque(dir: &Path, xattrs: OverlayXattrs) -> io::Result<bool> {
    Ok(xattr::get(dir, xattrs.opaque_name())?.as_deref() == Some(b"y"))
}

/// Set atime and mtime of `path` itself (not a symlink's target).
pub fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let c = c_path(path)?;
    // time_t is 32 bits on some ARM targets; clamp instead of wrapping. (libc marks musl's
    // time_t deprecated because it turns 64-bit with musl 1.2; it is still tv_sec's type.)
    #[allow(deprecated)]
    let secs = libc::time_t::try_from(mtime).unwrap_or(libc::time_t::MAX);
    let times = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    // SAFETY: `c` is NUL-terminated and `times` is an array of two timespecs, as utimensat expects;
    // both live until the call returns.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Flush every dirty page of the filesystem holding `dir`: one call instead of an fsync per file.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let file = std::fs::File::open(dir)?;
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for the duration of the call (owned by `file`).
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// fsync a directory so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
