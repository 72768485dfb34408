//! The propagation of the container's mount tree (OCI `linux.rootfsPropagation`), in runc's
//! steps. By default every mount of the new namespace is made private, so nothing the
//! container mounts reaches the host and nothing the host mounts reaches the container.
//! Any other type (`rslave` to see the host's later mounts, `rshared` to share with it) is
//! set on the whole copied tree first; then the mount holding the rootfs is made private
//! (else the rootfs mount itself would appear on the host, and pivot_root refuses a shared
//! parent), and the rootfs tree a slave (a bind rootfs is otherwise a peer of its host
//! source, and the container's /proc would show up there). After pivot_root the type is set
//! on the new root too.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::mount_options;

/// Failures setting propagation; each names the mount it failed on.
#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    #[error("unknown rootfs propagation {name:?} (shared, slave, private, unbindable, or r…)")]
    Unknown { name: String },
    #[error("set the propagation of {path}")]
    Set {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("find the mount holding the rootfs {rootfs}")]
    FindParent {
        rootfs: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The flags for `linux.rootfsPropagation`; recursive private when it is not given.
pub fn root_flags(name: Option<&str>) -> Result<MsFlags, PropagationError> {
    match name {
        None => Ok(MsFlags::MS_REC | MsFlags::MS_PRIVATE),
        Some(name) => mount_options::propagation(name).ok_or_else(|| PropagationError::Unknown {
            name: name.to_owned(),
        }),
    }
}

/// Only recursive private cuts every mount off the host; a non-recursive `private` or
/// `slave` leaves the mounts below `/` peers of the host's, so it takes the extra steps.
fn is_private(flags: MsFlags) -> bool {
    flags == MsFlags::MS_REC | MsFlags::MS_PRIVATE
}

fn set(path: &Path, flags: MsFlags) -> Result<(), PropagationError> {
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>).map_err(|source| {
        PropagationError::Set {
            path: path.to_owned(),
            source,
        }
    })
}

/// Before the rootfs is mounted at `rootfs`: the namespace's type, and a private mount to
/// hold the rootfs when that type is not private.
pub fn prepare(flags: MsFlags, rootfs: &Path) -> Result<(), PropagationError> {
    set(Path::new("/"), flags)?;
    if is_private(flags) {
        return Ok(());
    }
    let find = |source| PropagationError::FindParent {
        rootfs: rootfs.to_owned(),
        source,
    };
    let real = fs::canonicalize(rootfs).map_err(find)?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(find)?;
    let parent = containing_mount(&mountinfo, &real).unwrap_or_else(|| PathBuf::from("/"));
    set(&parent, MsFlags::MS_PRIVATE)
}

/// After the rootfs is mounted: with a non-private type, its tree only receives events.
pub fn isolate_rootfs(flags: MsFlags, rootfs: &Path) -> Result<(), PropagationError> {
    if is_private(flags) {
        return Ok(());
    }
    set(rootfs, MsFlags::MS_REC | MsFlags::MS_SLAVE)
}

/// After pivot_root: the new root gets the type too (recursive private is there already).
pub fn finish(flags: MsFlags) -> Result<(), PropagationError> {
    if is_private(flags) {
        return Ok(());
    }
    set(Path::new("/"), flags)
}

/// The mount point in `mountinfo` (the text of /proc/self/mountinfo) that holds `path`: the
/// longest one `path` is under, component-wise.
pub fn containing_mount(mountinfo: &str, path: &Path) -> Option<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape(point)))
        .filter(|point| path.starts_with(point))
        .max_by_key(|point| point.components().count())
}

/// mountinfo writes space, tab, newline and backslash as three octal digits (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 27 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw
31 30 0:26 / /run/coracle\\040state rw - tmpfs tmpfs rw
32 27 0:27 / /runner rw - tmpfs tmpfs rw
";

    #[test]
    fn containing_mount_is_the_longest_component_prefix() {
        for (path, want) in [
            ("/run/coracle state/app/rootfs", "/run/coracle state"),
            ("/run/other/rootfs", "/run"),
            ("/runner/x", "/runner"),
            ("/var/lib/x", "/"),
        ] {
            assert_eq!(
                containing_mount(MOUNTINFO, Path::new(path)),
                Some(PathBuf::from(want)),
                "{path}"
            );
        }
    }

    #[test]
    fn unescape_reads_octal_escapes_only() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape(r"/a\9b\04"), r"/a\9b\04");
    }

    #[test]
    fn root_flags_default_to_recursive_private_and_refuse_unknown_names() {
        assert_eq!(
            root_flags(None).unwrap(),
            MsFlags::MS_REC | MsFlags::MS_PRIVATE
        );
        assert_eq!(
            root_flags(Some("rslave")).unwrap(),
            MsFlags::MS_REC | MsFlags::MS_SLAVE
        );
        assert!(matches!(
            root_flags(Some("bind")),
            Err(PropagationError::Unknown { .. })
        ));
    }
}
