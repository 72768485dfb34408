//! OCI runtime bundles: `config.json` (read with the `oci-spec` crate) plus a rootfs, turned
//! into a [`ContainerSpec`] for `coracle-agent run --bundle DIR ID`.
//!
//! Honoured: root (path, readonly), process (args, env, cwd, uid/gid/additional gids,
//! all five capability sets — a set left out is empty, as OCI says — no_new_privileges,
//! rlimits), hostname, mounts (their propagation options too) and
//! `linux.rootfsPropagation`, the network namespace (absent = host, present = fresh, with a
//! path = join), masked and read-only paths, `linux.sysctl` (namespaced ones only),
//! `process.oomScoreAdj`, `linux.devices` (nodes made with the given type, numbers, mode
//! and owner), resources (memory, swap, reservation, cpu quota/period/shares — kept exactly
//! as given, see `cgroups::limits` — pids, blkio weight, cpuset). A `linux.seccomp` section
//! is the filter installed (`runtime::seccomp_profile`); without one there is none. The mount
//! namespace is always created; pid, uts, ipc and cgroup ones only when listed (left out,
//! they are the host's); a user namespace takes `linux.uidMappings` and
//! `linux.gidMappings` (see `runtime::userns` for how the rootfs is made usable). Fields
//! the runtime does not implement are refused by name (`runtime::refused`).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceType, LinuxIdMapping, LinuxNamespaceType, Spec};
use serde::Serialize;

use super::spec::{
    CapabilitySets, ContainerSpec, Device, DeviceAccess, DeviceCgroupRule, DeviceNode,
    HostNamespaces, IdMapping, IdRange, JoinedNamespace, Mount, MountKind, NamespaceKind, Network,
    NodeKind, Process, Resources, Rlimit, Rootfs, Stdio, User,
};

/// Failures reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("read OCI config {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("OCI config {path} has no {field}")]
    Missing { path: PathBuf, field: &'static str },
    #[error("mount at {destination}: type {kind:?} is not supported")]
    UnsupportedMount { destination: String, kind: String },
    #[error("device {path}: type \"a\" is for cgroup rules, a node needs c, u, b or p")]
    DeviceType { path: String },
    #[error("device {path}: {number} is not a device number")]
    DeviceNumber { path: String, number: i64 },
    #[error("OCI config {path}: a user namespace needs linux.uidMappings and linux.gidMappings")]
    UserNamespaceWithoutMappings { path: PathBuf },
    #[error(transparent)]
    Refused(#[from] super::refused::RefusedField),
    #[error(transparent)]
    Seccomp(#[from] super::seccomp_profile::SeccompProfileError),
}

/// Reads `bundle/config.json` into a spec whose stdio is the caller's.
pub fn load(bundle: &Path) -> Result<ContainerSpec, BundleError> {
    from_config(bundle, &read_config(bundle)?)
}

/// Parses `bundle/config.json`.
pub fn read_config(bundle: &Path) -> Result<Spec, BundleError> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|source| BundleError::Load { path, source })
}

/// The spec for `oci`, read from `bundle/config.json` (relative paths are the bundle's).
pub fn from_config(bundle: &Path, oci: &Spec) -> Result<ContainerSpec, BundleError> {
    let path = bundle.join("config.json");
    super::refused::check(oci)?;
    let missing = |field| BundleError::Missing {
        path: path.clone(),
        field,
    };
    let root = oci.root().as_ref().ok_or_else(|| missing("root"))?;
    let process = oci.process().as_ref().ok_or_else(|| missing("process"))?;
    let args = process
        .args()
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| missing("process.args"))?;
    let root_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };

    let mut spec = ContainerSpec::new(Rootfs::Directory(root_path), args);
    spec.readonly_rootfs = root.readonly().unwrap_or(false);
    spec.stdio = Stdio::Inherit;
    spec.hostname = oci.hostname().clone();
    set_process(&mut spec.process, process);
    spec.mounts = oci
        .mounts()
        .iter()
        .flatten()
        .map(mount)
        .collect::<Result<_, _>>()?;

    let linux = oci.linux().clone().unwrap_or_default();
    set_namespaces(&mut spec, &linux, &path)?;
    set_linux(&mut spec, &linux)?;
    Ok(spec)
}

