//! A service's kernel and process settings beyond the core spec: compose `sysctls`,
//! `ulimits`, `oom_score_adj`, `hostname`, networking (`network`), and `tmpfs`, `shm_size`,
//! `group_add`, `logging`, `healthcheck.start_interval` (`service_extras`), the memory
//! reservation, `privileged`. A list of tagged entries rather than fields,
//! so a new kind is a new variant at the end: bytes of older builds still decode without a
//! new legacy layout, and an older agent refuses a body holding a kind it does not know.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use serde::{Deserialize, Serialize};

use crate::desired::{NetworkMode, ServiceSpec};
use crate::network::{Ipv4, NetworkAttachment, PortMapping, Protocol};
use crate::service_extras::{LogRotation, TmpfsMount};
use crate::validate::InvalidDesired;

/// One setting of [`crate::ServiceSpec::tuning`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tuning {
    /// A kernel parameter of one of the container's own namespaces (see
    /// [`sysctl_namespace`]).
    Sysctl { name: String, value: String },
    /// A resource limit by its compose name (`nofile`, `nproc`, …; see [`ULIMITS`]).
    Ulimit { name: String, soft: u64, hard: u64 },
    /// `/proc/self/oom_score_adj`, -1000..=1000.
    OomScoreAdj(i32),
    /// The container's host name (default: the service name).
    Hostname(String),
    /// Joins an app network (compose `networks:`; see `network`).
    Network(NetworkAttachment),
    /// Publishes a port on the device (compose `ports:`).
    Publish(PortMapping),
    /// compose `expose`: documents a port the app's other services use; no effect on
    /// reachability (every port is open to the service's networks), as under Docker.
    Expose { port: u16, protocol: Protocol },
    /// A DNS server for the container's `/etc/resolv.conf` (compose `dns`).
    Dns(Ipv4),
    /// compose `dns_search`.
    DnsSearch(String),
    /// compose `dns_opt` (`ndots:2`).
    DnsOption(String),
    /// An `/etc/hosts` line (compose `extra_hosts`).
    ExtraHost { name: String, address: Ipv4 },
    /// A tmpfs mount (compose `tmpfs`; see `service_extras`).
    Tmpfs(TmpfsMount),
    /// The size of the container's `/dev/shm` in bytes (compose `shm_size`).
    ShmSize(u64),
    /// A supplementary group of the process, a name in the image's `/etc/group` or a GID
    /// (compose `group_add`).
    GroupAdd(String),
    /// The service's own log rotation (compose `logging.options` `max-size`, `max-file`).
    Logging(LogRotation),
    /// The probe interval during the health check's start period, in ms (compose
    /// `healthcheck.start_interval`; `HealthCheck` keeps its layout).
    HealthStartInterval(u32),
    /// A memory soft limit in bytes (compose `mem_reservation`,
    /// `deploy.resources.reservations.memory`): what the kernel reclaims the container down
    /// to under memory pressure, as Docker's `--memory-reservation` (cgroup v1
    /// `memory.soft_limit_in_bytes`, v2 `memory.low`). Here, not in `Resources`, whose
    /// layout older agents decode.
    MemoryReservation(u64),
    /// An `/etc/hosts` line naming the device itself as the container reaches it (compose
    /// `extra_hosts` `NAME:host-gateway`): its app network's gateway on the device, or
    /// loopback for a service on the device's network.
    ExtraHostGateway(String),
    /// compose `privileged: true`, as Docker's `--privileged`: every capability in every
    /// set, no seccomp filter, no masked or read-only paths in /proc and /sys, every device
    /// allowed and the device's device nodes in /dev. `no_new_privileges`: compose
    /// `security_opt` also asks for it (otherwise a privileged process may gain more
    /// through setuid files, as under Docker). Refused by the deploy policy unless it
    /// grants `privileged`.
    Privileged { no_new_privileges: bool },
}

/// Compose ulimit names and the kernel's resource names.
pub const ULIMITS: &[(&str, &str)] = &[
    ("as", "RLIMIT_AS"),
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

/// The kernel's name (`RLIMIT_NOFILE`) of a compose ulimit (`nofile`).
pub fn rlimit_name(ulimit: &str) -> Option<&'static str> {
    ULIMITS
        .iter()
        .find(|(name, _)| *name == ulimit)
        .map(|(_, kernel)| *kernel)
}

