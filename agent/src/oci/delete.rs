//! `delete [--force] ID`: removes a stopped container — its cgroups and its dir — and runs
//! the poststop hooks. With `--force` a created or running container is killed first.
//! Without it, deleting a container that is not stopped is refused and changes nothing.
//! `--force` on a container that does not exist succeeds, as runc's does: podman deletes
//! with `--force` after a failed `create`, and its error is the one to report.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::hooks;
use super::state::OciStatus;
use super::{open, OciError};

/// How long a SIGKILLed init may take to be gone (and reaped by its parent).
const KILL_WAIT: Duration = Duration::from_secs(10);

pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), OciError> {
    let (dir, record) = match open(root, id) {
        Err(OciError::NotFound { .. }) if force => return Ok(()),
        opened => opened?,
    };
    let status = record.status(&dir);
    if status != OciStatus::Stopped {
        if !force {
            return Err(OciError::WrongStatus {
                id: id.to_owned(),
                status,
                wanted: "stopped (or --force)",
            });
        }
        // Every process of the container, not only its init: without a pid namespace of
        // its own, the init's death would not take the others along.
        for pid in record.cgroup().pids() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(record.pid), Signal::SIGKILL);
        let deadline = Instant::now() + KILL_WAIT;
        while record.init_alive() {
            if Instant::now() >= deadline {
                return Err(OciError::StillAlive {
                    id: id.to_owned(),
                    waited: KILL_WAIT,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    record.cgroup().remove()?;
    std::fs::remove_dir_all(&dir).map_err(|source| OciError::RemoveDir {
        path: dir.clone(),
        source,
    })?;
    hooks::run_warning(
        "poststop",
        &record.poststop,
        &record.state_json(OciStatus::Stopped),
    );
    Ok(())
}
