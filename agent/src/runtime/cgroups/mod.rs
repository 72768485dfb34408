//! cgroups for containers, v1 and v2. Every container gets `<root>/<parent>/<id>` (v2) or
//! `<root>/<controller>/<parent>/<id>` in each v1 hierarchy. Limits come from the pure
//! [`limits::plan`]; this module only creates directories, writes files and removes what it
//! created. The root and parent name come from [`CgroupConfig`], so tests use a fake tree or
//! their own parent. Which version a root is comes from `layout` (mountinfo).
//!
//! A limit the kernel cannot enforce because its controller is missing (v1: no hierarchy;
//! v2: not offered) refuses the container, unless the operator allowed it
//! (`allow_missing_controllers`): then it runs and carries a `MissingController`
//! condition. A missing limit file of a present controller (`memory.swap.max` without swap
//! accounting, `blkio.weight` without BFQ) is always only a condition. A root with no
//! hierarchy at all is always an error: a container never runs without a cgroup.

mod bpf;
pub mod device_bpf;
pub mod layout;
pub mod limits;
mod v1;
mod v2;

pub use v2::install_device_filter;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::id::ContainerId;
use super::spec::Resources;
use limits::{DeviceRule, LimitWrite};

/// Where the cgroup tree is and which parent holds Coracle's containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupConfig {
    pub root: PathBuf,
    pub parent: String,
    /// Run a container whose limits need a controller this kernel lacks, reporting a
    /// `MissingController` condition, instead of refusing it. Off by default.
    #[serde(default)]
    pub allow_missing_controllers: bool,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/sys/fs/cgroup"),
            parent: "coracle".into(),
            allow_missing_controllers: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// A limit the kernel cannot enforce here: reported, never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The controller is not mounted (v1) or not available (v2).
    MissingController { controller: String },
    /// The controller exists but lacks this file (e.g. `blkio.weight` without BFQ).
    MissingFile { controller: String, file: String },
}

/// Failures creating, filling or removing a container's cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "find a cgroup hierarchy at {root}: neither a cgroup2 mount nor a directory of v1 \
         hierarchies (check runtime.cgroup_root)"
    )]
    NoHierarchy { root: PathBuf },
    #[error(
        "enforce the container's limits under {root}: the {controller} controller is not \
         available (runtime.allow_missing_controllers runs such containers without it)"
    )]
    MissingController { root: PathBuf, controller: String },
    #[error("create cgroup {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write {value:?} to cgroup file {path}")]
    WriteFile {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("remove cgroup {path}")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("load the device allow-list program for {path} (verifier: {verifier_log:?})")]
    LoadDeviceFilter {
        path: PathBuf,
        verifier_log: String,
        #[source]
        source: nix::Error,
    },
    #[error("attach the device allow-list program to {path}")]
    AttachDeviceFilter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read cgroup file {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One container's cgroup directories: `(controller, path)`; v2 has one entry named "".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup {
    pub version: CgroupVersion,
    pub dirs: Vec<(String, PathBuf)>,
}

/// The version of the tree at `root`, by the mounts in mountinfo: v2 at or inside a
/// cgroup2 mount, v1 where v1 hierarchies are mounted. A directory mountinfo does not know
/// (a fake tree in a test) is judged by its files; a root that is no tree is an error.
pub fn detect_version(root: &Path) -> Result<CgroupVersion, CgroupError> {
    if let Some(version) = layout::CgroupMounts::read()?.version_at(root) {
        return Ok(version);
    }
    if root.join("cgroup.controllers").is_file() {
        return Ok(CgroupVersion::V2);
    }
    if v1::CONTROLLERS.iter().any(|c| root.join(c).is_dir()) {
        return Ok(CgroupVersion::V1);
    }
    Err(CgroupError::NoHierarchy {
        root: root.to_owned(),
    })
}

/// Says once, when the engine opens, which layout the machine has and how containers get
/// cgroups: a root with no hierarchy refuses every container, which the operator should
/// hear of before the first deploy fails.
pub fn log_layout(config: &CgroupConfig) {
    let layout = layout::CgroupMounts::read().ok().and_then(|m| m.layout());
    let root = config.root.display();
    match detect_version(&config.root) {
        Ok(version) => tracing::info!(
            %root,
            ?layout,
            ?version,
            allow_missing_controllers = config.allow_missing_controllers,
            "cgroup layout"
        ),
        Err(err) => tracing::warn!(
            %root,
            ?layout,
            error = %err,
            "no cgroup hierarchy at the configured root: every container will be refused"
        ),
    }
}

