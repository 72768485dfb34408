//! `kill [--all] ID [SIGNAL]`: a signal by name (`TERM`, `SIGTERM`, `sigkill`) or number,
//! sent to the init of a created or running container, or with `--all` to every process
//! in its cgroup.

use std::path::Path;
use std::str::FromStr;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::state::OciStatus;
use super::{open, OciError};

/// Parses `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal, OciError> {
    let unknown = || OciError::UnknownSignal {
        signal: text.to_owned(),
    };
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| unknown());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| unknown())
}

/// Signals the init, or with `all` every process in the container's cgroup.
pub fn kill(root: &Path, id: &str, signal: Signal, all: bool) -> Result<(), OciError> {
    let (dir, record) = open(root, id)?;
    let status = record.status(&dir);
    if status == OciStatus::Stopped {
        return Err(OciError::WrongStatus {
            id: id.to_owned(),
            status,
            wanted: "created or running",
        });
    }
    if all {
        // Processes may exit between the read and the signal: ESRCH is no failure.
        for pid in record.cgroup().pids() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        }
    }
    nix::sys::signal::kill(Pid::from_raw(record.pid), signal).map_err(|source| OciError::Signal {
        id: id.to_owned(),
        signal,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_with_or_without_sig_and_by_number() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("usr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
