//! Running a stopped container again, as `docker start` does after an exit: the same spec
//! (read back from the shim input the first `create` wrote), a fresh shim and init. The
//! writable layer lives outside the state dir, so it survives; the previous runs' logs are
//! kept as the newest rotated files, because a crash is when they are wanted.

use std::fs;
use std::path::{Path, PathBuf};

use super::linux::LinuxRuntime;
use super::logs::LOG_FILE;
use super::shim::{ShimInput, INPUT_FILE};
use super::spec::Stdio;
use super::{ContainerId, ContainerState, Runtime, RuntimeError, Status};

impl LinuxRuntime {
    /// Deletes the stopped container `id` and creates it again from its own spec, keeping
    /// its logs. Refuses a container that is not stopped.
    pub fn recreate(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        let state = self.state(id)?;
        if state.status != Status::Stopped {
            return Err(RuntimeError::WrongStatus {
                id: id.clone(),
                status: state.status,
                wanted: "stopped",
            });
        }
        let dir = self.dir(id);
        let input_path = dir.join(INPUT_FILE);
        let input: ShimInput = fs::read(&input_path)
            .map_err(|source| RuntimeError::PrepareDir {
                path: input_path.clone(),
                source,
            })
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| RuntimeError::PrepareDir {
                    path: input_path.clone(),
                    source: std::io::Error::other(e),
                })
            })?;
        let keep = match input.spec.stdio {
            Stdio::Logs { keep, .. } => keep,
            _ => 0,
        };
        // Logs wait beside the state dir while the container is deleted and created again.
        let parked = self.config().state_dir.join(format!(".{id}.logs"));
        let _ = fs::remove_dir_all(&parked);
        let logs = log_files(&dir, keep);
        if !logs.is_empty() {
            fs::create_dir_all(&parked).map_err(|source| RuntimeError::PrepareDir {
                path: parked.clone(),
                source,
            })?;
            for (i, path) in logs.iter().enumerate() {
                let _ = fs::rename(path, parked.join(i.to_string()));
            }
        }
        self.delete(id)?;
        let created = self.create(id, &input.spec);
        // Newest first: the last run's log becomes `.1`, older ones shift; beyond `keep` dropped.
        for i in 0..logs.len() {
            let from = parked.join(i.to_string());
            let to = dir.join(format!("{LOG_FILE}.{}", i + 1));
            if created.is_ok() && i < keep as usize {
                let _ = fs::rename(&from, &to);
            }
        }
        let _ = fs::remove_dir_all(&parked);
        created
    }
}

/// The current log and its rotated files, newest first, at most `keep + 1` of them.
fn log_files(dir: &Path, keep: u32) -> Vec<PathBuf> {
    let current = dir.join(LOG_FILE);
    std::iter::once(current)
        .chain((1..=keep).map(|n| dir.join(format!("{LOG_FILE}.{n}"))))
        .filter(|p| p.metadata().is_ok_and(|m| m.len() > 0))
        .collect()
}