/// An OOM kill ended the container only if it died of SIGKILL (exit code 137, also when
/// its init reports a killed child that way) and the cgroup counted an OOM kill: a
/// container that lost a process to the OOM killer and then exited on its own was not
/// OOM-killed.
pub fn ended_by_oom(exit_code: i32, oom_kills: u64) -> bool {
    exit_code == 128 + libc::SIGKILL && oom_kills > 0
}

impl ContainerCgroup {
    /// Creates the container's cgroups (and the parent where missing), then applies the
    /// limits. Returns the conditions for limits this kernel cannot enforce. On error,
    /// whatever was created is removed again.
    pub fn create(
        config: &CgroupConfig,
        id: &ContainerId,
        resources: &Resources,
        devices: &[DeviceRule],
    ) -> Result<(Self, Vec<Condition>), CgroupError> {
        let version = detect_version(&config.root)?;
        let writes = limits::plan(resources, devices, version);
        let (cgroup, mut conditions) = match version {
            CgroupVersion::V1 => v1::create(config, id, &writes)?,
            CgroupVersion::V2 => v2::create(config, id, &writes, devices)?,
        };
        if cgroup.dirs.is_empty() {
            return Err(CgroupError::NoHierarchy {
                root: config.root.clone(),
            });
        }
        match cgroup.apply(&writes) {
            Ok(more) => {
                // On v2 a disabled controller's files are absent too: report the controller once.
                for c in more {
                    let covered = matches!(&c, Condition::MissingFile { controller, .. }
                        if conditions.contains(&Condition::MissingController { controller: controller.clone() }));
                    if !covered {
                        conditions.push(c);
                    }
                }
            }
            Err(err) => {
                // Best effort: the error being returned matters more than a cleanup error.
                let _ = cgroup.remove();
                return Err(err);
            }
        }
        if let Some(controller) = refused_controller(&conditions, config.allow_missing_controllers)
        {
            let _ = cgroup.remove();
            return Err(CgroupError::MissingController {
                root: config.root.clone(),
                controller,
            });
        }
        Ok((cgroup, conditions))
    }

