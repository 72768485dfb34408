//! The optional user namespace: container root is an unprivileged host id.
//!
//! Steps, split between the shim (host root) and the container's init:
//! 1. the shim clones the init with `CLONE_NEWUSER` next to the other namespaces, so every
//!    namespace of the container is owned by the new user namespace;
//! 2. the shim writes `/proc/PID/uid_map` and `gid_map`. It is host root (CAP_SETUID and
//!    CAP_SETGID over the parent namespace), so `setgroups` stays allowed: the container
//!    may still set supplementary groups, which an image's `user:group` needs;
//! 3. the shim builds the rootfs as a detached mount: the overlay's lower dirs (store
//!    layers, owned by host root) as idmapped mounts, so on-disk id N reads as container
//!    id N; the upper dir plain and chowned to the host id of container root, so what the
//!    container writes is owned on the host by that unprivileged id. The overlay is mounted
//!    with the shim's credentials (trusted.* xattrs of the store's opaque dirs keep
//!    working), in a scratch mount namespace older kernels need (`idmapped_overlay`), and
//!    handed to the init over the go socket (`SCM_RIGHTS`);
//! 4. the init becomes root of its namespace (`setgroups([])`, gid 0, uid 0) and attaches
//!    the rootfs where it would have mounted it.
//!
//! A plain-directory rootfs whose owner is already a mapped host id (the OCI convention:
//! chown the bundle's rootfs to the range) is bind-mounted as usual; one owned by an
//! unmapped id (host root) is idmapped like a lower dir. Writes there then land with the
//! on-disk ids the container sees, so such a directory should not be shared with the host.

use std::fmt::Write as _;
use std::fs;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Pid, Uid};

use super::idmapped_overlay;
use super::mount_api;
use super::spec::{IdMapping, IdRange, Rootfs};

/// The kernel accepts at most this many lines per map.
const MAX_MAP_LINES: usize = 340;

