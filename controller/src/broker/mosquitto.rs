//! `MosquittoAccounts`: device accounts on an external Mosquitto on the controller's host, in
//! the directory `coracle broker mosquitto-config` wrote. Granting runs
//! `mosquitto_passwd -b DIR/passwd <device> <password>`, revoking `mosquitto_passwd -D`; then
//! Mosquitto is told to reload (SIGHUP to the pid in `DIR/mosquitto.pid`, which the generated
//! `mosquitto.conf` makes it write). Mosquitto keeps its own salted hash of the password, so
//! the account can only be made at enrolment, the one time the controller sees the password.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use coracle_proto::DeviceId;

use super::{AccessError, DeviceAccess};

/// The password file and pid file of one Mosquitto.
#[derive(Debug, Clone)]
pub struct MosquittoAccounts {
    passwd: PathBuf,
    pid_file: PathBuf,
    /// mosquitto_passwd rewrites the whole file without locking it: one change at a time,
    /// or two enrolments at once would lose one of them.
    lock: Arc<Mutex<()>>,
}

impl MosquittoAccounts {
    /// Accounts in `dir`, as written by `coracle broker mosquitto-config --out DIR`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            passwd: dir.join(PASSWD_FILE),
            pid_file: dir.join(PID_FILE),
            lock: Arc::default(),
        }
    }

    /// `mosquitto_passwd FLAG DIR/passwd DEVICE [PASSWORD]`.
    fn mosquitto_passwd(
        &self,
        flag: &str,
        device: &DeviceId,
        password: Option<&str>,
    ) -> Result<(), AccessError> {
        let out = Command::new("mosquitto_passwd")
            .arg(flag)
            .arg(&self.passwd)
            .arg(device.as_str())
            .args(password)
            .output()
            .map_err(|source| AccessError::RunPasswd {
                device: device.clone(),
                path: self.passwd.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(AccessError::Passwd {
                device: device.clone(),
                path: self.passwd.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// SIGHUP: Mosquitto reads its password file again.
    fn reload(&self) -> Result<(), AccessError> {
        let pid = std::fs::read_to_string(&self.pid_file)
            .map_err(|source| AccessError::ReadPid {
                path: self.pid_file.clone(),
                source,
            })?
            .trim()
            .to_string();
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AccessError::BadPid {
                path: self.pid_file.clone(),
                pid,
            });
        }
        let out = Command::new("kill")
            .args(["-HUP", &pid])
            .output()
            .map_err(|source| AccessError::RunReload {
                pid: pid.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(AccessError::Reload {
                pid,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

/// The generated password file's name.
pub const PASSWD_FILE: &str = "passwd";
/// The pid file the generated `mosquitto.conf` asks Mosquitto to write.
pub const PID_FILE: &str = "mosquitto.pid";

impl MosquittoAccounts {
    /// Whether the password file has a line for `device` (`user:hash`).
    fn has_account(&self, device: &DeviceId) -> Result<bool, AccessError> {
        let text = match std::fs::read_to_string(&self.passwd) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(AccessError::ReadPasswd {
                    path: self.passwd.clone(),
                    source,
                })
            }
        };
        Ok(text
            .lines()
            .any(|line| line.split_once(':').map(|(user, _)| user) == Some(device.as_str())))
    }
}

impl DeviceAccess for MosquittoAccounts {
    fn grant(&self, device: &DeviceId, password: &str) -> Result<(), AccessError> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // `-b` takes the password as an argument: visible in /proc to the same user for the
        // few milliseconds mosquitto_passwd runs, on the controller's own host.
        self.mosquitto_passwd("-b", device, Some(password))?;
        // The file is the truth: a Mosquitto that is down reads it when it starts.
        if let Err(err) = self.reload() {
            tracing::warn!(device = %device, error = %err, "device added to mosquitto's password file, but mosquitto was not reloaded");
        }
        Ok(())
    }

    fn revoke(&self, device: &DeviceId) -> Result<(), AccessError> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // Idempotent, so a removal whose reload failed can be retried.
        if self.has_account(device)? {
            self.mosquitto_passwd("-D", device, None)?;
        }
        // A running Mosquitto keeps the account until it reloads: that must not be skipped.
        self.reload()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_found_by_whole_user_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(PASSWD_FILE),
            "pi-10:$7$x\ncoracle-controller:$7$y\n",
        )
        .unwrap();
        let accounts = MosquittoAccounts::in_dir(dir.path());
        let id = |s: &str| s.parse::<DeviceId>().unwrap();
        assert!(accounts.has_account(&id("pi-10")).unwrap());
        assert!(!accounts.has_account(&id("pi-1")).unwrap());
        let empty = MosquittoAccounts::in_dir(&dir.path().join("none"));
        assert!(!empty.has_account(&id("pi-10")).unwrap());
    }

    #[test]
    fn a_missing_pid_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = MosquittoAccounts::in_dir(dir.path());
        let err = accounts.reload().unwrap_err();
        assert!(err.to_string().contains("mosquitto.pid"), "{err}");
    }

    #[test]
    fn a_garbled_pid_file_is_refused_before_any_signal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PID_FILE), "-1\n").unwrap();
        let accounts = MosquittoAccounts::in_dir(dir.path());
        assert!(matches!(accounts.reload(), Err(AccessError::BadPid { .. })));
    }
}
