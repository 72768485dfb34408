//! Named network namespaces: a namespace kept alive by a bind mount on a file (as
//! `ip netns add` does), which the runtime joins (`Network::Join`) and a container keeps
//! across restarts. Work inside one runs on a short-lived thread that entered it, so the
//! agent's own threads never change namespace.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::netlink::Netlink;

/// Why a namespace could not be made, entered or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{step} {path}")]
    Sys {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the namespace thread for {0} panicked")]
    Thread(PathBuf),
}

fn on_thread<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, NetnsError> + Send + 'static,
) -> Result<T, NetnsError> {
    std::thread::spawn(work)
        .join()
        .map_err(|_| NetnsError::Thread(path.to_path_buf()))?
}

/// Creates a new network namespace held by a bind mount on `path` (made if missing).
/// A namespace already mounted there is kept.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    if is_mounted_netns(path) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| NetnsError::Io {
            step: "create dir for",
            path: path.to_path_buf(),
            source,
        })?;
    }
    File::create(path).map_err(|source| NetnsError::Io {
        step: "create",
        path: path.to_path_buf(),
        source,
    })?;
    let target = path.to_path_buf();
    on_thread(path, move || {
        let sys = |step, source| NetnsError::Sys {
            step,
            path: target.clone(),
            source,
        };
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| sys("unshare a network namespace for", e))?;
        mount(
            Some(Path::new("/proc/thread-self/ns/net")),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| sys("bind mount the namespace on", e))
    })
}

/// Whether `path` is a mounted network namespace.
fn is_mounted_netns(path: &Path) -> bool {
    let Ok(ns) = File::open(path) else {
        return false;
    };
    // NS_GET_NSTYPE answers only on an nsfs file.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without arguments on an fd we own; a plain file answers ENOTTY.
    let kind = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE as _) };
    kind == libc::CLONE_NEWNET
}

/// Runs `work` with a netlink socket inside the namespace at `path`.
pub fn inside<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce(&mut Netlink) -> Result<T, super::NetworkError> + Send + 'static,
) -> Result<T, super::NetworkError> {
    let target = path.to_path_buf();
    let ns = File::open(path).map_err(|source| NetnsError::Io {
        step: "open",
        path: target.clone(),
        source,
    })?;
    let joined = std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Sys {
            step: "enter the network namespace",
            path: target.clone(),
            source,
        })?;
        let mut netlink = Netlink::open().map_err(|source| NetnsError::Io {
            step: "open a netlink socket in",
            path: target,
            source,
        })?;
        work(&mut netlink)
    })
    .join();
    joined.map_err(|_| NetnsError::Thread(path.to_path_buf()))?
}

/// Unmounts and removes the namespace file; a missing one is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Sys {
                step: "unmount",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Io {
            step: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}
