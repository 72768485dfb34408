//! The per-container state file, `<state dir>/<id>/state.json`: the only thing a new agent
//! process needs to adopt a running container. Written by the shim atomically (temp file,
//! rename), so a reader — or an agent killed mid-write — sees the old or the new state,
//! never half of one.
//!
//! Deliberately no fsync: the file describes processes, and processes do not survive power
//! loss. The state dir belongs on /run (tmpfs on devices), like crun's and runc's; skipping
//! fsync saves flash wear and ~10 ms per container start on a disk. A state file that is
//! unreadable anyway (stale dir on a disk after power loss) does not block `delete`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroups::{CgroupVersion, Condition};
use super::id::ContainerId;

/// Lifecycle of one container, as recorded by its shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Set up and waiting for `start`; the process has not exec'd yet.
    Created,
    Running,
    Stopped,
}

/// What the runtime knows about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: ContainerId,
    pub status: Status,
    /// Host pid of the container's init.
    pub pid: i32,
    /// Start time of `pid` (clock ticks since boot), so a recycled pid is never signalled.
    pub pid_start_time: u64,
    pub shim_pid: i32,
    pub shim_start_time: u64,
    /// Exit code shell-style: the status, or 128 + signal.
    pub exit_code: Option<i32>,
    /// The cgroup's OOM killer fired during the container's life.
    pub oom_killed: bool,
    /// Limits that could not be applied (missing controllers or files).
    pub conditions: Vec<Condition>,
    pub cgroup_version: CgroupVersion,
    /// Host-side cgroup directories, one per hierarchy, removed when the container stops.
    pub cgroup_paths: Vec<PathBuf>,
}

/// Failures reading or writing a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("write state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse state file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub const STATE_FILE: &str = "state.json";

impl ContainerState {
    /// Reads `dir/state.json`.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(STATE_FILE);
        let bytes = fs::read(&path).map_err(|source| StateError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })
    }

    /// Replaces `dir/state.json` atomically.
    pub fn store(&self, dir: &Path) -> Result<(), StateError> {
        let json = serde_json::to_vec(self).expect("state has only plain serialisable fields");
        write_atomically(&dir.join(STATE_FILE), &json)
    }
}

/// Write temp → rename (see the module note for why without fsync).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    crate::private_dir::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// Start time of `pid` from /proc/PID/stat (field 22), `None` when the process is gone or
/// a zombie (it has exited; whoever reaps it is not our concern).
pub fn pid_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parens; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_the_atomic_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = ContainerState {
            id: "web".parse().unwrap(),
            status: Status::Stopped,
            pid: 42,
            pid_start_time: 7,
            shim_pid: 41,
            shim_start_time: 6,
            cgroup_version: CgroupVersion::V1,
            exit_code: Some(137),
            oom_killed: true,
            conditions: vec![Condition::MissingController {
                controller: "io".into(),
            }],
            cgroup_paths: vec![PathBuf::from("/sys/fs/cgroup/memory/coracle/web")],
        };
        state.store(dir.path()).unwrap();
        assert_eq!(ContainerState::load(dir.path()).unwrap(), state);
        assert!(!dir.path().join("state.tmp").exists());
    }

    #[test]
    fn corrupt_state_file_is_a_parse_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let err = ContainerState::load(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Parse { .. }));
        assert!(err.to_string().contains("state.json"));
    }

    #[test]
    fn pid_start_time_reads_this_process_and_misses_a_dead_one() {
        assert!(pid_start_time(std::process::id() as i32).is_some());
        assert_eq!(pid_start_time(i32::MAX), None);
    }
}
