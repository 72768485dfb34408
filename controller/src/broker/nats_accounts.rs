//! `NatsAccounts`: device accounts of a nats-server cluster whose nodes run on the
//! controller's host from the directory `coracle broker nats-config` wrote. The `users` file
//! (`<user> <bcrypt hash>` per line, the controller first) is the truth; every change
//! rewrites `accounts.conf` from it and reloads every node that has a pid file in the
//! directory (SIGHUP, which nats-server takes as `--signal reload`). nats-server checks
//! bcrypt hashes, so like Mosquitto's password file the account is made at enrolment, the
//! one time the controller sees the password. Nodes on other hosts need the directory's
//! `accounts.conf` copied to them and a reload: this type only reaches local pids.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use coracle_proto::DeviceId;

use super::nats_config::{accounts_conf, ACCOUNTS_FILE, USERS_FILE};
use super::AccessError;
use crate::datadir::write_private;

/// bcrypt's cost for device passwords: they are 256-bit random tokens, so the hash need
/// not slow guessing down; a low cost keeps a fleet's reconnect storm cheap for the broker
/// (it checks the hash on every MQTT CONNECT).
pub const BCRYPT_COST: u32 = 6;

/// bcrypt of `password` in the `$2a$` form nats-server recognises.
pub fn nats_hash(password: &str) -> Result<String, bcrypt::BcryptError> {
    Ok(bcrypt::hash_with_result(password, BCRYPT_COST)?.format_for_version(bcrypt::Version::TwoA))
}

/// The accounts of the nodes in one directory.
#[derive(Debug, Clone)]
pub struct NatsAccounts {
    dir: PathBuf,
    /// One change at a time in this process: each rewrites both files whole.
    lock: Arc<Mutex<()>>,
}

/// The lock file beside `users`: controllers of one fleet share the directory, so a change
/// also holds an exclusive `flock` on it, or two enrolments at once on two controllers
/// would lose one of them.
const LOCK_FILE: &str = "users.lock";

/// `(user, hash)` pairs of a users file's text, in order.
fn parse_users(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(user, hash)| (user.to_string(), hash.trim().to_string()))
        .collect()
}

impl NatsAccounts {
    /// Accounts in `dir`, as written by `coracle broker nats-config --out DIR`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            lock: Arc::default(),
        }
    }

    /// Holds the directory's lock file until dropped.
    fn lock_dir(&self) -> Result<nix::fcntl::Flock<std::fs::File>, AccessError> {
        let path = self.dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| AccessError::LockNats {
                path: path.clone(),
                source,
            })?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
            AccessError::LockNats {
                path,
                source: errno.into(),
            }
        })
    }

    fn users(&self) -> Result<Vec<(String, String)>, AccessError> {
        let path = self.dir.join(USERS_FILE);
        std::fs::read_to_string(&path)
            .map(|text| parse_users(&text))
            .map_err(|source| AccessError::ReadNatsUsers { path, source })
    }

    /// Writes `users` and the `accounts.conf` made from them.
    fn write(&self, users: &[(String, String)]) -> Result<(), AccessError> {
        let Some(((_, controller), devices)) = users.split_first() else {
            return Err(AccessError::NoNatsController {
                path: self.dir.join(USERS_FILE),
            });
        };
        let devices: Vec<(DeviceId, String)> = devices
            .iter()
            .filter_map(|(user, hash)| Some((user.parse().ok()?, hash.clone())))
            .collect();
        let text: String = users.iter().map(|(u, h)| format!("{u} {h}\n")).collect();
        for (name, bytes) in [
            (USERS_FILE, text),
            (ACCOUNTS_FILE, accounts_conf(controller, &devices)),
        ] {
            let path = self.dir.join(name);
            write_private(&path, bytes.as_bytes())
                .map_err(|source| AccessError::WriteNatsFile { path, source })?;
        }
        Ok(())
    }

    /// SIGHUP to every `*.pid` in the directory: each node reads its config again.
    fn reload(&self) -> Result<(), AccessError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|source| AccessError::ReadNatsUsers {
                path: self.dir.clone(),
                source,
            })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pid") {
                signal_reload(&path)?;
            }
        }
        Ok(())
    }
}

fn signal_reload(pid_file: &Path) -> Result<(), AccessError> {
    let text = std::fs::read_to_string(pid_file).map_err(|source| AccessError::ReadNatsUsers {
        path: pid_file.to_path_buf(),
        source,
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| AccessError::BadPid {
            path: pid_file.to_path_buf(),
            pid: text.trim().to_string(),
        })?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|source| AccessError::ReloadNats {
        path: pid_file.to_path_buf(),
        source,
    })
}

impl super::DeviceAccess for NatsAccounts {
    fn grant(&self, device: &DeviceId, password: &str) -> Result<(), AccessError> {
        let hash = nats_hash(password).map_err(|source| AccessError::HashNats {
            device: device.clone(),
            source,
        })?;
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let _one_controller_at_a_time = self.lock_dir()?;
        let mut users = self.users()?;
        users.retain(|(user, _)| user != device.as_str());
        users.push((device.to_string(), hash));
        self.write(&users)?;
        // The files are the truth: a node that is down reads them when it starts.
        if let Err(err) = self.reload() {
            tracing::warn!(device = %device, error = %err, "device added to the NATS accounts, but a node was not reloaded");
        }
        Ok(())
    }

    fn revoke(&self, device: &DeviceId) -> Result<(), AccessError> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let _one_controller_at_a_time = self.lock_dir()?;
        let mut users = self.users()?;
        users.retain(|(user, _)| user != device.as_str());
        self.write(&users)?;
        // A running node keeps the account until it reloads: that must not be skipped.
        self.reload()
    }
}

#[cfg(test)]
mod tests {
    use super::super::DeviceAccess;
    use super::*;

    #[test]
    fn grant_and_revoke_rewrite_the_accounts_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(USERS_FILE), "coracle-controller $2a$06$c\n").unwrap();
        let accounts = NatsAccounts::in_dir(dir.path());
        let a: DeviceId = "dev-a".parse().unwrap();
        accounts.grant(&a, "pw").unwrap();
        accounts.grant(&a, "pw2").unwrap();
        let users = accounts.users().unwrap();
        assert_eq!(users.len(), 2, "{users:?}");
        assert!(bcrypt::verify("pw2", &users[1].1).unwrap());
        assert!(users[1].1.starts_with("$2a$06$"), "{users:?}");
        let conf = std::fs::read_to_string(dir.path().join(ACCOUNTS_FILE)).unwrap();
        assert!(conf.contains("coracle.v1.dev-a.health"), "{conf}");
        accounts.revoke(&a).unwrap();
        let conf = std::fs::read_to_string(dir.path().join(ACCOUNTS_FILE)).unwrap();
        assert!(!conf.contains("dev-a"), "{conf}");
        assert!(conf.contains("coracle-controller"), "{conf}");
    }

    #[test]
    fn a_garbled_pid_file_is_refused_before_any_signal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("n1.pid"), "-1\n").unwrap();
        let accounts = NatsAccounts::in_dir(dir.path());
        assert!(matches!(accounts.reload(), Err(AccessError::BadPid { .. })));
    }
}
