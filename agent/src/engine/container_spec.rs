//! The pure mapping from a service (desired state) and its image's run config onto the
//! runtime's `ContainerSpec`, with Docker's rules for entrypoint/command, environment,
//! working dir and user. No I/O: the caller supplies every path.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::network::Attachment;
use coracle_images::oci::RunConfig;
use coracle_proto::{canonical_capability, NetworkMode, SeccompPolicy, ServiceSpec, VolumeSource};

use crate::runtime::spec::{
    ContainerSpec, Device, DeviceAccess, Mount, MountKind, Network, Resources, Rootfs, Stdio, User,
    DEFAULT_CAPABILITIES,
};

/// A named volume whose name is not one plain directory name: the agent refuses it itself
/// (the desired state was validated on admission; this is where a name becomes a path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "volume name {name:?} is not [A-Za-z0-9][A-Za-z0-9_.-]*: it would not stay inside {volumes}"
)]
pub struct InvalidVolumeName {
    pub name: String,
    pub volumes: String,
}

/// The host directory of the named volume `name`: `<volumes>/<name>`, for a name Docker
/// accepts only (`[A-Za-z0-9][A-Za-z0-9_.-]*`), so it is exactly one normal component and
/// can never resolve outside `volumes` (no `/`, no `.` or `..`, nothing absolute).
pub fn volume_dir(volumes: &Path, name: &str) -> Result<PathBuf, InvalidVolumeName> {
    let docker_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let mut components = Path::new(name).components();
    let one_component = matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    );
    if !docker_name || !one_component {
        return Err(InvalidVolumeName {
            name: name.to_string(),
            volumes: volumes.display().to_string(),
        });
    }
    Ok(volumes.join(name))
}

/// Where a container's files live on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLayout {
    /// The image's unpacked layers, bottom layer first (as the image config lists them).
    pub layers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Named volumes live in `<volumes>/<name>`.
    pub volumes: PathBuf,
    /// Size cap of the container's log file, and how many rotated files are kept.
    pub log_max_bytes: u64,
    pub log_keep: u32,
    /// The namespace and files the network manager prepared; `None`: the device's.
    pub network: Option<Attachment>,
}

/// Docker's rule: an entrypoint given in the service replaces the image's entrypoint *and*
/// its command; a command given alone replaces only the command.
pub fn argv(service: &ServiceSpec, image: &RunConfig) -> Vec<String> {
    let (entrypoint, command) = if !service.entrypoint.is_empty() {
        (service.entrypoint.clone(), service.command.clone())
    } else {
        let command = if service.command.is_empty() {
            image.cmd.clone().unwrap_or_default()
        } else {
            service.command.clone()
        };
        (image.entrypoint.clone().unwrap_or_default(), command)
    };
    entrypoint.into_iter().chain(command).collect()
}

/// The image's environment with the service's variables added or replacing same-named ones.
pub fn environment(service: &ServiceSpec, image: &RunConfig) -> Vec<String> {
    let mut env: Vec<String> = image.env.clone().unwrap_or_else(|| {
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()]
    });
    for (name, value) in &service.env {
        let prefix = format!("{name}=");
        env.retain(|e| !e.starts_with(&prefix));
        env.push(format!("{name}={value}"));
    }
    env
}

/// `uid[:gid]` numbers, or a name looked up in the image's /etc/passwd by the runtime.
pub fn user(spec: Option<&str>) -> User {
    let Some(text) = spec.filter(|s| !s.is_empty()) else {
        return User::Id {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        };
    };
    let (uid, gid) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    match (uid.parse::<u32>(), gid.map(str::parse::<u32>)) {
        (Ok(uid), None) => User::Id {
            uid,
            gid: uid,
            additional_gids: Vec::new(),
        },
        (Ok(uid), Some(Ok(gid))) => User::Id {
            uid,
            gid,
            additional_gids: Vec::new(),
        },
        _ => User::Name(text.to_string()),
    }
}

