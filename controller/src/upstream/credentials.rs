//! Registry credentials: `coracle registry login HOST` stores them in the controller's data
//! dir (`registry-logins/<host>.toml`, mode 0600), a `[[registries]]` entry may name its own
//! file instead. They are read at each pull, so a login takes effect without a restart, and
//! they only ever go to the registry they belong to: never into desired states or bootstrap
//! files, never into logs (`Debug` hides the password).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::UpstreamError;

/// A username and password for one registry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// Reads a credentials file (`username = "..."`, `password = "..."`).
    pub fn read(host: &str, path: &Path) -> Result<Self, UpstreamError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| UpstreamError::ReadCredentials {
                host: host.to_string(),
                path: path.to_path_buf(),
                source,
            })?;
        toml::from_str(&text).map_err(|source| UpstreamError::ParseCredentials {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Checks a registry host as it may become a file name: `host[:port]`, no path.
pub fn check_host(host: &str) -> Result<(), UpstreamError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['.', '-', ':'])
        && host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(UpstreamError::HostInvalid {
            host: host.to_string(),
        })
    }
}

/// The logins stored in the data dir.
#[derive(Debug, Clone)]
pub struct Logins {
    dir: PathBuf,
}

impl Logins {
    /// Logins under `data_dir/registry-logins`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("registry-logins"),
        }
    }

    fn path(&self, host: &str) -> Result<PathBuf, UpstreamError> {
        check_host(host)?;
        Ok(self.dir.join(format!("{host}.toml")))
    }

    /// Stores the login for `host` (mode 0600, replaced atomically).
    pub fn save(&self, host: &str, credentials: &Credentials) -> Result<PathBuf, UpstreamError> {
        let path = self.path(host)?;
        let save_error = |source| UpstreamError::SaveLogin {
            host: host.to_string(),
            path: path.clone(),
            source,
        };
        crate::datadir::DataDir::open(&self.dir).map_err(save_error)?;
        let text = toml::to_string(credentials).expect("two strings always serialise as TOML");
        crate::datadir::write_private(&path, text.as_bytes()).map_err(save_error)?;
        Ok(path)
    }

    /// Forgets the login for `host`; false when there was none.
    pub fn remove(&self, host: &str) -> Result<bool, UpstreamError> {
        let path = self.path(host)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(UpstreamError::RemoveLogin {
                host: host.to_string(),
                path,
                source,
            }),
        }
    }

    /// The stored login for `host`, if any.
    pub fn load(&self, host: &str) -> Result<Option<Credentials>, UpstreamError> {
        let path = self.path(host)?;
        if !path.exists() {
            return Ok(None);
        }
        Credentials::read(host, &path).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn logins_are_private_files_per_host_and_debug_hides_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let logins = Logins::in_data_dir(dir.path());
        assert_eq!(logins.load("registry.lan:5000").unwrap(), None);
        let creds = Credentials {
            username: "ci".into(),
            password: "s3cret".into(),
        };
        let path = logins.save("registry.lan:5000", &creds).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            logins.load("registry.lan:5000").unwrap(),
            Some(creds.clone())
        );
        assert!(!format!("{creds:?}").contains("s3cret"));
        assert!(logins.remove("registry.lan:5000").unwrap());
        assert_eq!(logins.load("registry.lan:5000").unwrap(), None);
        assert!(!logins.remove("registry.lan:5000").unwrap());
        for bad in ["", "../x", "a/b", ".hidden", "Registry.lan"] {
            assert!(logins.save(bad, &creds).is_err(), "{bad}");
        }
    }
}