/// `process` but its args: environment, working directory, user, capabilities, OOM score
/// and rlimits.
fn set_process(out: &mut Process, process: &oci_spec::runtime::Process) {
    out.env = process.env().clone().unwrap_or_default();
    out.cwd = process.cwd().to_string_lossy().into_owned();
    let user = process.user();
    out.user = User::Id {
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
    };
    out.umask = user.umask();
    out.no_new_privileges = process.no_new_privileges().unwrap_or(false);
    (out.capabilities, out.capability_sets) = capabilities(process.capabilities().as_ref());
    out.oom_score_adj = process.oom_score_adj();
    out.rlimits = process
        .rlimits()
        .iter()
        .flatten()
        .map(|r| Rlimit {
            kind: name_of(&r.typ()),
            soft: r.soft(),
            hard: r.hard(),
        })
        .collect();
}

/// `process.capabilities`: the bounding set, and the four others. OCI: a set the bundle
/// leaves out is empty.
fn capabilities(
    sets: Option<&oci_spec::runtime::LinuxCapabilities>,
) -> (Option<Vec<String>>, CapabilitySets) {
    let names = |set: Option<&oci_spec::runtime::Capabilities>| -> Option<Vec<String>> {
        set.map(|set| set.iter().map(name_of).collect())
    };
    let bounding = Some(names(sets.and_then(|c| c.bounding().as_ref())).unwrap_or_default());
    let others = CapabilitySets {
        effective: Some(names(sets.and_then(|c| c.effective().as_ref())).unwrap_or_default()),
        permitted: Some(names(sets.and_then(|c| c.permitted().as_ref())).unwrap_or_default()),
        inheritable: Some(names(sets.and_then(|c| c.inheritable().as_ref())).unwrap_or_default()),
        ambient: names(sets.and_then(|c| c.ambient().as_ref())).unwrap_or_default(),
    };
    (bounding, others)
}

/// `linux.namespaces`: which are the host's, the network, the ones joined by path and the
/// user namespace with its id mappings. `path` is the config's, for errors.
fn set_namespaces(
    spec: &mut ContainerSpec,
    linux: &oci_spec::runtime::Linux,
    path: &Path,
) -> Result<(), BundleError> {
    spec.network = Network::Host;
    // A namespace the bundle leaves out is the host's (OCI); mount is always its own
    // (`refused` makes sure the bundle asks for it).
    if let Some(namespaces) = linux.namespaces() {
        let has = |kind| namespaces.iter().any(|n| n.typ() == kind);
        spec.host_namespaces = HostNamespaces {
            pid: !has(LinuxNamespaceType::Pid),
            uts: !has(LinuxNamespaceType::Uts),
            ipc: !has(LinuxNamespaceType::Ipc),
            cgroup: !has(LinuxNamespaceType::Cgroup),
        };
        if spec.host_namespaces.uts && spec.hostname.is_some() {
            return Err(super::refused::RefusedField {
                field: "hostname",
                reason: "setting it needs a uts namespace, and the bundle shares the host's",
            }
            .into());
        }
    }
    for ns in linux.namespaces().iter().flatten() {
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::Network, Some(p)) => spec.network = Network::Join(p.clone()),
            (LinuxNamespaceType::Network, None) => spec.network = Network::None,
            (kind, Some(ns_path)) if kind != LinuxNamespaceType::User => {
                spec.joined_namespaces.push(JoinedNamespace {
                    kind: namespace_kind(kind),
                    path: ns_path.clone(),
                });
            }
            (LinuxNamespaceType::User, _) => spec.user_namespace = Some(id_mapping(linux, path)?),
            _ => {}
        }
    }
    Ok(())
}

