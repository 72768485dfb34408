//! What a container should be: the runtime's input, as plain data. Built by the agent from
//! the desired state, or by [`crate::runtime::bundle`] from an OCI `config.json`.

use std::path::PathBuf;

use coracle_proto::SeccompProfile;
use serde::{Deserialize, Serialize};

mod device;
pub use device::{Device, DeviceAccess, DeviceCgroupRule, DeviceNode, NodeKind};

/// Everything the runtime needs to create one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub rootfs: Rootfs,
    /// Remount the root read-only after setup.
    pub readonly_rootfs: bool,
    pub process: Process,
    pub hostname: Option<String>,
    pub network: Network,
    /// Extra mounts (proc, dev, sys are set up by the runtime itself).
    pub mounts: Vec<Mount>,
    /// Host device nodes passed through; every other device is absent.
    pub devices: Vec<Device>,
    /// More device cgroup allow rules, by number (OCI `linux.resources.devices`).
    #[serde(default)]
    pub device_cgroup_rules: Vec<DeviceCgroupRule>,
    /// Every device, as Docker's `--privileged`: the device cgroup allows all (`a *:*
    /// rwm`) and /dev holds a node for each of the host's character and block devices
    /// (`init::dev::host_device_nodes`), made when the container is created.
    #[serde(default)]
    pub host_devices: bool,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub resources: Resources,
    pub stdio: Stdio,
    /// Drop the seccomp filter only when explicitly asked (`unconfined`, or an OCI bundle
    /// without one).
    pub seccomp: bool,
    /// The operator's profile; `None` is the default allow-list (`init::seccomp::allowlist`).
    #[serde(default)]
    pub seccomp_profile: Option<SeccompProfile>,
    /// Run in a new user namespace with these id mappings (see `runtime::userns`).
    #[serde(default)]
    pub user_namespace: Option<IdMapping>,
    /// PID 1 is the runtime's own init (`init::pid1`), with the process as its child:
    /// signals are forwarded to it and orphans reaped (compose `init: true`).
    #[serde(default)]
    pub init: bool,
    /// Namespaced kernel parameters (`net.*` with its own network, IPC's `kernel.*`,
    /// `fs.mqueue.*`; see `init::kernel_params`), written inside the container.
    #[serde(default)]
    pub sysctl: std::collections::BTreeMap<String, String>,
    /// OCI `linux.rootfsPropagation` (`rslave`, `shared`, …; see `init::propagation`);
    /// `None` makes every mount private.
    #[serde(default)]
    pub rootfs_propagation: Option<String>,
    /// Namespaces the container shares with the host instead of getting its own (an OCI
    /// bundle that leaves them out); the daemon's containers share none.
    #[serde(default)]
    pub host_namespaces: HostNamespaces,
    /// Namespaces joined by path instead of created (OCI `linux.namespaces[].path`; the
    /// network one is `network`).
    #[serde(default)]
    pub joined_namespaces: Vec<JoinedNamespace>,
    /// OCI `hooks.startContainer`: run by the init after `start`, before exec, inside the
    /// container (the OCI command line only; see `runtime::hook`).
    #[serde(default)]
    pub start_container_hooks: Vec<Hook>,
}

/// Which of the optional namespaces are the host's (mount is always the container's own:
/// the rootfs needs it; network and user have their own fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNamespaces {
    pub pid: bool,
    pub uts: bool,
    pub ipc: bool,
    pub cgroup: bool,
}

/// A namespace to join: the init enters it (the pid one is entered before clone, since
/// only children change pid namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedNamespace {
    pub kind: NamespaceKind,
    /// e.g. `/proc/1234/ns/uts`.
    pub path: PathBuf,
}

/// The namespaces that can be joined by path besides network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceKind {
    Mount,
    Pid,
    Uts,
    Ipc,
    Cgroup,
}

impl NamespaceKind {
    pub fn clone_flag(self) -> nix::sched::CloneFlags {
        use nix::sched::CloneFlags;
        match self {
            Self::Mount => CloneFlags::CLONE_NEWNS,
            Self::Pid => CloneFlags::CLONE_NEWPID,
            Self::Uts => CloneFlags::CLONE_NEWUTS,
            Self::Ipc => CloneFlags::CLONE_NEWIPC,
            Self::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        }
    }
}

