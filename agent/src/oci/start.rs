//! `start`: releases a created container's init through the exec fifo, then runs the
//! poststart hooks (whose failure only warns, per the runtime spec).

use std::path::Path;

use super::hooks;
use super::state::OciStatus;
use super::{fifo, open, OciError};

pub fn start(root: &Path, id: &str) -> Result<(), OciError> {
    let (dir, record) = open(root, id)?;
    let status = record.status(&dir);
    if status != OciStatus::Created {
        return Err(OciError::WrongStatus {
            id: id.to_owned(),
            status,
            wanted: "created",
        });
    }
    fifo::release(&dir, &record.state_json(OciStatus::Created))?;
    hooks::run_warning(
        "poststart",
        &record.poststart,
        &record.state_json(OciStatus::Running),
    );
    Ok(())
}