/// The kind of a namespace joined by path (never network or user, handled apart).
fn namespace_kind(kind: LinuxNamespaceType) -> NamespaceKind {
    match kind {
        LinuxNamespaceType::Mount => NamespaceKind::Mount,
        LinuxNamespaceType::Pid => NamespaceKind::Pid,
        LinuxNamespaceType::Uts => NamespaceKind::Uts,
        LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
        _ => NamespaceKind::Cgroup,
    }
}

/// `linux.uidMappings` and `linux.gidMappings`, which a user namespace needs both of.
fn id_mapping(linux: &oci_spec::runtime::Linux, path: &Path) -> Result<IdMapping, BundleError> {
    let ranges = |maps: &Option<Vec<LinuxIdMapping>>| -> Vec<IdRange> {
        maps.iter()
            .flatten()
            .map(|m| IdRange {
                container_start: m.container_id(),
                host_start: m.host_id(),
                count: m.size(),
            })
            .collect()
    };
    let mapping = IdMapping {
        uids: ranges(linux.uid_mappings()),
        gids: ranges(linux.gid_mappings()),
    };
    if mapping.uids.is_empty() || mapping.gids.is_empty() {
        return Err(BundleError::UserNamespaceWithoutMappings {
            path: path.to_owned(),
        });
    }
    Ok(mapping)
}

/// The rest of `linux`: masked and read-only paths, sysctls, devices, seccomp, rootfs
/// propagation and resources.
fn set_linux(
    spec: &mut ContainerSpec,
    linux: &oci_spec::runtime::Linux,
) -> Result<(), BundleError> {
    spec.masked_paths = linux.masked_paths().clone().unwrap_or_default();
    spec.sysctl = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    spec.readonly_paths = linux.readonly_paths().clone().unwrap_or_default();
    spec.devices = linux
        .devices()
        .iter()
        .flatten()
        .map(device)
        .collect::<Result<_, _>>()?;
    spec.seccomp = linux.seccomp().is_some();
    spec.seccomp_profile = linux
        .seccomp()
        .as_ref()
        .map(super::seccomp_profile::from_oci)
        .transpose()?;
    spec.rootfs_propagation = linux.rootfs_propagation().clone();
    if let Some(r) = linux.resources() {
        spec.resources = resources(r);
        spec.device_cgroup_rules = device_cgroup_rules(r)?;
    }
    Ok(())
}

/// The OCI name of an enum value (`CAP_CHOWN`, `RLIMIT_NOFILE`), via its serde form.
fn name_of(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn mount(m: &oci_spec::runtime::Mount) -> Result<Mount, BundleError> {
    let destination = m.destination().to_string_lossy().into_owned();
    let options = m.options().clone().unwrap_or_default();
    let is_bind = options.iter().any(|o| o == "bind" || o == "rbind");
    let kind = match m.typ().as_deref() {
        _ if is_bind => MountKind::Bind,
        Some("bind") => MountKind::Bind,
        Some("proc") => MountKind::Proc,
        Some("sysfs") => MountKind::Sysfs,
        Some("tmpfs") => MountKind::Tmpfs,
        Some("devpts") => MountKind::Devpts,
        Some("mqueue") => MountKind::Mqueue,
        Some("cgroup") | Some("cgroup2") => MountKind::Cgroup,
        other => {
            return Err(BundleError::UnsupportedMount {
                destination,
                kind: other.unwrap_or("").into(),
            })
        }
    };
    Ok(Mount {
        destination,
        kind,
        source: m.source().clone(),
        options,
    })
}

/// A `linux.devices` entry: the node is made as described (the host's node of the same path
/// is bound only where the container may not create nodes), usable with every access.
fn device(d: &oci_spec::runtime::LinuxDevice) -> Result<Device, BundleError> {
    let path = d.path().to_string_lossy().into_owned();
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => NodeKind::Char,
        LinuxDeviceType::B => NodeKind::Block,
        LinuxDeviceType::P => NodeKind::Fifo,
        LinuxDeviceType::A => return Err(BundleError::DeviceType { path }),
    };
    let number = |n: i64| {
        u64::try_from(n).map_err(|_| BundleError::DeviceNumber {
            path: path.clone(),
            number: n,
        })
    };
    let node = DeviceNode {
        kind,
        major: number(d.major())?,
        minor: number(d.minor())?,
        // Permission bits only: some configs carry the type bits too (0o20666).
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    };
    Ok(Device {
        host_path: d.path().clone(),
        container_path: Some(path),
        access: DeviceAccess::ALL,
        node: Some(node),
    })
}