/// A program the runtime runs at a lifecycle point, with the container's state JSON on
/// its stdin (an OCI hook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub path: PathBuf,
    /// The full argv, `args[0]` included (OCI); empty means just the path.
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited).
    pub env: Vec<String>,
    /// Killed and failed after this many seconds.
    pub timeout_secs: Option<u32>,
}

/// A user namespace's id mappings: container ids to host ids, as in `/proc/PID/uid_map`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

/// `count` ids from `container_start` in the container are `host_start..` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container_start: u32,
    pub host_start: u32,
    pub count: u32,
}

impl IdMapping {
    /// Container uids and gids `0..count` as host ids `host_start..host_start + count`.
    pub fn root_at(host_start: u32, count: u32) -> Self {
        let range = IdRange {
            container_start: 0,
            host_start,
            count,
        };
        Self {
            uids: vec![range],
            gids: vec![range],
        }
    }
}

/// The container's root filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Rootfs {
    /// A plain directory, bind-mounted.
    Directory(PathBuf),
    /// overlayfs: read-only lower dirs (top first) plus this container's upper and work dirs.
    Overlay {
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
    },
}

/// The process run as the container's pid 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: User,
    /// Capability names like `CAP_CHOWN`, or `ALL` for every one the kernel knows; `None`
    /// means Docker's default set. The bounding set, and effective and permitted unless
    /// `capability_sets` says otherwise.
    pub capabilities: Option<Vec<String>>,
    /// The other sets; by default none but what `capabilities` implies.
    #[serde(default)]
    pub capability_sets: CapabilitySets,
    pub no_new_privileges: bool,
    pub rlimits: Vec<Rlimit>,
    /// The process's `/proc/self/oom_score_adj`, -1000..=1000 (lowering it needs
    /// CAP_SYS_RESOURCE on the host).
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// More supplementary groups (compose `group_add`): names looked up in the container's
    /// /etc/group at start, or GIDs.
    #[serde(default)]
    pub group_add: Vec<String>,
    /// The process's file mode creation mask (OCI `process.user.umask`); `None` keeps
    /// the runtime's.
    #[serde(default)]
    pub umask: Option<u32>,
}

/// The capability sets besides bounding, by name. `None` for effective or permitted means
/// the bounding set; `None` for inheritable means the ambient list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitySets {
    pub effective: Option<Vec<String>>,
    pub permitted: Option<Vec<String>>,
    pub inheritable: Option<Vec<String>>,
    /// Raised into the ambient set, which a non-root user keeps across exec (each must also
    /// be permitted and inheritable; the kernel refuses others).
    pub ambient: Vec<String>,
}

/// Who the process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum User {
    Id {
        uid: u32,
        gid: u32,
        additional_gids: Vec<u32>,
    },
    /// A user name (optionally `name:group`) looked up in the container's /etc/passwd.
    Name(String),
}

/// One resource limit, by its name as in OCI (`RLIMIT_NOFILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// Network isolation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace.
    Host,
    /// A private namespace with only loopback, brought up.
    None,
    /// Join a namespace prepared by someone else (e.g. `/run/netns/app`).
    Join(PathBuf),
}

/// A mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub destination: String,
    pub kind: MountKind,
    pub source: Option<PathBuf>,
    pub options: Vec<String>,
}

/// The mount types the runtime knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    Bind,
    Tmpfs,
    Proc,
    Sysfs,
    Devpts,
    Mqueue,
    Cgroup,
}

/// cgroup limits. `None` means "no limit set".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_max: Option<u64>,
    /// Swap allowed on top of `memory_max` (0 = no swap).
    pub memory_swap: Option<u64>,
    /// The soft limit the kernel reclaims down to under memory pressure (Docker's
    /// `--memory-reservation`). `default`: a container created by an older agent has none.
    #[serde(default)]
    pub memory_reservation: Option<u64>,
    /// CPU quota in millicores (1000 = one full core), over the kernel's 100 ms period.
    pub cpu_millicores: Option<u64>,
    /// cgroup v2 style weight, 1..=10000 (100 = default).
    pub cpu_weight: Option<u64>,
    /// CPU quota per period in µs exactly as an OCI bundle gives it (-1 = unlimited); with
    /// `cpu_period_us` it takes the place of `cpu_millicores`, so nothing is rounded.
    #[serde(default)]
    pub cpu_quota_us: Option<i64>,
    /// The CPU period in µs as an OCI bundle gives it.
    #[serde(default)]
    pub cpu_period_us: Option<u64>,
    /// v1 `cpu.shares` as an OCI bundle gives them (2..=262144); written as they are on v1
    /// and converted to a weight only on v2. Takes the place of `cpu_weight`.
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    pub pids_max: Option<u64>,
    /// cgroup v2 style io weight, 1..=10000.
    pub io_weight: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
}

