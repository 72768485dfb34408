//! What survives between OCI invocations: `<root>/<id>/oci.json`, written once by `create`
//! (atomically), plus the exec fifo. The status is never stored: it is read from the world
//! — the init alive (pid and start time match) and the fifo present is created, alive
//! without the fifo is running, gone is stopped — so nothing has to update the file when
//! the container exits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fifo;
use crate::runtime::cgroups::{CgroupVersion, ContainerCgroup};
use crate::runtime::spec::Hook;
use crate::runtime::state::{pid_start_time, write_atomically, StateError};

pub const RECORD_FILE: &str = "oci.json";
/// The runtime-spec version this runtime reports and implements.
pub const OCI_VERSION: &str = "1.0.2";

/// One OCI container, as `create` left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Host pid of the container's init.
    pub pid: i32,
    /// Start time of `pid`, so a recycled pid is never taken for the container.
    pub pid_start_time: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    pub annotations: BTreeMap<String, String>,
    pub cgroup_version: CgroupVersion,
    pub cgroup_paths: Vec<PathBuf>,
    /// Hooks that run after `create` returned (the bundle may change meanwhile).
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

/// OCI lifecycle status (runtime-spec "state").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OciStatus {
    Creating,
    Created,
    Running,
    Stopped,
}

/// The state document of the runtime spec, as `state` prints it and hooks read it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState<'a> {
    pub oci_version: &'static str,
    pub id: &'a str,
    pub status: OciStatus,
    /// Absent once stopped (the spec requires it only while created or running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: &'a Path,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: &'a BTreeMap<String, String>,
}

impl Record {
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(RECORD_FILE);
        let bytes = std::fs::read(&path).map_err(|source| StateError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })
    }

    pub fn store(&self, dir: &Path) -> Result<(), StateError> {
        let json = serde_json::to_vec(self).expect("record has only plain serialisable fields");
        write_atomically(&dir.join(RECORD_FILE), &json)
    }

    /// The container's cgroup, as `create` recorded it.
    pub fn cgroup(&self) -> ContainerCgroup {
        ContainerCgroup::from_paths(self.cgroup_version, &self.cgroup_paths)
    }

    /// Whether the init still runs (a zombie counts as gone).
    pub fn init_alive(&self) -> bool {
        pid_start_time(self.pid) == Some(self.pid_start_time)
    }

    /// The status now, read from the init and the exec fifo in `dir`.
    pub fn status(&self, dir: &Path) -> OciStatus {
        status_of(self.init_alive(), fifo::is_waiting(dir))
    }

    /// The state document with `status`.
    pub fn state(&self, status: OciStatus) -> OciState<'_> {
        OciState {
            oci_version: OCI_VERSION,
            id: &self.id,
            status,
            pid: (status != OciStatus::Stopped).then_some(self.pid),
            bundle: &self.bundle,
            annotations: &self.annotations,
        }
    }

    /// The state document as JSON (one line, as hooks and the exec fifo want it).
    pub fn state_json(&self, status: OciStatus) -> Vec<u8> {
        serde_json::to_vec(&self.state(status)).expect("state has only plain serialisable fields")
    }
}

/// Created while the init waits on the fifo, running once released, stopped when gone.
pub fn status_of(init_alive: bool, fifo_present: bool) -> OciStatus {
    match (init_alive, fifo_present) {
        (false, _) => OciStatus::Stopped,
        (true, true) => OciStatus::Created,
        (true, false) => OciStatus::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            id: "web".into(),
            pid: std::process::id() as i32,
            pid_start_time: pid_start_time(std::process::id() as i32).unwrap(),
            bundle: "/srv/bundle".into(),
            annotations: BTreeMap::from([("a".into(), "b".into())]),
            cgroup_version: CgroupVersion::V1,
            cgroup_paths: vec![],
            poststart: vec![],
            poststop: vec![],
        }
    }

    #[test]
    fn status_comes_from_the_init_and_the_fifo() {
        assert_eq!(status_of(true, true), OciStatus::Created);
        assert_eq!(status_of(true, false), OciStatus::Running);
        assert_eq!(status_of(false, true), OciStatus::Stopped);
        assert_eq!(status_of(false, false), OciStatus::Stopped);
    }

    #[test]
    fn state_json_has_the_runtime_spec_fields() {
        let json: serde_json::Value =
            serde_json::from_slice(&record().state_json(OciStatus::Running)).unwrap();
        assert_eq!(json["ociVersion"], OCI_VERSION);
        assert_eq!(json["id"], "web");
        assert_eq!(json["status"], "running");
        assert_eq!(json["pid"], std::process::id());
        assert_eq!(json["bundle"], "/srv/bundle");
        assert_eq!(json["annotations"]["a"], "b");
        let stopped: serde_json::Value =
            serde_json::from_slice(&record().state_json(OciStatus::Stopped)).unwrap();
        assert!(stopped.get("pid").is_none());
    }

    #[test]
    fn record_round_trips_and_reads_this_process_as_alive() {
        let dir = tempfile::tempdir().unwrap();
        record().store(dir.path()).unwrap();
        let loaded = Record::load(dir.path()).unwrap();
        assert_eq!(loaded, record());
        assert_eq!(loaded.status(dir.path()), OciStatus::Running);
    }
}