/// `linux.resources.devices`, in order: allow rules by type and numbers, either left out
/// (or -1, runc's wildcard) for any (podman's `c *:* m`, `--device-cgroup-rule`). A deny
/// rule for every device cancels the rules before it (all denied but what is allowed after
/// is the default); a narrower deny is refused by name.
fn device_cgroup_rules(
    r: &oci_spec::runtime::LinuxResources,
) -> Result<Vec<DeviceCgroupRule>, BundleError> {
    let refuse = |reason| {
        BundleError::Refused(super::refused::RefusedField {
            field: "linux.resources.devices",
            reason,
        })
    };
    let number = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
    let mut rules = Vec::new();
    for d in r.devices().iter().flatten() {
        let kind = d.typ().unwrap_or(LinuxDeviceType::A);
        let (major, minor) = (number(d.major()), number(d.minor()));
        if !d.allow() {
            if kind == LinuxDeviceType::A && major.is_none() && minor.is_none() {
                rules.clear();
                continue;
            }
            return Err(refuse("only a deny rule for every device is implemented"));
        }
        let kind = match kind {
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::A => 'a',
            LinuxDeviceType::P => return Err(refuse("type p (a FIFO) has no device rule")),
        };
        let access = DeviceAccess::parse(d.access().as_deref().unwrap_or("rwm"))
            .ok_or_else(|| refuse("access must be letters of rwm"))?;
        rules.push(DeviceCgroupRule {
            kind,
            major,
            minor,
            access,
        });
    }
    Ok(rules)
}

