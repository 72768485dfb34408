//! The container's minimal /dev: a few standard character devices, the pts and stdio links,
//! the host devices the spec passes through and the nodes it describes (OCI
//! `linux.devices`). Nothing else exists, so an unlisted device cannot be opened even
//! before the devices cgroup is consulted.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::runtime::spec::{Device, DeviceNode, NodeKind};

/// Failures making /dev.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("passed-through device {path} is not a device node on the host")]
    NotADevice { path: PathBuf },
    #[error("inspect host device {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("create device node {path}")]
    Mknod {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("set the mode of device node {path} to {mode:o}")]
    Mode {
        path: PathBuf,
        mode: u32,
        #[source]
        source: nix::Error,
    },
    #[error("set the owner of device node {path} to {uid}:{gid}")]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("bind host device {host} at {path}")]
    Bind {
        host: PathBuf,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("create /dev entry {path}")]
    Entry {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A device node to create: container path, host node, kind, major, minor, mode, owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    /// The host's node, bind-mounted when the container may not mknod (user namespace).
    pub host_path: PathBuf,
    pub kind: NodeKind,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    /// Set after mknod (a described node's uid and gid); `None` keeps root's.
    pub owner: Option<(u32, u32)>,
    /// Whether the container's device cgroup lets it create this node (`m`). The init runs
    /// in that cgroup: a node it may not mknod is the host's, bind-mounted.
    pub mknod: bool,
}

/// null, zero, full, random, urandom, tty: what every container has.
pub fn default_nodes() -> Vec<Node> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| Node {
        path: format!("/dev/{name}"),
        host_path: PathBuf::from(format!("/dev/{name}")),
        kind: NodeKind::Char,
        major,
        minor,
        mode: 0o666,
        owner: None,
        mknod: true,
    })
    .collect()
}

/// The node for one spec device: as described, or copied from the host's.
pub fn node_for(device: &Device) -> Result<Node, DevError> {
    match &device.node {
        Some(given) => Ok(described_node(device, given)),
        None => host_node(device),
    }
}

/// A node as the spec describes it; nothing on the host is consulted.
pub fn described_node(device: &Device, given: &DeviceNode) -> Node {
    Node {
        path: device
            .container_path
            .clone()
            .unwrap_or_else(|| device.host_path.to_string_lossy().into_owned()),
        host_path: device.host_path.clone(),
        kind: given.kind,
        major: given.major,
        minor: given.minor,
        mode: given.mode & 0o7777,
        owner: Some((given.uid, given.gid)),
        // The device cgroup does not govern FIFOs.
        mknod: device.access.mknod || given.kind == NodeKind::Fifo,
    }
}

/// Looks up a passed-through device on the host.
pub fn host_node(device: &Device) -> Result<Node, DevError> {
    let meta = fs::metadata(&device.host_path).map_err(|source| DevError::Inspect {
        path: device.host_path.clone(),
        source,
    })?;
    let kind = meta.file_type();
    if !kind.is_char_device() && !kind.is_block_device() {
        return Err(DevError::NotADevice {
            path: device.host_path.clone(),
        });
    }
    let rdev = meta.rdev();
    Ok(Node {
        path: device
            .container_path
            .clone()
            .unwrap_or_else(|| device.host_path.to_string_lossy().into_owned()),
        host_path: device.host_path.clone(),
        kind: if kind.is_block_device() {
            NodeKind::Block
        } else {
            NodeKind::Char
        },
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
        mode: meta.mode() & 0o7777,
        owner: None,
        mknod: device.access.mknod,
    })
}

/// Directories of the host's /dev that hold no devices of the host's own: mounts every
/// container makes for itself (pts, shm, mqueue) and udev's and LXC's bookkeeping, as
/// Docker's host device walk skips them.
const NOT_HOST_DEVICES: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Every character and block device under `dev` (the host's `/dev`), as nodes at the same
/// path under the container's /dev, with the host's mode and owner: a privileged
/// container's devices, as Docker's `--privileged` copies them (snapshot at create time;
/// later hot-plugged devices do not appear). `console` and `ptmx` are the container's own.
pub fn host_device_nodes(dev: &Path) -> Result<Vec<Node>, DevError> {
    let mut nodes = Vec::new();
    let mut dirs = vec![dev.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(&dir).map_err(|source| DevError::Inspect {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| DevError::Inspect {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            // symlink_metadata: a link is not followed (by-id, by-path, …).
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                // Unplugged while walking.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(DevError::Inspect { path, source }),
            };
            let Ok(relative) = path.strip_prefix(dev) else {
                continue;
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                if dir != dev || !NOT_HOST_DEVICES.iter().any(|d| relative == Path::new(d)) {
                    dirs.push(path);
                }
                continue;
            }
            let node_kind = if kind.is_char_device() {
                NodeKind::Char
            } else if kind.is_block_device() {
                NodeKind::Block
            } else {
                continue;
            };
            if relative == Path::new("console") || relative == Path::new("ptmx") {
                continue;
            }
            let rdev = meta.rdev();
            nodes.push(Node {
                path: Path::new("/dev")
                    .join(relative)
                    .to_string_lossy()
                    .into_owned(),
                host_path: path.clone(),
                kind: node_kind,
                major: nix::sys::stat::major(rdev),
                minor: nix::sys::stat::minor(rdev),
                mode: meta.mode() & 0o7777,
                owner: Some((meta.uid(), meta.gid())),
                mknod: true,
            });
        }
    }
    nodes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(nodes)
}

/// How device nodes come into being.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    Mknod,
    /// Bind the host's node over an empty file: a user namespace may not mknod devices.
    BindHost,
}

/// Creates `nodes` and the standard links under `rootfs/dev` (a fresh tmpfs).
pub fn populate(rootfs: &Path, nodes: &[Node], creation: Creation) -> Result<(), DevError> {
    for node in nodes {
        let path = super::mounts::inside(rootfs, &node.path).map_err(|_| DevError::NotADevice {
            path: PathBuf::from(&node.path),
        })?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|source| DevError::Entry {
                path: parent.to_owned(),
                source,
            })?;
        }
        // A FIFO is no device: a user namespace may create it.
        let may_mknod = creation == Creation::Mknod || node.kind == NodeKind::Fifo;
        if !may_mknod || !node.mknod {
            bind_host_node(node, &path)?;
            continue;
        }
        match make_node(node, &path) {
            Ok(()) => {}
            // Not allowed to create it (runc's fallback): the host's node of the same path.
            // Only mknod's own refusal: after it, the path exists and must not be bound over.
            Err(DevError::Mknod {
                source: Errno::EPERM,
                ..
            }) if node.host_path.exists() => bind_host_node(node, &path)?,
            Err(err) => return Err(err),
        }
    }
    let dev = rootfs.join("dev");
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        let path = dev.join(link);
        if fs::symlink_metadata(&path).is_err() {
            std::os::unix::fs::symlink(target, &path)
                .map_err(|source| DevError::Entry { path, source })?;
        }
    }
    Ok(())
}