/// Docker's default capability set, with the service's additions and removals (`ALL`
/// drops everything; names may be given in any case, with or without the `CAP_` prefix, as
/// `coracle_proto::capability` reads them). `cap_add: [ALL]` is every capability the device
/// grants (the runtime's `ALL`), less what `cap_drop` names (`-NAME`), as Docker does.
pub fn capabilities(service: &ServiceSpec) -> Vec<String> {
    let adds_all = service
        .cap_add
        .iter()
        .any(|c| canonical_capability(c) == "ALL");
    if adds_all {
        let drops = service
            .cap_drop
            .iter()
            .map(|c| canonical_capability(c))
            .filter(|c| c != "ALL")
            .map(|c| format!("-{c}"));
        return std::iter::once("ALL".to_string()).chain(drops).collect();
    }
    let mut caps: BTreeSet<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    let drop: Vec<String> = service
        .cap_drop
        .iter()
        .map(|c| canonical_capability(c))
        .collect();
    if drop.iter().any(|c| c == "ALL") {
        caps.clear();
    }
    for c in drop {
        caps.remove(&c);
    }
    let add = service.cap_add.iter().map(|c| canonical_capability(c));
    caps.extend(add.filter(|c| c != "ALL"));
    caps.into_iter().collect()
}

/// The capabilities the service named in `cap_add` (not `ALL`, not Docker's defaults):
/// raised into the ambient set, so a non-root `user:` keeps them across exec — binding
/// port 80 with `NET_BIND_SERVICE` works as the operator meant. Root is unaffected.
pub fn ambient_capabilities(service: &ServiceSpec) -> Vec<String> {
    let kept = capabilities(service);
    if kept.first().is_some_and(|c| c == "ALL") {
        return kept; // `cap_add: [ALL]`: every one of them, for a non-root user too
    }
    let added: BTreeSet<String> = service
        .cap_add
        .iter()
        .map(|c| canonical_capability(c))
        .filter(|c| c != "ALL" && kept.contains(c))
        .collect();
    added.into_iter().collect()
}