/// IPC-namespaced sysctls (Docker's list).
pub const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Why a sysctl may not be set by a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlRefusal {
    /// A malformed name (empty, `..`, `/`).
    Malformed,
    /// Not in any namespace: it would change the host.
    NotNamespaced,
    /// `net.*` while the container shares the host's network.
    HostNetwork,
}

impl SysctlRefusal {
    /// The rule, reading on from the name.
    pub fn rule(self) -> &'static str {
        match self {
            SysctlRefusal::Malformed => "is not a sysctl name",
            SysctlRefusal::NotNamespaced => {
                "is not namespaced, so it would change the device (allowed: net.* on the app's own network, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*)"
            }
            SysctlRefusal::HostNetwork => {
                "belongs to the device's network, which this service shares (net.* needs a network of its own, such as network_mode: none)"
            }
        }
    }
}

/// Whether a container may set `name` (Docker's rule: IPC's `kernel.*` and `fs.mqueue.*`,
/// and `net.*` in its own network namespace).
pub fn sysctl_namespace(name: &str, host_network: bool) -> Result<(), SysctlRefusal> {
    let malformed = name.is_empty()
        || name.starts_with('.')
        || name.ends_with('.')
        || name.contains("..")
        || name.contains('/')
        || !name.bytes().all(|b| b.is_ascii_graphic());
    if malformed {
        return Err(SysctlRefusal::Malformed);
    }
    if name.starts_with("net.") {
        return if host_network {
            Err(SysctlRefusal::HostNetwork)
        } else {
            Ok(())
        };
    }
    if name.starts_with("fs.mqueue.") || IPC_SYSCTLS.contains(&name) {
        Ok(())
    } else {
        Err(SysctlRefusal::NotNamespaced)
    }
}

impl ServiceSpec {
    /// Checks each tuning entry and that none is given twice.
    pub(crate) fn validate_tuning(&self) -> Result<(), InvalidDesired> {
        let bad = |field, value, rule| self.invalid(field, value, rule);
        let host_network = self.network == NetworkMode::Host;
        let mut seen = BTreeSet::new();
        for entry in &self.tuning {
            let (field, key) = match entry {
                Tuning::Sysctl { name, value } => {
                    sysctl_namespace(name, host_network)
                        .map_err(|refusal| bad("sysctls", name.clone(), refusal.rule()))?;
                    if value.is_empty() || value.contains(['\n', '\0']) || value.len() > 4096 {
                        return Err(bad(
                            "sysctls",
                            format!("{name}={value}"),
                            "must have a one-line value of at most 4096 bytes",
                        ));
                    }
                    ("sysctls", name.as_str())
                }
                Tuning::Ulimit { name, soft, hard } => {
                    if rlimit_name(name).is_none() {
                        return Err(bad(
                            "ulimits",
                            name.clone(),
                            "is not a ulimit (nofile, nproc, core, memlock, stack, …)",
                        ));
                    }
                    if soft > hard {
                        return Err(bad(
                            "ulimits",
                            format!("{name}: soft {soft}, hard {hard}"),
                            "has its soft limit above its hard limit",
                        ));
                    }
                    ("ulimits", name.as_str())
                }
                Tuning::OomScoreAdj(value) => {
                    if !(-1000..=1000).contains(value) {
                        return Err(bad(
                            "oom_score_adj",
                            value.to_string(),
                            "must be between -1000 and 1000",
                        ));
                    }
                    ("oom_score_adj", "")
                }
                Tuning::Hostname(name) => {
                    if !is_hostname(name) {
                        return Err(bad(
                            "hostname",
                            name.clone(),
                            "must be 1 to 63 letters, digits, '-' and '.', not starting or ending with '-' or '.'",
                        ));
                    }
                    ("hostname", "")
                }
                // Its value is judged with the other memory settings (`validate_resources`).
                Tuning::MemoryReservation(_) => ("mem_reservation", ""),
                Tuning::Privileged { .. } => ("privileged", ""),
                other => match self
                    .validate_network_entry(other)?
                    .map_or_else(|| self.validate_extra_entry(other), |k| Ok(Some(k)))?
                {
                    Some((field, key)) => {
                        if !seen.insert((field, key.clone())) {
                            return Err(bad(field, key, "is given twice"));
                        }
                        continue;
                    }
                    None => continue,
                },
            };
            if !seen.insert((field, key.to_string())) {
                return Err(bad(field, key.to_string(), "is given twice"));
            }
        }
        self.validate_port_count()
    }
}