/// Failures of the user-namespace steps, each naming its object.
#[derive(Debug, thiserror::Error)]
pub enum UserNsError {
    #[error("invalid id mapping: {reason}")]
    InvalidMapping { reason: String },
    #[error("write id map {path}")]
    WriteMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open user namespace {path}")]
    OpenNamespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("inspect rootfs dir {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("chown upper dir {path} to the container's root")]
    ChownUpper {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("clone the mount tree at {path}")]
    CloneTree {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(
        "idmap the mount tree of {path} (kernel >= 5.12 and an idmap-capable filesystem needed)"
    )]
    Idmap {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("start the thread that builds the idmapped overlay")]
    SpawnBuilder(#[source] std::io::Error),
    #[error("the thread that builds the idmapped overlay panicked")]
    BuilderPanicked,
    #[error("enter a private scratch mount namespace to build the idmapped overlay")]
    ScratchNamespace(#[source] nix::Error),
    #[error("attach the idmapped layer {path} in the scratch mount namespace")]
    AttachLayer {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("mount overlay with upper dir {upper}")]
    MountOverlay {
        upper: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("hand the rootfs mount to the init")]
    Handover(#[source] nix::Error),
    #[error("become root of the user namespace")]
    BecomeRoot(#[source] nix::Error),
    #[error("attach the rootfs at {target}")]
    AttachRootfs {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("switch network namespace around the clone")]
    SwitchNetns(#[source] nix::Error),
}

/// Refuses mappings the kernel would refuse, or that defeat the purpose: empty, overflowing,
/// overlapping, too many lines, container root unmapped, or host root mapped.
pub fn check(mapping: &IdMapping) -> Result<(), UserNsError> {
    for (what, ranges) in [("uid", &mapping.uids), ("gid", &mapping.gids)] {
        let bad = |reason: String| {
            Err(UserNsError::InvalidMapping {
                reason: format!("{what} map: {reason}"),
            })
        };
        if ranges.is_empty() || ranges.len() > MAX_MAP_LINES {
            return bad(format!("needs 1 to {MAX_MAP_LINES} ranges"));
        }
        for (i, r) in ranges.iter().enumerate() {
            let ends = (
                r.container_start.checked_add(r.count),
                r.host_start.checked_add(r.count),
            );
            if r.count == 0 || ends.0.is_none() || ends.1.is_none() {
                return bad(format!("range {r:?} is empty or overflows"));
            }
            if r.host_start == 0 {
                return bad("host id 0 is mapped; the container's root would be host root".into());
            }
            let clash = |a: u32, b: u32, len_a: u32, len_b: u32| {
                u64::from(a) < u64::from(b) + u64::from(len_b)
                    && u64::from(b) < u64::from(a) + u64::from(len_a)
            };
            for o in &ranges[..i] {
                if clash(o.container_start, r.container_start, o.count, r.count)
                    || clash(o.host_start, r.host_start, o.count, r.count)
                {
                    return bad(format!("ranges {o:?} and {r:?} overlap"));
                }
            }
        }
        if host_id(ranges, 0).is_none() {
            return bad("container id 0 is not mapped".into());
        }
    }
    Ok(())
}

/// The host id of container id `id`, if mapped.
pub fn host_id(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let offset = id.checked_sub(r.container_start)?;
        (offset < r.count).then(|| r.host_start + offset)
    })
}

/// Whether host id `id` is inside one of the ranges.
fn maps_host_id(ranges: &[IdRange], id: u32) -> bool {
    ranges
        .iter()
        .any(|r| id >= r.host_start && id - r.host_start < r.count)
}

/// `/proc/PID/uid_map` text: one `container host count` line per range.
pub fn map_text(ranges: &[IdRange]) -> String {
    let mut text = String::new();
    for r in ranges {
        let _ = writeln!(text, "{} {} {}", r.container_start, r.host_start, r.count);
    }
    text
}

/// Step 2: the maps of the init's new user namespace.
pub fn write_maps(pid: Pid, mapping: &IdMapping) -> Result<(), UserNsError> {
    for (file, ranges) in [("uid_map", &mapping.uids), ("gid_map", &mapping.gids)] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        fs::write(&path, map_text(ranges))
            .map_err(|source| UserNsError::WriteMap { path, source })?;
    }
    Ok(())
}

/// Step 3: the rootfs as a detached mount for the init to attach, or `None` when a plain
/// bind by the init is right (a directory already owned by the mapped range).
pub fn prepare_rootfs(
    pid: Pid,
    mapping: &IdMapping,
    rootfs: &Rootfs,
) -> Result<Option<OwnedFd>, UserNsError> {
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/user"));
    let userns = fs::File::open(&ns_path)
        .map(OwnedFd::from)
        .map_err(|source| UserNsError::OpenNamespace {
            path: ns_path,
            source,
        })?;
    match rootfs {
        Rootfs::Directory(dir) => {
            let owner = fs::metadata(dir)
                .map_err(|source| UserNsError::Inspect {
                    path: dir.clone(),
                    source,
                })?
                .uid();
            if maps_host_id(&mapping.uids, owner) {
                return Ok(None);
            }
            idmapped_tree(dir, &userns).map(Some)
        }
        Rootfs::Overlay { lower, upper, work } => {
            chown_to_container_root(upper, mapping)?;
            let layers = lower
                .iter()
                .map(|dir| Ok((dir.clone(), idmapped_tree(dir, &userns)?)))
                .collect::<Result<Vec<_>, UserNsError>>()?;
            idmapped_overlay::build(&layers, upper, work).map(Some)
        }
    }
}

fn idmapped_tree(dir: &Path, userns: &OwnedFd) -> Result<OwnedFd, UserNsError> {
    let tree = mount_api::clone_tree(dir).map_err(|source| UserNsError::CloneTree {
        path: dir.to_owned(),
        source,
    })?;
    mount_api::set_idmap(&tree, userns).map_err(|source| UserNsError::Idmap {
        path: dir.to_owned(),
        source,
    })?;
    Ok(tree)
}

/// A fresh upper dir (owned by host root) becomes the container root's; one already owned
/// by someone else is left as it is.
fn chown_to_container_root(upper: &Path, mapping: &IdMapping) -> Result<(), UserNsError> {
    let meta = fs::metadata(upper).map_err(|source| UserNsError::Inspect {
        path: upper.to_owned(),
        source,
    })?;
    if meta.uid() != 0 {
        return Ok(());
    }
    let uid = host_id(&mapping.uids, 0).map(Uid::from_raw);
    let gid = host_id(&mapping.gids, 0).map(Gid::from_raw);
    nix::unistd::chown(upper, uid, gid).map_err(|source| UserNsError::ChownUpper {
        path: upper.to_owned(),
        source,
    })
}

/// Sends the one-byte go message, with the rootfs mount attached when there is one.
pub fn send_go(socket: RawFd, byte: u8, tree: Option<&OwnedFd>) -> Result<(), UserNsError> {
    let fds: Vec<RawFd> = tree.iter().map(|t| t.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    let data = [byte];
    sendmsg::<()>(
        socket,
        &[IoSlice::new(&data)],
        &cmsgs,
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(UserNsError::Handover)
}

/// Receives the go message: its byte and the rootfs mount, if one came with it.
pub fn receive_go(socket: BorrowedFd<'_>) -> Result<(u8, Option<OwnedFd>), UserNsError> {
    let mut data = [0u8];
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(UserNsError::Handover)?;
    if msg.bytes == 0 {
        return Err(UserNsError::Handover(Errno::EPIPE));
    }
    let mut tree = None;
    for cmsg in msg.cmsgs().map_err(UserNsError::Handover)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: SCM_RIGHTS just installed `fd` in this process; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                tree.get_or_insert(owned);
            }
        }
    }
    Ok((data[0], tree))
}

/// Step 4 (in the init, maps written): root of the namespace, no host groups left.
pub fn become_root() -> Result<(), UserNsError> {
    // Supplementary groups are still the shim's host groups (root's), which would grant
    // group access to host files through bind mounts.
    setgroups(&[]).map_err(UserNsError::BecomeRoot)?;
    let (gid, uid) = (Gid::from_raw(0), Uid::from_raw(0));
    setresgid(gid, gid, gid).map_err(UserNsError::BecomeRoot)?;
    setresuid(uid, uid, uid).map_err(UserNsError::BecomeRoot)
}

/// Attaches the rootfs mount the shim built at `target`.
pub fn attach_rootfs(tree: &OwnedFd, target: &Path) -> Result<(), UserNsError> {
    mount_api::attach(tree, target).map_err(|source| UserNsError::AttachRootfs {
        target: target.to_owned(),
        source,
    })
}

/// Runs `clone` with the shim inside `netns` (if any), then returns to its own. A user
/// namespace's init cannot join a network namespace owned by the host's user namespace,
/// so it inherits it at clone instead.
pub fn clone_in_netns<T>(
    netns: Option<&OwnedFd>,
    clone: impl FnOnce() -> T,
) -> Result<T, UserNsError> {
    let Some(netns) = netns else {
        return Ok(clone());
    };
    let path = PathBuf::from("/proc/self/ns/net");
    let own =
        fs::File::open(&path).map_err(|source| UserNsError::OpenNamespace { path, source })?;
    let flag = nix::sched::CloneFlags::CLONE_NEWNET;
    nix::sched::setns(netns, flag).map_err(UserNsError::SwitchNetns)?;
    let result = clone();
    nix::sched::setns(own, flag).map_err(UserNsError::SwitchNetns)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(container_start: u32, host_start: u32, count: u32) -> IdRange {
        IdRange {
            container_start,
            host_start,
            count,
        }
    }

    #[test]
    fn root_at_maps_container_root_to_host_start() {
        let m = IdMapping::root_at(100_000, 65_536);
        check(&m).unwrap();
        assert_eq!(host_id(&m.uids, 0), Some(100_000));
        assert_eq!(host_id(&m.gids, 65_535), Some(165_535));
        assert_eq!(host_id(&m.uids, 65_536), None);
        assert_eq!(map_text(&m.uids), "0 100000 65536\n");
    }

    #[test]
    fn check_refuses_mappings_that_defeat_the_namespace() {
        let cases = [
            (vec![range(0, 0, 65_536)], "host id 0"),
            (vec![range(1, 100_000, 10)], "container id 0"),
            (vec![], "ranges"),
            (vec![range(0, 100_000, 0)], "empty"),
            (vec![range(0, u32::MAX - 1, 10)], "overflows"),
            (
                vec![range(0, 100_000, 10), range(5, 200_000, 10)],
                "overlap",
            ),
            (
                vec![range(0, 100_000, 10), range(20, 100_005, 10)],
                "overlap",
            ),
        ];
        for (uids, want) in cases {
            let m = IdMapping {
                uids: uids.clone(),
                gids: vec![range(0, 100_000, 10)],
            };
            let err = check(&m).unwrap_err().to_string();
            assert!(err.contains(want), "{uids:?}: {err}");
        }
    }

    #[test]
    fn several_ranges_map_ids_piecewise() {
        let uids = vec![range(0, 100_000, 1), range(1000, 101_000, 10)];
        assert_eq!(host_id(&uids, 1005), Some(101_005));
        assert_eq!(host_id(&uids, 1), None);
        assert!(maps_host_id(&uids, 101_009) && !maps_host_id(&uids, 0));
        assert_eq!(map_text(&uids), "0 100000 1\n1000 101000 10\n");
    }
}