/// The whole container spec for one service; refused when a named volume's name could
/// leave the volumes folder.
pub fn container_spec(
    service: &ServiceSpec,
    image: &RunConfig,
    layout: &ContainerLayout,
) -> Result<ContainerSpec, InvalidVolumeName> {
    let rootfs = Rootfs::Overlay {
        // overlayfs lists the topmost lower dir first.
        lower: layout.layers.iter().rev().cloned().collect(),
        upper: layout.upper.clone(),
        work: layout.work.clone(),
    };
    let mut spec = ContainerSpec::new(rootfs, argv(service, image));
    spec.process.env = environment(service, image);
    spec.process.cwd = service
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    spec.process.user = user(service.user.as_deref().or(image.user.as_deref()));
    spec.process.capabilities = Some(capabilities(service));
    spec.process.capability_sets.ambient = ambient_capabilities(service);
    spec.hostname = Some(service.name.to_string());
    spec.readonly_rootfs = service.read_only_rootfs;
    spec.init = service.lifecycle.init;
    super::tuning::apply(&mut spec, &service.tuning);
    match &service.seccomp {
        SeccompPolicy::Default => {}
        SeccompPolicy::Unconfined => spec.seccomp = false,
        SeccompPolicy::Profile(profile) => spec.seccomp_profile = Some(profile.clone()),
    }
    for entry in &service.tuning {
        if let coracle_proto::Tuning::Privileged { no_new_privileges } = entry {
            super::tuning::privileged(&mut spec, *no_new_privileges);
        }
    }
    let netns = layout.network.as_ref().and_then(|a| a.netns.clone());
    spec.network = match (service.network, netns) {
        (NetworkMode::Host, _) => Network::Host,
        (NetworkMode::Private, Some(path)) => Network::Join(path),
        // A bridged service without its namespace (never made by the engine) gets
        // loopback only rather than the device's network.
        (NetworkMode::None | NetworkMode::Private, _) => Network::None,
    };
    if let Some(attachment) = &layout.network {
        for (destination, source) in [
            ("/etc/hosts", &attachment.hosts),
            ("/etc/resolv.conf", &attachment.resolv),
        ] {
            spec.mounts.push(Mount {
                destination: destination.to_string(),
                kind: MountKind::Bind,
                source: Some(source.clone()),
                options: vec!["bind".to_string()],
            });
        }
    }
    for volume in &service.volumes {
        let source = match &volume.source {
            VolumeSource::Named(name) => volume_dir(&layout.volumes, name)?,
            VolumeSource::HostPath(path) => PathBuf::from(path),
        };
        let mut options = vec!["rbind".to_string()];
        if volume.read_only {
            options.push("ro".to_string());
        }
        spec.mounts.push(Mount {
            destination: volume.target.clone(),
            kind: MountKind::Bind,
            source: Some(source),
            options,
        });
    }
    spec.mounts
        .extend(service.tuning.iter().filter_map(|t| match t {
            coracle_proto::Tuning::Tmpfs(tmpfs) => Some(super::tuning::tmpfs_mount(tmpfs)),
            _ => None,
        }));
    // The runtime's own mounts first; then parents before what is mounted inside them
    // (a tmpfs at /data/cache over a volume at /data), as Docker orders them.
    let own = crate::runtime::spec::default_mounts()
        .len()
        .min(spec.mounts.len());
    spec.mounts[own..].sort_by_key(|m| Path::new(&m.destination).components().count());
    spec.devices = service
        .devices
        .iter()
        .map(|d| Device {
            host_path: PathBuf::from(&d.host_path),
            container_path: Some(d.container_path.clone()),
            // Validated on admission as a non-empty subset of rwm; were it not, the
            // device gets no access rather than all of it.
            access: DeviceAccess::parse(&d.permissions).unwrap_or(DeviceAccess::NONE),
            node: None,
        })
        .collect();
    let r = &service.resources;
    spec.resources = Resources {
        memory_max: r.memory_max_bytes,
        memory_swap: r.memory_swap_max_bytes,
        memory_reservation: service.memory_reservation(),
        cpu_millicores: r.cpu_millicores.map(u64::from),
        cpu_weight: r.cpu_weight.map(u64::from),
        cpu_quota_us: None,
        cpu_period_us: None,
        cpu_shares: None,
        pids_max: r.pids_max.map(u64::from),
        io_weight: r.io_weight.map(u64::from),
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: None,
    };
    // The service's own rotation (compose `logging.options`) where it gives one; Docker's
    // `max-file` counts the current file, `keep` only the rotated ones.
    let rotation = service.log_rotation();
    spec.stdio = Stdio::Logs {
        max_bytes: rotation
            .and_then(|r| r.max_bytes)
            .unwrap_or(layout.log_max_bytes),
        keep: rotation
            .and_then(|r| r.max_files)
            .map_or(layout.log_keep, |files| files.saturating_sub(1)),
    };
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::{samples, VolumeMount};

    fn image() -> RunConfig {
        RunConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["serve".into()]),
            env: Some(vec!["PATH=/bin".into(), "MODE=prod".into()]),
            working_dir: Some("/app".into()),
            user: Some("1000".into()),
        }
    }

    fn service() -> ServiceSpec {
        let mut s = samples::desired_with_services(1).services.remove(0);
        s.command.clear();
        s.env.clear();
        s
    }

    #[test]
    fn argv_follows_docker_override_rules() {
        let img = image();
        let mut s = service();
        assert_eq!(argv(&s, &img), ["/entry", "serve"]);
        s.command = vec!["debug".into()];
        assert_eq!(argv(&s, &img), ["/entry", "debug"]);
        s.entrypoint = vec!["/bin/sh".into()];
        s.command.clear();
        assert_eq!(argv(&s, &img), ["/bin/sh"]);
        s.command = vec!["-c".into(), "true".into()];
        assert_eq!(argv(&s, &img), ["/bin/sh", "-c", "true"]);
    }

    #[test]
    fn service_env_overrides_image_env() {
        let mut s = service();
        s.env = vec![("MODE".into(), "dev".into()), ("X".into(), "1".into())];
        assert_eq!(environment(&s, &image()), ["PATH=/bin", "MODE=dev", "X=1"]);
    }

    #[test]
    fn users_parse_as_ids_or_names() {
        assert_eq!(
            user(Some("1000:50")),
            User::Id {
                uid: 1000,
                gid: 50,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            user(Some("7")),
            User::Id {
                uid: 7,
                gid: 7,
                additional_gids: vec![]
            }
        );
        assert_eq!(user(Some("www-data")), User::Name("www-data".into()));
        assert!(matches!(user(None), User::Id { uid: 0, .. }));
    }

    #[test]
    fn cap_add_all_is_every_capability_less_the_drops() {
        let mut s = service();
        s.cap_add = vec!["all".into()];
        assert_eq!(capabilities(&s), ["ALL"]);
        s.cap_drop = vec!["net_raw".into(), "ALL".into()];
        assert_eq!(capabilities(&s), ["ALL", "-CAP_NET_RAW"]);
        assert_eq!(ambient_capabilities(&s), ["ALL", "-CAP_NET_RAW"]);
    }

    #[test]
    fn only_explicitly_added_capabilities_become_ambient() {
        let mut s = service();
        assert!(
            ambient_capabilities(&s).is_empty(),
            "Docker's defaults stay out"
        );
        s.cap_drop = vec!["ALL".into()];
        s.cap_add = vec!["net_bind_service".into(), "CAP_NET_RAW".into()];
        assert_eq!(
            ambient_capabilities(&s),
            ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
        );
    }

    #[test]
    fn capabilities_add_drop_and_drop_all() {
        let mut s = service();
        s.cap_drop = vec!["net_raw".into()];
        s.cap_add = vec!["SYS_TIME".into()];
        let caps = capabilities(&s);
        assert!(!caps.contains(&"CAP_NET_RAW".to_string()));
        assert!(caps.contains(&"CAP_SYS_TIME".to_string()));
        assert!(caps.contains(&"CAP_CHOWN".to_string()));
        s.cap_drop = vec!["ALL".into()];
        s.cap_add = vec!["NET_BIND_SERVICE".into()];
        assert_eq!(capabilities(&s), ["CAP_NET_BIND_SERVICE"]);
    }

    #[test]
    fn spec_stacks_layers_top_first_and_maps_limits_and_volumes() {
        let mut s = service();
        s.volumes = vec![VolumeMount {
            source: VolumeSource::Named("data".into()),
            target: "/data".into(),
            read_only: true,
        }];
        s.tuning = vec![coracle_proto::Tuning::MemoryReservation(32 << 20)];
        let layout = ContainerLayout {
            layers: vec!["/l/base".into(), "/l/top".into()],
            log_max_bytes: 1 << 20,
            log_keep: 2,
            ..layout()
        };
        let spec = container_spec(&s, &image(), &layout).unwrap();
        match &spec.rootfs {
            Rootfs::Overlay { lower, .. } => {
                assert_eq!(lower, &[PathBuf::from("/l/top"), PathBuf::from("/l/base")])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(spec.resources.memory_max, Some(64 << 20));
        assert_eq!(spec.resources.memory_reservation, Some(32 << 20));
        assert_eq!(spec.resources.cpu_millicores, Some(250));
        assert_eq!(spec.process.cwd, "/app");
        assert_eq!(spec.hostname.as_deref(), Some("db"));
        let data = spec
            .mounts
            .iter()
            .find(|m| m.destination == "/data")
            .unwrap();
        assert_eq!(data.source, Some(PathBuf::from("/v/data")));
        assert!(data.options.contains(&"ro".to_string()));
    }

    #[test]
    fn tmpfs_mounts_nest_after_volumes_and_logging_sets_the_rotation() {
        let mut s = service();
        s.volumes = vec![VolumeMount {
            source: VolumeSource::Named("data".into()),
            target: "/data".into(),
            read_only: false,
        }];
        let tmpfs = |target: &str| {
            coracle_proto::Tuning::Tmpfs(coracle_proto::TmpfsMount {
                size_bytes: Some(1 << 20),
                ..coracle_proto::TmpfsMount::at(target)
            })
        };
        s.tuning = vec![
            tmpfs("/data/cache"),
            tmpfs("/run"),
            coracle_proto::Tuning::Logging(coracle_proto::LogRotation {
                max_bytes: Some(4096),
                max_files: Some(3),
            }),
        ];
        let layout = ContainerLayout {
            log_max_bytes: 1 << 20,
            log_keep: 2,
            ..layout()
        };
        let spec = container_spec(&s, &image(), &layout).unwrap();
        let at = |target: &str| spec.mounts.iter().position(|m| m.destination == target);
        assert!(at("/data").unwrap() < at("/data/cache").unwrap());
        assert!(at("/dev/shm").unwrap() < at("/run").unwrap());
        let run = &spec.mounts[at("/run").unwrap()];
        assert_eq!(run.kind, MountKind::Tmpfs);
        assert!(run.options.contains(&"noexec".to_string()));
        assert_eq!(
            spec.stdio,
            Stdio::Logs {
                max_bytes: 4096,
                keep: 2
            }
        );
        s.tuning.clear();
        let spec = container_spec(&s, &image(), &layout).unwrap();
        assert_eq!(
            spec.stdio,
            Stdio::Logs {
                max_bytes: 1 << 20,
                keep: 2
            },
            "the agent's own setting otherwise"
        );
    }

    #[test]
    fn the_seccomp_policy_picks_the_filter() {
        let layout = layout();
        let mut s = service();
        let spec = container_spec(&s, &image(), &layout).unwrap();
        assert!(
            spec.seccomp && spec.seccomp_profile.is_none(),
            "default allow-list"
        );
        s.seccomp = SeccompPolicy::Unconfined;
        assert!(!container_spec(&s, &image(), &layout).unwrap().seccomp);
        let profile = coracle_proto::SeccompProfile {
            default_action: coracle_proto::seccomp::SeccompAction::Allow,
            rules: vec![],
        };
        s.seccomp = SeccompPolicy::Profile(profile.clone());
        let spec = container_spec(&s, &image(), &layout).unwrap();
        assert!(spec.seccomp);
        assert_eq!(spec.seccomp_profile, Some(profile));
    }

    #[test]
    fn volume_names_that_could_leave_the_volumes_folder_are_refused() {
        let volumes = Path::new("/var/lib/coracle/volumes");
        for good in ["data", "db-1", "a.b_c", "x..y", "7"] {
            assert_eq!(
                volume_dir(volumes, good).unwrap(),
                volumes.join(good),
                "{good}"
            );
        }
        for bad in [
            "x/../../../../tmp/escape",
            "..",
            ".",
            ".hidden",
            "/etc",
            "a/b",
            "",
            "-x",
            "_x",
            "a\0b",
            "a b",
        ] {
            assert!(volume_dir(volumes, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn container_spec_refuses_an_escaping_volume_name() {
        let mut s = service();
        s.volumes = vec![VolumeMount {
            source: VolumeSource::Named("x/../../../../tmp/escape".into()),
            target: "/data".into(),
            read_only: false,
        }];
        let layout = layout();
        let err = container_spec(&s, &image(), &layout).unwrap_err();
        assert_eq!(err.name, "x/../../../../tmp/escape");
    }

    #[test]
    fn device_permissions_reach_the_runtime_spec() {
        let mut s = service();
        s.devices = vec![
            coracle_proto::DeviceMapping {
                host_path: "/dev/i2c-1".into(),
                container_path: "/dev/i2c-1".into(),
                permissions: "r".into(),
            },
            coracle_proto::DeviceMapping {
                host_path: "/dev/ttyUSB0".into(),
                container_path: "/dev/ttyS0".into(),
                permissions: "rwm".into(),
            },
        ];
        let layout = layout();
        let spec = container_spec(&s, &image(), &layout).unwrap();
        let access: Vec<DeviceAccess> = spec.devices.iter().map(|d| d.access).collect();
        assert_eq!(
            access,
            [
                DeviceAccess {
                    read: true,
                    write: false,
                    mknod: false
                },
                DeviceAccess::ALL
            ]
        );
    }

    fn layout() -> ContainerLayout {
        ContainerLayout {
            layers: vec![],
            upper: "/c/upper".into(),
            work: "/c/work".into(),
            volumes: "/v".into(),
            log_max_bytes: 1,
            log_keep: 1,
            network: None,
        }
    }

    #[test]
    fn privileged_opens_every_capability_device_and_path() {
        let mut s = service();
        s.user = Some("0".into());
        s.seccomp = SeccompPolicy::Unconfined;
        s.tuning.push(coracle_proto::Tuning::Privileged {
            no_new_privileges: false,
        });
        let spec = container_spec(&s, &image(), &layout()).unwrap();
        let all = Some(vec!["ALL".to_string()]);
        assert_eq!(spec.process.capabilities, all);
        let sets = &spec.process.capability_sets;
        assert_eq!((&sets.effective, &sets.permitted), (&None, &None));
        assert_eq!(sets.inheritable, all);
        assert!(sets.ambient.is_empty(), "root needs no ambient set");
        assert!(!spec.process.no_new_privileges);
        assert!(!spec.seccomp && spec.seccomp_profile.is_none());
        assert!(spec.masked_paths.is_empty() && spec.readonly_paths.is_empty());
        let sys = spec
            .mounts
            .iter()
            .find(|m| m.destination == "/sys")
            .unwrap();
        assert!(!sys.options.iter().any(|o| o == "ro"), "{sys:?}");
        assert!(spec.host_devices);
    }

    #[test]
    fn privileged_non_root_gets_ambient_caps_and_asked_no_new_privileges() {
        let mut s = service();
        s.seccomp = SeccompPolicy::Profile(coracle_proto::SeccompProfile {
            default_action: coracle_proto::seccomp::SeccompAction::Allow,
            rules: vec![],
        });
        s.tuning.push(coracle_proto::Tuning::Privileged {
            no_new_privileges: true,
        });
        // The image's user 1000.
        let spec = container_spec(&s, &image(), &layout()).unwrap();
        assert_eq!(spec.process.capability_sets.ambient, ["ALL"]);
        assert!(spec.process.no_new_privileges);
        assert!(!spec.seccomp && spec.seccomp_profile.is_none(), "as Docker");
    }

    #[test]
    fn unprivileged_keeps_every_default_restriction() {
        let spec = container_spec(&service(), &image(), &layout()).unwrap();
        let defaults = ContainerSpec::new(spec.rootfs.clone(), vec![]);
        assert!(spec.process.no_new_privileges && spec.seccomp && !spec.host_devices);
        assert_eq!(spec.masked_paths, defaults.masked_paths);
        assert_eq!(spec.readonly_paths, defaults.readonly_paths);
        assert_eq!(spec.mounts[..defaults.mounts.len()], defaults.mounts[..]);
        assert_ne!(spec.process.capabilities, Some(vec!["ALL".to_string()]));
        assert_eq!(spec.process.capability_sets.inheritable, None);
    }
}
