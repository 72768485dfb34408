//! Filesystem setup inside the container's private mount namespace: the rootfs (overlayfs or
//! a bind), the spec's mounts, pivot_root, masked and read-only paths. Every mount made here
//! belongs to the container's mount namespace and disappears with it: nothing to unmount on
//! the host.

use std::fs;
use std::path::{Component, Path, PathBuf};

use std::os::fd::AsRawFd;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::mount_options::{self, MountOptions};
use crate::runtime::spec::{Mount, MountKind, Rootfs};

/// Failures of the mount steps; each names the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("overlay path {path} has a ',' or ':', which overlayfs options cannot carry")]
    OverlayPath { path: PathBuf },
    #[error("mount rootfs at {target}")]
    MountRootfs {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("mount destination {destination:?} leaves the rootfs")]
    DestinationEscapes { destination: String },
    #[error("prepare mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount {kind:?} at {destination}")]
    Mount {
        kind: MountKind,
        destination: String,
        #[source]
        source: nix::Error,
    },
    #[error("set the propagation of the mount at {destination}")]
    Propagation {
        destination: String,
        #[source]
        source: nix::Error,
    },
    #[error("bind mount needs a source: {destination}")]
    BindWithoutSource { destination: String },
    #[error("open the old root before pivot_root")]
    OpenOldRoot(#[source] std::io::Error),
    #[error("pivot_root into {rootfs}")]
    PivotRoot {
        rootfs: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("mask path {path}")]
    Mask {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("make path read-only: {path}")]
    ReadOnly {
        path: String,
        #[source]
        source: nix::Error,
    },
}

/// Mounts the rootfs at `target`.
pub fn mount_rootfs(rootfs: &Rootfs, target: &Path) -> Result<(), MountError> {
    let err = |source| MountError::MountRootfs {
        target: target.to_owned(),
        source,
    };
    match rootfs {
        Rootfs::Directory(dir) => mount(
            Some(dir),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(err),
        Rootfs::Overlay { lower, upper, work } => {
            let data = overlay_options(lower, upper, work)?;
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(err)
        }
    }
}

/// `lowerdir=a:b,upperdir=u,workdir=w`; overlayfs has no escaping, so ',' and ':' are refused.
pub fn overlay_options(lower: &[PathBuf], upper: &Path, work: &Path) -> Result<String, MountError> {
    for path in lower.iter().map(PathBuf::as_path).chain([upper, work]) {
        let text = path.to_string_lossy();
        if text.contains(',') || text.contains(':') {
            return Err(MountError::OverlayPath {
                path: path.to_owned(),
            });
        }
    }
    let lower: Vec<_> = lower.iter().map(|p| p.to_string_lossy()).collect();
    Ok(format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    ))
}

/// `rootfs` joined with an absolute in-container path that has no `..`.
pub fn inside(rootfs: &Path, destination: &str) -> Result<PathBuf, MountError> {
    let relative = Path::new(destination);
    let ok = relative.is_absolute()
        && relative
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !ok {
        return Err(MountError::DestinationEscapes {
            destination: destination.into(),
        });
    }
    Ok(rootfs.join(relative.strip_prefix("/").unwrap_or(relative)))
}