    /// Rebuilds the handle from the paths recorded in the state file.
    pub fn from_paths(version: CgroupVersion, paths: &[PathBuf]) -> Self {
        let dirs = paths
            .iter()
            .map(|p| {
                let controller = match version {
                    CgroupVersion::V2 => String::new(),
                    CgroupVersion::V1 => controller_of_v1_path(p),
                };
                (controller, p.clone())
            })
            .collect();
        Self { version, dirs }
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, p)| p.clone()).collect()
    }

    fn dir_for(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| self.version == CgroupVersion::V2 || c == controller)
            .map(|(_, p)| p.as_path())
    }

    /// Writes each limit; a missing controller or file becomes a condition.
    pub fn apply(&self, writes: &[LimitWrite]) -> Result<Vec<Condition>, CgroupError> {
        let mut conditions = Vec::new();
        for w in writes {
            let Some(dir) = self.dir_for(w.controller) else {
                let c = Condition::MissingController {
                    controller: w.controller.into(),
                };
                if !conditions.contains(&c) {
                    conditions.push(c);
                }
                continue;
            };
            let path = dir.join(w.file);
            if !path.exists() {
                conditions.push(Condition::MissingFile {
                    controller: w.controller.into(),
                    file: w.file.into(),
                });
                continue;
            }
            write_file(&path, &w.value)?;
        }
        Ok(conditions)
    }

    /// Moves `pid` into every one of the container's cgroups.
    pub fn join(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, dir) in &self.dirs {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The files through which a single-threaded process moves itself in: v1's `tasks`,
    /// written with "0" (see `join_self`). `None` on v2, where a thread cannot leave its
    /// domain cgroup alone.
    pub fn self_join_files(&self) -> Option<Vec<PathBuf>> {
        (self.version == CgroupVersion::V1)
            .then(|| self.dirs.iter().map(|(_, d)| d.join("tasks")).collect())
    }

    /// The v2 directory, for `clone3(CLONE_INTO_CGROUP)`; `None` on v1.
    pub fn v2_dir(&self) -> Option<&Path> {
        (self.version == CgroupVersion::V2)
            .then(|| self.dir_for(""))
            .flatten()
    }

    /// Every process in the container's cgroup (read from the first hierarchy; the
    /// container's processes are in all of them). Empty when the cgroup is gone.
    pub fn pids(&self) -> Vec<i32> {
        self.dirs
            .first()
            .and_then(|(_, dir)| fs::read_to_string(dir.join("cgroup.procs")).ok())
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// How many processes the OOM killer killed in this cgroup (0 when unknown).
    pub fn oom_kills(&self) -> u64 {
        let (dir, file) = match self.version {
            CgroupVersion::V1 => (self.dir_for("memory"), "memory.oom_control"),
            CgroupVersion::V2 => (self.dir_for(""), "memory.events"),
        };
        dir.and_then(|d| fs::read_to_string(d.join(file)).ok())
            .and_then(|text| counter(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// Total cpu time used, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> Result<u64, CgroupError> {
        let (path, scale) = match self.version {
            CgroupVersion::V1 => (self.dir_for("cpuacct").map(|d| d.join("cpuacct.usage")), 1),
            CgroupVersion::V2 => (self.dir_for("").map(|d| d.join("cpu.stat")), 1000),
        };
        let path = path.unwrap_or_else(|| PathBuf::from("cpuacct"));
        let text = fs::read_to_string(&path).map_err(|source| CgroupError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let value = match self.version {
            CgroupVersion::V1 => text.trim().parse().ok(),
            CgroupVersion::V2 => counter(&text, "usage_usec"),
        };
        value
            .map(|v: u64| v * scale)
            .ok_or_else(|| CgroupError::ReadFile {
                path,
                source: std::io::Error::new(ErrorKind::InvalidData, "no cpu usage counter"),
            })
    }

    /// Removes the container's directories (not the parent). Waits up to a second for the
    /// kernel to finish tearing down exiting tasks (rmdir says EBUSY until then).
    pub fn remove(&self) -> Result<(), CgroupError> {
        for (_, dir) in &self.dirs {
            remove_dir_when_empty(dir)?;
        }
        Ok(())
    }
}

/// The first missing controller, unless the operator allowed running without them.
fn refused_controller(conditions: &[Condition], allowed: bool) -> Option<String> {
    if allowed {
        return None;
    }
    conditions.iter().find_map(|c| match c {
        Condition::MissingController { controller } => Some(controller.clone()),
        Condition::MissingFile { .. } => None,
    })
}

fn controller_of_v1_path(path: &Path) -> String {
    // <root>/<controller>/<parent>/<id>
    path.ancestors()
        .nth(2)
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads `key N` out of a flat-keyed cgroup file.
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Moves the calling thread (a single-threaded process: the whole process) into the v1
/// cgroups whose `tasks` files are given. Writing "0" to `tasks` is the one cgroup move the
/// kernel makes without taking the global threadgroup lock for writing, which costs an RCU
/// grace period (~10 ms here, the largest single cost of starting a container).
pub fn join_self(tasks_files: &[PathBuf]) -> Result<(), CgroupError> {
    for file in tasks_files {
        write_file(file, "0")?;
    }
    Ok(())
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::WriteFile {
        path: path.to_owned(),
        value: value.into(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<bool, CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::CreateDir {
            path: path.to_owned(),
            source,
        }),
    }
}

fn remove_dir_when_empty(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(source) => {
                return Err(CgroupError::RemoveDir {
                    path: dir.to_owned(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_reads_flat_keyed_files() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(counter(text, "oom_kill"), Some(3));
        assert_eq!(counter(text, "usage_usec"), None);
    }

    #[test]
    fn oom_is_reported_only_when_an_oom_kill_ended_the_container() {
        let cases = [
            (137, 1, true),
            (137, 0, false), // killed, but not by the OOM killer
            (0, 1, false),   // lost a process to the OOM killer, then exited on its own
            (1, 3, false),
            (143, 1, false), // SIGTERM
        ];
        for (code, kills, want) in cases {
            assert_eq!(
                ended_by_oom(code, kills),
                want,
                "exit {code}, {kills} OOM kills"
            );
        }
    }

    #[test]
    fn a_missing_controller_is_refused_unless_allowed_and_a_missing_file_never() {
        let memory = Condition::MissingController {
            controller: "memory".into(),
        };
        let swap = Condition::MissingFile {
            controller: "memory".into(),
            file: "memory.swap.max".into(),
        };
        let cases = [
            (vec![swap.clone(), memory.clone()], false, Some("memory")),
            (vec![memory], true, None),
            (vec![swap], false, None),
            (vec![], false, None),
        ];
        for (conditions, allowed, want) in cases {
            assert_eq!(
                refused_controller(&conditions, allowed).as_deref(),
                want,
                "{conditions:?} allowed={allowed}"
            );
        }
    }

    #[test]
    fn v1_controller_is_read_back_from_the_path() {
        let p = Path::new("/sys/fs/cgroup/memory/coracle/web");
        assert_eq!(controller_of_v1_path(p), "memory");
    }
}
