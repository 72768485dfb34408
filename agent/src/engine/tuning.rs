//! A service's `tuning` (compose `sysctls`, `ulimits`, `oom_score_adj`, `hostname`,
//! `shm_size`, `group_add`, `tmpfs` as mounts, and `privileged`) on the runtime spec. The values were validated with the desired state; the runtime checks the
//! sysctls again before any process exists (`runtime::init::kernel_params`).

use coracle_proto::tuning::rlimit_name;
use coracle_proto::Tuning;

use coracle_proto::TmpfsMount;

use crate::runtime::init::capabilities::ALL;
use crate::runtime::spec::{CapabilitySets, ContainerSpec, Mount, MountKind, Rlimit, User};

/// Puts each entry where the runtime reads it; a ulimit replaces the image default of the
/// same resource.
pub fn apply(spec: &mut ContainerSpec, tuning: &[Tuning]) {
    for entry in tuning {
        match entry {
            Tuning::Sysctl { name, value } => {
                spec.sysctl.insert(name.clone(), value.clone());
            }
            Tuning::Ulimit { name, soft, hard } => {
                // An unknown name was refused by validation; nothing to set then.
                let Some(kind) = rlimit_name(name) else {
                    continue;
                };
                spec.process.rlimits.retain(|r| r.kind != kind);
                spec.process.rlimits.push(Rlimit {
                    kind: kind.to_string(),
                    soft: *soft,
                    hard: *hard,
                });
            }
            Tuning::OomScoreAdj(value) => spec.process.oom_score_adj = Some(*value),
            Tuning::Hostname(name) => spec.hostname = Some(name.clone()),
            Tuning::ShmSize(bytes) => spec.set_shm_size(*bytes),
            Tuning::GroupAdd(group) => spec.process.group_add.push(group.clone()),
            // Mounts go with the volumes (`container_spec`); the log rotation onto stdio and
            // the memory reservation into the cgroup limits (`container_spec`); the start
            // interval is the supervisor's (`probes`).
            Tuning::Tmpfs(_)
            | Tuning::Logging(_)
            | Tuning::HealthStartInterval(_)
            | Tuning::MemoryReservation(_) => {}
            // Networking entries are the network manager's (`crate::network`).
            Tuning::Network(_)
            | Tuning::Publish(_)
            | Tuning::Expose { .. }
            | Tuning::Dns(_)
            | Tuning::DnsSearch(_)
            | Tuning::DnsOption(_)
            | Tuning::ExtraHost { .. }
            | Tuning::ExtraHostGateway(_) => {}
            // After the user and the seccomp policy are known (`container_spec`).
            Tuning::Privileged { .. } => {}
        }
    }
}

/// Docker's `--privileged`: every capability the agent holds (its bounding set) in the
/// bounding, effective, permitted and inheritable sets (and ambient for a non-root user, as
/// `cap_add` raises them), no seccomp filter (whatever `security_opt` chose, as under Docker), nothing
/// masked or read-only in /proc and /sys, /sys writable, every device allowed and the
/// host's device nodes in /dev; no_new_privs only when `security_opt` asked for it.
pub fn privileged(spec: &mut ContainerSpec, no_new_privileges: bool) {
    let all = vec![ALL.to_string()];
    let root = matches!(spec.process.user, User::Id { uid: 0, .. });
    spec.process.capabilities = Some(all.clone());
    spec.process.capability_sets = CapabilitySets {
        effective: None,
        permitted: None,
        inheritable: Some(all.clone()),
        ambient: if root { Vec::new() } else { all },
    };
    spec.process.no_new_privileges = no_new_privileges;
    spec.seccomp = false;
    spec.seccomp_profile = None;
    spec.masked_paths.clear();
    spec.readonly_paths.clear();
    spec.set_sysfs_writable();
    spec.host_devices = true;
}

/// A tmpfs entry as a runtime mount: always `nosuid,nodev`, `noexec` unless `exec`
/// (Docker's defaults), mode `1777` unless given.
pub fn tmpfs_mount(t: &TmpfsMount) -> Mount {
    let mut options: Vec<String> = vec!["nosuid".into(), "nodev".into()];
    if !t.exec {
        options.push("noexec".into());
    }
    if t.read_only {
        options.push("ro".into());
    }
    options.push(format!("mode={:o}", t.mode.unwrap_or(0o1777)));
    let numbers = [
        ("size", t.size_bytes),
        ("uid", t.uid.map(u64::from)),
        ("gid", t.gid.map(u64::from)),
        ("nr_inodes", t.nr_inodes),
    ];
    for (name, value) in numbers {
        if let Some(value) = value {
            options.push(format!("{name}={value}"));
        }
    }
    Mount {
        destination: t.target.clone(),
        kind: MountKind::Tmpfs,
        source: None,
        options,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::Rootfs;

    #[test]
    fn each_entry_lands_in_the_runtime_spec() {
        let mut spec = ContainerSpec::new(Rootfs::Directory("/".into()), vec!["true".into()]);
        spec.hostname = Some("web".into());
        apply(
            &mut spec,
            &[
                Tuning::Sysctl {
                    name: "net.core.somaxconn".into(),
                    value: "1024".into(),
                },
                Tuning::Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 4096,
                },
                Tuning::OomScoreAdj(300),
                Tuning::Hostname("gw".into()),
            ],
        );
        assert_eq!(spec.sysctl["net.core.somaxconn"], "1024");
        assert_eq!(
            spec.process.rlimits,
            [Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 4096
            }]
        );
        assert_eq!(spec.process.oom_score_adj, Some(300));
        assert_eq!(spec.hostname.as_deref(), Some("gw"));
    }

    #[test]
    fn shm_size_and_groups_land_in_the_runtime_spec() {
        let mut spec = ContainerSpec::new(Rootfs::Directory("/".into()), vec!["true".into()]);
        apply(
            &mut spec,
            &[
                Tuning::ShmSize(128 << 20),
                Tuning::GroupAdd("dialout".into()),
                Tuning::GroupAdd("997".into()),
            ],
        );
        let shm = spec
            .mounts
            .iter()
            .find(|m| m.destination == "/dev/shm")
            .unwrap();
        assert!(shm.options.contains(&format!("size={}", 128u64 << 20)));
        assert_eq!(
            shm.options
                .iter()
                .filter(|o| o.starts_with("size="))
                .count(),
            1
        );
        assert_eq!(spec.process.group_add, ["dialout", "997"]);
    }

    #[test]
    fn tmpfs_mounts_keep_docker_defaults() {
        let mut t = TmpfsMount::at("/run");
        assert_eq!(
            tmpfs_mount(&t).options,
            ["nosuid", "nodev", "noexec", "mode=1777"]
        );
        t.exec = true;
        t.read_only = true;
        t.size_bytes = Some(64 << 20);
        t.mode = Some(0o750);
        t.uid = Some(1000);
        t.gid = Some(50);
        t.nr_inodes = Some(1024);
        let m = tmpfs_mount(&t);
        assert_eq!(m.kind, MountKind::Tmpfs);
        assert_eq!(m.destination, "/run");
        assert_eq!(
            m.options,
            [
                "nosuid",
                "nodev",
                "ro",
                "mode=750",
                "size=67108864",
                "uid=1000",
                "gid=50",
                "nr_inodes=1024"
            ]
        );
    }
}