/// Creates the mount point one component at a time, checking after each that, symlinks
/// resolved, it is still in the rootfs: the image is untrusted and may hold `/proc -> /`,
/// and nothing may be created on the host through such a link.
fn mount_point(rootfs: &Path, destination: &str, is_file: bool) -> Result<PathBuf, MountError> {
    inside(rootfs, destination)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| MountError::MountPoint { path, source }
    };
    let root = rootfs.canonicalize().map_err(io(rootfs))?;
    let parts: Vec<_> = Path::new(destination).components().skip(1).collect();
    let mut current = root.clone();
    for (i, part) in parts.iter().enumerate() {
        let next = current.join(part);
        match fs::symlink_metadata(&next) {
            Ok(_) => {
                current = next.canonicalize().map_err(io(&next))?;
                if !current.starts_with(&root) {
                    return Err(MountError::DestinationEscapes {
                        destination: destination.into(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let made = if is_file && i + 1 == parts.len() {
                    fs::write(&next, b"")
                } else {
                    fs::create_dir(&next)
                };
                made.map_err(io(&next))?;
                current = next;
            }
            Err(source) => return Err(MountError::MountPoint { path: next, source }),
        }
    }
    Ok(current)
}

/// Mounts one spec mount under `rootfs` (before pivot_root, so bind sources are host paths).
pub fn mount_one(rootfs: &Path, m: &Mount) -> Result<(), MountError> {
    let MountOptions {
        flags,
        data,
        propagation,
    } = mount_options::parse(&m.options);
    let source_is_file = m.source.as_deref().is_some_and(Path::is_file);
    let target = mount_point(
        rootfs,
        &m.destination,
        m.kind == MountKind::Bind && source_is_file,
    )?;
    let err = |source| MountError::Mount {
        kind: m.kind,
        destination: m.destination.clone(),
        source,
    };
    let data = (!data.is_empty()).then_some(data.as_str());
    match m.kind {
        MountKind::Bind => {
            let source = m
                .source
                .as_ref()
                .ok_or_else(|| MountError::BindWithoutSource {
                    destination: m.destination.clone(),
                })?;
            let bind = MsFlags::MS_BIND | (flags & MsFlags::MS_REC);
            mount(Some(source), &target, None::<&str>, bind, None::<&str>).map_err(err)?;
            // Bind mounts ignore other flags until remounted.
            let rest = flags - MsFlags::MS_BIND - MsFlags::MS_REC;
            if !rest.is_empty() {
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                    None::<&str>,
                )
                .map_err(err)?;
            }
        }
        kind => {
            let fstype = match kind {
                MountKind::Tmpfs => "tmpfs",
                MountKind::Proc => "proc",
                MountKind::Sysfs => "sysfs",
                MountKind::Devpts => "devpts",
                MountKind::Mqueue => "mqueue",
                MountKind::Cgroup | MountKind::Bind => "cgroup2",
            };
            // The spec's source names the instance (`shm`, `devpts`); the type stands in.
            let source = m.source.as_deref().unwrap_or(Path::new(fstype));
            mount(Some(source), &target, Some(fstype), flags, data).map_err(err)?;
        }
    }
    // Only now: the kernel takes a propagation type only on an existing mount.
    for kind in propagation {
        mount(None::<&str>, &target, None::<&str>, kind, None::<&str>).map_err(|source| {
            MountError::Propagation {
                destination: m.destination.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Where the host (this mount namespace, before pivot_root) has its cgroup2 hierarchy
/// mounted: `/sys/fs/cgroup` on a pure cgroup v2 system, `/sys/fs/cgroup/unified` on a
/// hybrid one; `None` when neither is a cgroup2 mount.
pub fn host_cgroup2_mount() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| {
            nix::sys::statfs::statfs(path)
                .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        })
}

/// The host's cgroup2 mount `host` at `m`'s destination, with `m`'s flags (read-only as
/// specs ask): the same tree a new cgroup2 mount in the host's cgroup namespace shows.
pub fn bind_host_cgroup2(rootfs: &Path, m: &Mount, host: &Path) -> Result<(), MountError> {
    let bind = Mount {
        kind: MountKind::Bind,
        source: Some(host.to_path_buf()),
        ..m.clone()
    };
    mount_one(rootfs, &bind).map_err(|err| match err {
        MountError::Mount {
            destination,
            source,
            ..
        } => MountError::Mount {
            kind: MountKind::Cgroup,
            destination,
            source,
        },
        other => other,
    })
}

/// The host's sysfs at `m`'s destination: bound recursively (a user namespace may not bind
/// a tree with locked submounts on its own) and read-only, nosuid, nodev, noexec throughout.
pub fn bind_host_sysfs(rootfs: &Path, m: &Mount) -> Result<(), MountError> {
    let target = mount_point(rootfs, &m.destination, false)?;
    let err = |source| MountError::Mount {
        kind: MountKind::Sysfs,
        destination: m.destination.clone(),
        source,
    };
    mount(
        Some("/sys"),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err)?;
    crate::runtime::mount_api::lock_down_tree(&target).map_err(err)
}

/// Makes `rootfs` the root and drops the old root (detached, so nothing of the host stays
/// reachable).
pub fn pivot_into(rootfs: &Path) -> Result<(), MountError> {
    let err = |source| MountError::PivotRoot {
        rootfs: rootfs.to_owned(),
        source,
    };
    // A handle on the old root: after pivot_root it lies over the new one, and "." in a
    // mount call would mean the new root's tree.
    let old_root = fs::File::open("/").map_err(MountError::OpenOldRoot)?;
    nix::unistd::chdir(rootfs).map_err(err)?;
    // pivot_root(".", ".") stacks the old root under the new one; unmount it right away.
    nix::unistd::pivot_root(".", ".").map_err(err)?;
    nix::unistd::fchdir(old_root.as_raw_fd()).map_err(err)?;
    // Unmounts propagate like mounts: with a shared rootfs propagation the old root's
    // mounts still have peers on the host, which the detach would unmount as well. As a
    // slave tree it only receives (runc does the same). Only the old tree: the container's
    // own mounts keep the propagation they were given.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err)?;
    nix::unistd::chdir("/").map_err(err)
}

/// Hides `path` (after pivot_root): /dev/null over files, an empty read-only tmpfs over dirs.
pub fn mask(path: &str) -> Result<(), MountError> {
    let err = |source| MountError::Mask {
        path: path.into(),
        source,
    };
    match fs::metadata(path) {
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(err),
        Ok(_) => mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err),
    }
}

/// Makes `path` read-only (after pivot_root); a missing path is skipped.
pub fn make_readonly(path: &str) -> Result<(), MountError> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let err = |source| MountError::ReadOnly {
        path: path.into(),
        source,
    };
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err)?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>).map_err(err)
}

/// Remounts the new root read-only.
pub fn readonly_root() -> Result<(), MountError> {
    make_readonly("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_list_lower_dirs_top_first() {
        let lower = [PathBuf::from("/l/top"), PathBuf::from("/l/base")];
        let got = overlay_options(&lower, Path::new("/c/upper"), Path::new("/c/work")).unwrap();
        assert_eq!(
            got,
            "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work"
        );
    }

    #[test]
    fn overlay_options_refuse_separator_characters() {
        let err = overlay_options(&[PathBuf::from("/l/a:b")], Path::new("/u"), Path::new("/w"))
            .unwrap_err();
        assert!(err.to_string().contains("/l/a:b"));
    }

    #[test]
    fn inside_rejects_relative_and_dotdot_destinations() {
        assert_eq!(
            inside(Path::new("/r"), "/proc").unwrap(),
            PathBuf::from("/r/proc")
        );
        for bad in ["proc", "/../etc", "/a/../../b"] {
            assert!(
                matches!(
                    inside(Path::new("/r"), bad),
                    Err(MountError::DestinationEscapes { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn mount_point_refuses_a_symlink_out_of_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("proc")).unwrap();
        let err = mount_point(dir.path(), "/proc/x", false).unwrap_err();
        assert!(matches!(err, MountError::DestinationEscapes { .. }));
    }
}
