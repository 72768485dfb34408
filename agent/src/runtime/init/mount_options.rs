//! OCI mount options read into what mount(2) takes: flags for the mount itself, the
//! filesystem's data string, and the propagation changes made afterwards. Propagation is a
//! separate call because the kernel refuses it mixed with a new mount (`shared` on a fresh
//! tmpfs is EINVAL) and applies only one propagation type per call. Pure, so it is tested
//! without root.

use nix::mount::MsFlags;

/// One mount's options, split by where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount (or, for a bind, its remount).
    pub flags: MsFlags,
    /// Filesystem options (`mode=755,size=64k`), comma-joined.
    pub data: String,
    /// Propagation changes, applied after the mount in the order given (runc's order).
    pub propagation: Vec<MsFlags>,
}

/// The propagation type an OCI name stands for (also `linux.rootfsPropagation`); `r…`
/// applies it to every mount below as well.
pub fn propagation(name: &str) -> Option<MsFlags> {
    let (recursive, base) = match name.strip_prefix('r') {
        // "rprivate" but not "r" alone or a name that merely starts with r.
        Some(rest) if !rest.is_empty() => (MsFlags::MS_REC, rest),
        _ => (MsFlags::empty(), name),
    };
    let kind = match base {
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "private" => MsFlags::MS_PRIVATE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(kind | recursive)
}

/// Splits OCI-style options into flags, the data string and propagation changes.
pub fn parse(options: &[String]) -> MountOptions {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut changes = Vec::new();
    for option in options {
        if let Some(kind) = propagation(option) {
            changes.push(kind);
            continue;
        }
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other),
        }
    }
    MountOptions {
        flags,
        data: data.join(","),
        propagation: changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(options: &[&str]) -> Vec<String> {
        options.iter().map(|o| o.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let got = parse(&strings(&["nosuid", "ro", "mode=755", "size=65536k"]));
        assert_eq!(got.flags, MsFlags::MS_NOSUID | MsFlags::MS_RDONLY);
        assert_eq!(got.data, "mode=755,size=65536k");
        assert!(got.propagation.is_empty());
    }

    #[test]
    fn propagation_options_are_kept_apart_in_order() {
        let got = parse(&strings(&["rbind", "rshared", "ro", "unbindable"]));
        assert_eq!(
            got.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(got.data, "");
        assert_eq!(
            got.propagation,
            [MsFlags::MS_SHARED | MsFlags::MS_REC, MsFlags::MS_UNBINDABLE]
        );
    }

    #[test]
    fn every_oci_propagation_name_is_known() {
        let rec = MsFlags::MS_REC;
        for (name, want) in [
            ("shared", MsFlags::MS_SHARED),
            ("rshared", MsFlags::MS_SHARED | rec),
            ("slave", MsFlags::MS_SLAVE),
            ("rslave", MsFlags::MS_SLAVE | rec),
            ("private", MsFlags::MS_PRIVATE),
            ("rprivate", MsFlags::MS_PRIVATE | rec),
            ("unbindable", MsFlags::MS_UNBINDABLE),
            ("runbindable", MsFlags::MS_UNBINDABLE | rec),
        ] {
            assert_eq!(propagation(name), Some(want), "{name}");
        }
        for not_one in ["", "r", "rw", "ro", "rbind", "Shared", "rrshared"] {
            assert_eq!(propagation(not_one), None, "{not_one}");
        }
    }
}