/// mknod with the exact mode (mknod applies the umask) and the node's owner.
fn make_node(node: &Node, path: &Path) -> Result<(), DevError> {
    let kind = match node.kind {
        NodeKind::Char => SFlag::S_IFCHR,
        NodeKind::Block => SFlag::S_IFBLK,
        NodeKind::Fifo => SFlag::S_IFIFO,
    };
    let mode = Mode::from_bits_truncate(node.mode);
    mknod(path, kind, mode, makedev(node.major, node.minor)).map_err(|source| DevError::Mknod {
        path: path.to_owned(),
        source,
    })?;
    nix::sys::stat::fchmodat(
        None,
        path,
        mode,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|source| DevError::Mode {
        path: path.to_owned(),
        mode: node.mode,
        source,
    })?;
    if let Some((uid, gid)) = node.owner {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|source| DevError::Chown {
            path: path.to_owned(),
            uid,
            gid,
            source,
        })?;
    }
    Ok(())
}

fn bind_host_node(node: &Node, path: &Path) -> Result<(), DevError> {
    fs::write(path, b"").map_err(|source| DevError::Entry {
        path: path.to_owned(),
        source,
    })?;
    nix::mount::mount(
        Some(&node.host_path),
        path,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| DevError::Bind {
        host: node.host_path.clone(),
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::DeviceAccess;

    #[test]
    fn host_node_reads_major_minor_of_dev_null() {
        let node = host_node(&Device {
            host_path: "/dev/null".into(),
            container_path: Some("/dev/mynull".into()),
            access: DeviceAccess::parse("r").unwrap(),
            node: None,
        })
        .unwrap();
        assert_eq!(
            (
                node.path.as_str(),
                node.kind,
                node.major,
                node.minor,
                node.mknod
            ),
            ("/dev/mynull", NodeKind::Char, 1, 3, false)
        );
    }

    #[test]
    fn described_node_takes_the_spec_and_never_the_host() {
        let given = DeviceNode {
            kind: NodeKind::Block,
            major: 7,
            minor: 200,
            mode: 0o20640,
            uid: 10,
            gid: 20,
        };
        let device = Device {
            host_path: "/nonexistent/dev/x".into(),
            container_path: None,
            access: DeviceAccess::parse("rw").unwrap(),
            node: Some(given),
        };
        let node = node_for(&device).unwrap();
        assert_eq!(
            node,
            Node {
                path: "/nonexistent/dev/x".into(),
                host_path: "/nonexistent/dev/x".into(),
                kind: NodeKind::Block,
                major: 7,
                minor: 200,
                mode: 0o640,
                owner: Some((10, 20)),
                mknod: false,
            }
        );
        let fifo = DeviceNode {
            kind: NodeKind::Fifo,
            ..given
        };
        // No device rule governs a FIFO, so it is always made, never bound.
        assert!(described_node(&device, &fifo).mknod);
    }

    #[test]
    fn host_device_nodes_are_the_devices_of_a_dev_tree_but_its_own_mounts() {
        let nodes = host_device_nodes(Path::new("/dev")).unwrap();
        let null = nodes.iter().find(|n| n.path == "/dev/null").unwrap();
        assert_eq!((null.kind, null.major, null.minor), (NodeKind::Char, 1, 3));
        assert!(nodes.iter().all(|n| n.mknod && n.path.starts_with("/dev/")));
        for own in ["/dev/pts/", "/dev/shm/", "/dev/mqueue/"] {
            assert!(!nodes.iter().any(|n| n.path.starts_with(own)), "{own}");
        }
        assert!(!nodes
            .iter()
            .any(|n| n.path == "/dev/ptmx" || n.path == "/dev/console"));
        // Nothing that is not a device: no links, no plain files.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("file"), b"").unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link")).unwrap();
        assert_eq!(host_device_nodes(dir.path()).unwrap(), []);
    }

    #[test]
    fn host_node_refuses_a_regular_file() {
        let err = host_node(&Device {
            host_path: "/etc/hostname".into(),
            container_path: None,
            access: DeviceAccess::ALL,
            node: None,
        })
        .unwrap_err();
        assert!(matches!(
            err,
            DevError::NotADevice { .. } | DevError::Inspect { .. }
        ));
    }
}