fn resources(r: &oci_spec::runtime::LinuxResources) -> Resources {
    let mut out = Resources::default();
    if let Some(memory) = r.memory() {
        out.memory_max = memory.limit().and_then(|l| u64::try_from(l).ok());
        out.memory_reservation = memory.reservation().and_then(|l| u64::try_from(l).ok());
        // OCI swap is memory + swap.
        out.memory_swap = match (memory.swap(), out.memory_max) {
            (Some(total), Some(max)) => u64::try_from(total).ok().map(|t| t.saturating_sub(max)),
            _ => None,
        };
    }
    if let Some(cpu) = r.cpu() {
        // As given: the cgroup plan writes them unrounded (shares become a weight on v2 only).
        out.cpu_quota_us = cpu.quota();
        out.cpu_period_us = cpu.period();
        out.cpu_shares = cpu.shares();
        out.cpuset_cpus = cpu.cpus().clone();
        out.cpuset_mems = cpu.mems().clone();
    }
    out.pids_max = r
        .pids()
        .as_ref()
        .and_then(|p| u64::try_from(p.limit()).ok());
    out.io_weight = r
        .block_io()
        .as_ref()
        .and_then(|b| b.weight())
        .map(|w| 1 + (u64::from(w).clamp(10, 1000) - 10) * 9_999 / 990);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "env": ["PATH=/bin"], "cwd": "/",
            "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "permitted": ["CAP_KILL", "CAP_CHOWN"],
                "effective": ["CAP_KILL"], "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": true,
            "oomScoreAdj": 500},
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "bench",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/data", "type": "none", "source": "/srv", "options": ["rbind", "ro", "rslave"]}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "uts"}, {"type": "network"}, {"type": "mount"}],
            "resources": {"memory": {"limit": 1000, "swap": 1500, "reservation": 800}, "cpu": {"quota": 33333, "period": 50000, "shares": 512},
                          "pids": {"limit": 10}},
            "devices": [{"path": "/dev/fuse", "type": "u", "major": 10, "minor": 229, "fileMode": 8612, "gid": 5},
                        {"path": "/dev/pipe", "type": "p"}],
            "maskedPaths": ["/proc/kcore"], "rootfsPropagation": "rshared", "readonlyPaths": ["/proc/sys"],
            "sysctl": {"net.ipv4.ip_forward": "1"}}
    }"#;

    fn bundle(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    #[test]
    fn bundle_maps_every_honoured_field() {
        let dir = bundle(CONFIG);
        let spec = load(dir.path()).unwrap();
        assert_eq!(spec.rootfs, Rootfs::Directory(dir.path().join("rootfs")));
        assert!(spec.readonly_rootfs && spec.process.no_new_privileges && !spec.seccomp);
        assert_eq!(spec.hostname.as_deref(), Some("bench"));
        let mut caps = spec.process.capabilities.clone().unwrap();
        caps.sort();
        assert_eq!(caps, ["CAP_CHOWN", "CAP_KILL"]);
        let sets = &spec.process.capability_sets;
        let kill = Some(vec!["CAP_KILL".to_string()]);
        assert_eq!((&sets.effective, &sets.inheritable), (&kill, &kill));
        assert_eq!(sets.ambient, ["CAP_KILL"]);
        assert_eq!(sets.permitted.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            spec.process.rlimits,
            [Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 1024
            }]
        );
        assert_eq!(spec.mounts[1].kind, MountKind::Bind);
        assert_eq!(spec.mounts[1].options, ["rbind", "ro", "rslave"]);
        assert_eq!(spec.rootfs_propagation.as_deref(), Some("rshared"));
        assert_eq!(spec.network, Network::None);
        assert_eq!(spec.masked_paths, ["/proc/kcore"]);
        assert_eq!(spec.process.oom_score_adj, Some(500));
        assert_eq!(spec.sysctl["net.ipv4.ip_forward"], "1");
        let r = &spec.resources;
        assert_eq!(
            (r.memory_max, r.memory_swap, r.pids_max),
            (Some(1000), Some(500), Some(10))
        );
        assert_eq!(
            (r.cpu_quota_us, r.cpu_period_us, r.cpu_shares),
            (Some(33_333), Some(50_000), Some(512))
        );
        assert_eq!((r.cpu_millicores, r.cpu_weight), (None, None));
        assert_eq!(r.memory_reservation, Some(800));
    }

    #[test]
    fn bundle_devices_are_described_nodes_with_runc_s_defaults() {
        let dir = bundle(CONFIG);
        let devices = load(dir.path()).unwrap().devices;
        let nodes: Vec<_> = devices.iter().map(|d| d.node).collect();
        assert_eq!(
            nodes,
            [
                // 8612 is 0o20644: the type bits are dropped, the owner defaults to root.
                Some(DeviceNode {
                    kind: NodeKind::Char,
                    major: 10,
                    minor: 229,
                    mode: 0o644,
                    uid: 0,
                    gid: 5
                }),
                Some(DeviceNode {
                    kind: NodeKind::Fifo,
                    major: 0,
                    minor: 0,
                    mode: 0o666,
                    uid: 0,
                    gid: 0
                }),
            ]
        );
        assert_eq!(devices[0].host_path, Path::new("/dev/fuse"));
        assert_eq!(devices[0].container_path.as_deref(), Some("/dev/fuse"));
        assert_eq!(devices[0].access, DeviceAccess::ALL);
    }

    #[test]
    fn bundle_device_of_type_a_or_with_a_negative_number_is_refused() {
        let dir = bundle(&CONFIG.replace(r#""type": "p""#, r#""type": "a""#));
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, BundleError::DeviceType { ref path } if path == "/dev/pipe"));
        let dir = bundle(&CONFIG.replace(r#""minor": 229"#, r#""minor": -1"#));
        assert!(matches!(
            load(dir.path()),
            Err(BundleError::DeviceNumber { number: -1, .. })
        ));
    }

    #[test]
    fn bundle_user_namespace_takes_the_id_mappings() {
        let with_userns = CONFIG.replace(
            r#"{"type": "mount"}],"#,
            r#"{"type": "mount"}, {"type": "user"}],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 1000}],"#,
        );
        let dir = bundle(&with_userns);
        let mapping = load(dir.path()).unwrap().user_namespace.unwrap();
        assert_eq!(
            (mapping.uids[0].host_start, mapping.gids[0].count),
            (100_000, 1000)
        );
        let dir = bundle(&CONFIG.replace(
            r#"{"type": "mount"}],"#,
            r#"{"type": "mount"}, {"type": "user"}],"#,
        ));
        assert!(matches!(
            load(dir.path()),
            Err(BundleError::UserNamespaceWithoutMappings { .. })
        ));
    }

    #[test]
    fn bundle_device_cgroup_rules_keep_allow_rules_and_patterns_in_order() {
        let with_rules = |rules: &str| {
            CONFIG.replace(
                r#""pids": {"limit": 10}},"#,
                &format!(r#""pids": {{"limit": 10}}, "devices": {rules}}},"#),
            )
        };
        let dir = bundle(&with_rules(
            r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
                {"allow": true, "type": "b", "major": 8, "minor": 20, "access": "r"}]"#,
        ));
        let rules = load(dir.path()).unwrap().device_cgroup_rules;
        let got: Vec<_> = rules
            .iter()
            .map(|r| (r.kind, r.major, r.minor, r.access.letters()))
            .collect();
        assert_eq!(
            got,
            [
                ('c', Some(10), Some(229), "rwm".to_string()),
                ('b', Some(8), Some(20), "r".to_string())
            ]
        );
        // podman's patterns; a deny of everything cancels what came before it.
        let dir = bundle(&with_rules(
            r#"[{"allow": true, "type": "c", "major": 1, "minor": 3},
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "access": "m"},
                {"allow": true, "type": "a", "major": -1, "minor": 0, "access": "r"},
                {"allow": true, "type": "b", "major": 8, "access": "m"}]"#,
        ));
        let rules = load(dir.path()).unwrap().device_cgroup_rules;
        let got: Vec<_> = rules
            .iter()
            .map(|r| (r.kind, r.major, r.minor, r.access.letters()))
            .collect();
        assert_eq!(
            got,
            [
                ('c', None, None, "m".to_string()),
                ('a', None, Some(0), "r".to_string()),
                ('b', Some(8), None, "m".to_string())
            ]
        );
        let dir = bundle(&with_rules(
            r#"[{"allow": false, "type": "c", "major": 1, "access": "rwm"}]"#,
        ));
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("linux.resources.devices"), "{err}");
    }

    #[test]
    fn bundle_namespaces_left_out_are_shared_and_paths_are_joined() {
        let dir = bundle(&CONFIG.replace(
            r#"{"type": "uts"}"#,
            r#"{"type": "uts", "path": "/proc/1/ns/uts"}"#,
        ));
        let spec = load(dir.path()).unwrap();
        assert_eq!(
            spec.joined_namespaces,
            [JoinedNamespace {
                kind: NamespaceKind::Uts,
                path: "/proc/1/ns/uts".into()
            }]
        );
        let host = spec.host_namespaces;
        assert_eq!(
            (host.pid, host.uts, host.ipc, host.cgroup),
            (false, false, true, true)
        );
    }

    #[test]
    fn bundle_without_process_names_the_field() {
        let dir = bundle(r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}"#);
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("process"), "{err}");
    }

    #[test]
    fn bundle_with_unknown_mount_type_is_refused() {
        let dir = bundle(&CONFIG.replace(r#""type": "proc""#, r#""type": "nfs""#));
        assert!(matches!(
            load(dir.path()),
            Err(BundleError::UnsupportedMount { .. })
        ));
    }

    #[test]
    fn missing_bundle_is_a_load_error_naming_the_path() {
        let err = load(Path::new("/nonexistent-bundle")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-bundle/config.json"));
    }
}
