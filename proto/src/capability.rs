//! Linux capability names as `cap_add`/`cap_drop` may give them: Docker's spelling rules
//! (any case, with or without the `CAP_` prefix, `ALL`) over the kernel's table. Both the
//! controller (refusing an app at deploy time) and the agent (validating a desired state,
//! mapping a service onto its container's capability set) use this one table, so a name
//! one side accepts the other can apply.

use alloc::string::String;

/// Every capability of Linux 6.x, in kernel number order (`CAP_CHOWN` is 0).
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// What a `cap_add`/`cap_drop` entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityName {
    /// Every capability (Docker's `ALL`).
    All,
    /// One capability, by its canonical name from [`CAPABILITIES`].
    One(&'static str),
}

/// Docker's default capability set: what a container has without `cap_add`. The agent
/// starts from it; the controller's deploy policy lets these be added without a grant.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Reads an entry as Docker does: case does not matter and the `CAP_` prefix is optional.
/// `None` for a name the kernel does not have.
pub fn capability_name(text: &str) -> Option<CapabilityName> {
    let upper = text.to_ascii_uppercase();
    if upper == "ALL" {
        return Some(CapabilityName::All);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES
        .iter()
        .find(|known| known.strip_prefix("CAP_") == Some(bare))
        .map(|known| CapabilityName::One(known))
}

/// The canonical name of an entry (`net_admin` → `CAP_NET_ADMIN`, `all` → `ALL`); an unknown
/// name is returned upper-cased with the prefix, for the caller's error to show.
pub fn canonical_capability(text: &str) -> String {
    match capability_name(text) {
        Some(CapabilityName::All) => String::from("ALL"),
        Some(CapabilityName::One(name)) => String::from(name),
        None => {
            let upper = text.to_ascii_uppercase();
            if upper.starts_with("CAP_") {
                upper
            } else {
                alloc::format!("CAP_{upper}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_as_docker_reads_them() {
        let table = [
            ("CAP_NET_ADMIN", Some(CapabilityName::One("CAP_NET_ADMIN"))),
            ("net_admin", Some(CapabilityName::One("CAP_NET_ADMIN"))),
            ("Cap_Sys_Time", Some(CapabilityName::One("CAP_SYS_TIME"))),
            ("ALL", Some(CapabilityName::All)),
            ("all", Some(CapabilityName::All)),
            ("NOT_A_CAP", None),
            ("CAP_", None),
            ("", None),
            ("CAP_CAP_CHOWN", None),
        ];
        for (text, want) in table {
            assert_eq!(capability_name(text), want, "{text:?}");
        }
        assert_eq!(canonical_capability("chown"), "CAP_CHOWN");
        assert_eq!(canonical_capability("fly"), "CAP_FLY");
    }

    #[test]
    fn the_table_has_every_number_once() {
        assert_eq!(CAPABILITIES.len(), 41);
        for (i, name) in CAPABILITIES.iter().enumerate() {
            assert!(!CAPABILITIES[..i].contains(name), "{name} twice");
        }
    }
}