/// Where the container's stdin/stdout/stderr go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stdio {
    /// The runtime caller's own stdio (foreground `run`).
    Inherit,
    /// Size-capped rotating log files in the container's state dir.
    Logs { max_bytes: u64, keep: u32 },
}

/// Docker's default capability set.
pub use coracle_proto::capability::DEFAULT_CAPABILITIES;

/// The paths Docker masks in /proc and /sys.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths Docker makes read-only in /proc.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

impl ContainerSpec {
    /// A spec with Docker-like defaults: running `args` as root in `rootfs`, no network,
    /// default capabilities, masks and seccomp filter, output to 1 MiB × 2 log files.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> Self {
        Self {
            rootfs,
            readonly_rootfs: false,
            process: Process {
                args,
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ],
                cwd: "/".into(),
                user: User::Id {
                    uid: 0,
                    gid: 0,
                    additional_gids: Vec::new(),
                },
                capabilities: None,
                capability_sets: CapabilitySets::default(),
                no_new_privileges: true,
                rlimits: Vec::new(),
                oom_score_adj: None,
                group_add: Vec::new(),
                umask: None,
            },
            hostname: None,
            network: Network::None,
            mounts: default_mounts(),
            devices: Vec::new(),
            device_cgroup_rules: Vec::new(),
            host_devices: false,
            masked_paths: DEFAULT_MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            readonly_paths: DEFAULT_READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect(),
            resources: Resources::default(),
            stdio: Stdio::Logs {
                max_bytes: 1 << 20,
                keep: 2,
            },
            seccomp: true,
            seccomp_profile: None,
            user_namespace: None,
            init: false,
            sysctl: Default::default(),
            rootfs_propagation: None,
            host_namespaces: HostNamespaces::default(),
            joined_namespaces: Vec::new(),
            start_container_hooks: Vec::new(),
        }
    }
}

impl ContainerSpec {
    /// Makes /sys writable (a privileged container's; Docker's `--privileged`).
    pub fn set_sysfs_writable(&mut self) {
        for m in &mut self.mounts {
            if m.destination == "/sys" && m.kind == MountKind::Sysfs {
                m.options.retain(|o| o != "ro");
            }
        }
    }

    /// Sets the size of the `/dev/shm` tmpfs (compose `shm_size`; Docker's 64 MiB
    /// otherwise, as `default_mounts`).
    pub fn set_shm_size(&mut self, bytes: u64) {
        for m in &mut self.mounts {
            if m.destination == "/dev/shm" && m.kind == MountKind::Tmpfs {
                m.options.retain(|o| !o.starts_with("size="));
                m.options.push(format!("size={bytes}"));
            }
        }
    }
}

/// proc, a tmpfs /dev with pts, shm and mqueue, and a read-only sysfs: what Docker mounts.
pub fn default_mounts() -> Vec<Mount> {
    let m = |destination: &str, kind, options: &[&str]| Mount {
        destination: destination.into(),
        kind,
        source: None,
        options: options.iter().map(|o| o.to_string()).collect(),
    };
    vec![
        m("/proc", MountKind::Proc, &["nosuid", "noexec", "nodev"]),
        m(
            "/dev",
            MountKind::Tmpfs,
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        m(
            "/dev/pts",
            MountKind::Devpts,
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        m(
            "/dev/shm",
            MountKind::Tmpfs,
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        m(
            "/dev/mqueue",
            MountKind::Mqueue,
            &["nosuid", "noexec", "nodev"],
        ),
        m(
            "/sys",
            MountKind::Sysfs,
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ]
}