/// A host name the kernel and resolvers take: RFC 1123 characters, at most 63 of them.
pub(crate) fn is_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_sysctls_pass() {
        for name in ["net.ipv4.ip_forward", "kernel.shmmax", "fs.mqueue.msg_max"] {
            assert_eq!(sysctl_namespace(name, false), Ok(()), "{name}");
        }
        assert_eq!(
            sysctl_namespace("kernel.panic", false),
            Err(SysctlRefusal::NotNamespaced)
        );
        assert_eq!(
            sysctl_namespace("net.ipv4.ip_forward", true),
            Err(SysctlRefusal::HostNetwork)
        );
        for name in ["", "net..x", "net/ipv4", ".net", "net.ipv4 x"] {
            assert_eq!(
                sysctl_namespace(name, false),
                Err(SysctlRefusal::Malformed),
                "{name:?}"
            );
        }
    }

    fn tuned(network: NetworkMode, tuning: alloc::vec::Vec<Tuning>) -> Result<(), InvalidDesired> {
        let mut spec = crate::samples::desired_with_services(1).services.remove(0);
        spec.network = network;
        spec.tuning = tuning;
        spec.validate()
    }

    #[test]
    fn each_bad_setting_is_named() {
        let sysctl = |name: &str, value: &str| Tuning::Sysctl {
            name: name.into(),
            value: value.into(),
        };
        let ulimit = |name: &str, soft, hard| Tuning::Ulimit {
            name: name.into(),
            soft,
            hard,
        };
        let good = alloc::vec![
            sysctl("net.core.somaxconn", "1024"),
            sysctl("kernel.shmmax", "68719476736"),
            ulimit("nofile", 1024, 4096),
            ulimit("nproc", 64, 64),
            Tuning::OomScoreAdj(-500),
            Tuning::Hostname("gateway-1.lab".into()),
        ];
        tuned(NetworkMode::None, good).unwrap();
        let cases: [(NetworkMode, Tuning, &str); 7] = [
            (
                NetworkMode::None,
                sysctl("kernel.panic", "1"),
                "sysctls: \"kernel.panic\" is not namespaced",
            ),
            (
                NetworkMode::Host,
                sysctl("net.ipv4.ip_forward", "1"),
                "belongs to the device's network",
            ),
            (
                NetworkMode::None,
                sysctl("kernel.sem", "1\n2"),
                "one-line value",
            ),
            (
                NetworkMode::None,
                ulimit("files", 1, 1),
                "ulimits: \"files\" is not a ulimit",
            ),
            (
                NetworkMode::None,
                ulimit("nofile", 10, 5),
                "soft limit above its hard limit",
            ),
            (
                NetworkMode::None,
                Tuning::OomScoreAdj(1001),
                "oom_score_adj: \"1001\" must be between",
            ),
            (
                NetworkMode::None,
                Tuning::Hostname("-x".into()),
                "hostname: \"-x\" must be",
            ),
        ];
        for (network, entry, words) in cases {
            let err = tuned(network, alloc::vec![entry]).unwrap_err().to_string();
            assert!(err.contains(words), "{err} lacks {words}");
        }
        let twice = alloc::vec![ulimit("nofile", 1, 1), ulimit("nofile", 2, 2)];
        let err = tuned(NetworkMode::None, twice).unwrap_err().to_string();
        assert!(err.contains("ulimits: \"nofile\" is given twice"), "{err}");
        let twice = alloc::vec![Tuning::OomScoreAdj(1), Tuning::OomScoreAdj(2)];
        let err = tuned(NetworkMode::None, twice).unwrap_err().to_string();
        assert!(err.contains("oom_score_adj"), "{err}");
        let privileged = |no_new_privileges| Tuning::Privileged { no_new_privileges };
        tuned(NetworkMode::None, alloc::vec![privileged(false)]).unwrap();
        let twice = alloc::vec![privileged(false), privileged(true)];
        let err = tuned(NetworkMode::None, twice).unwrap_err().to_string();
        assert!(err.contains("privileged: \"\" is given twice"), "{err}");
    }

    #[test]
    fn ulimits_map_to_kernel_names() {
        assert_eq!(rlimit_name("nofile"), Some("RLIMIT_NOFILE"));
        assert_eq!(rlimit_name("files"), None);
    }
}
