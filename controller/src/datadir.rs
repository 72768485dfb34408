//! `DataDir`: the layout of the controller's state directory and the one way secrets are
//! written into it (mode 0600, temp file then rename, so a crash never leaves half a key).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why the data directory could not be prepared or a file in it written.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Paths inside the data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the directory (mode 0700) if needed.
    pub fn open(root: &Path) -> Result<Self, DataDirError> {
        fs::create_dir_all(root).map_err(|source| DataDirError::CreateDir {
            path: root.to_path_buf(),
            source,
        })?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(|source| {
            DataDirError::CreateDir {
                path: root.to_path_buf(),
                source,
            }
        })?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// A data directory that is only read (by the CLI); never created.
    pub fn existing(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("coracle.db")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    pub fn broker_cert(&self) -> PathBuf {
        self.root.join("broker.pem")
    }
    pub fn broker_key(&self) -> PathBuf {
        self.root.join("broker.key")
    }
    pub fn deployment_key(&self) -> PathBuf {
        self.root.join("deployment.key")
    }
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }
    /// The key of the devices' registry pull tokens (see `registry::device_tokens`).
    pub fn pull_key(&self) -> PathBuf {
        self.root.join("pull.key")
    }
    pub fn controller_mqtt_password(&self) -> PathBuf {
        self.root.join("controller-mqtt.password")
    }
    /// Written at every start with the API's bound URL, so the CLI finds it.
    pub fn api_url(&self) -> PathBuf {
        self.root.join("api.url")
    }
    /// Present while the fleet database is on PostgreSQL (`[store] url`), so `coracle backup`
    /// (which reads only the data dir) can say to use pg_dump instead.
    pub fn postgres_store_note(&self) -> PathBuf {
        self.root.join("store-is-postgresql")
    }
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }
}

/// Writes `contents` to `path` with mode 0600, via a temp file and a rename.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), DataDirError> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a public file (certificates, the API URL) with mode 0644, atomically.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), DataDirError> {
    write_with_mode(path, contents, 0o644)
}

/// Temp file with `mode`, fsync, rename, fsync of the directory (so the rename itself
/// survives a power cut).
fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), DataDirError> {
    coracle_images::store::write_atomic_with_mode(path, contents, mode).map_err(|source| {
        DataDirError::WriteFile {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Reads a file of the data directory as text.
pub fn read_text(path: &Path) -> Result<String, DataDirError> {
    fs::read_to_string(path).map_err(|source| DataDirError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_mode_0600_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("secret.tmp").exists());
    }

    #[test]
    fn data_dir_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(&dir.path().join("a/b")).unwrap();
        let mode = fs::metadata(data.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
