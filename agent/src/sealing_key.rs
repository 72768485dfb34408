//! The device's X25519 sealing key: made on first start, kept in the state dir as a 0600
//! file, never sent anywhere. Its public half goes into `ReportedState::sealing_key`, and the
//! controller seals direct-registry pull credentials to it (`coracle_proto::sealed`).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use coracle_proto::sealed::{self, SealError, Sealed};
use coracle_proto::DeviceId;

use crate::private_dir::{create_private_dir, private_file};

/// The key file's name inside the state dir.
pub const FILE_NAME: &str = "sealing.key";

/// Why the sealing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum SealingKeyError {
    #[error("create state dir {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read sealing key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sealing key {path} is {len} bytes, expected 32")]
    Length { path: PathBuf, len: usize },
    #[error("draw random bytes for a new sealing key from /dev/urandom")]
    Random(#[source] io::Error),
    #[error("write sealing key {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The device's sealing secret. `Debug` shows only the public key.
#[derive(Clone)]
pub struct SealingKey {
    secret: [u8; 32],
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

impl SealingKey {
    /// Loads `<state_dir>/sealing.key`, or makes and stores a new key when there is none.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, SealingKeyError> {
        create_private_dir(state_dir).map_err(|source| SealingKeyError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => {
                let secret: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| SealingKeyError::Length {
                            path: path.clone(),
                            len: bytes.len(),
                        })?;
                Ok(Self { secret })
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Self::create(&path),
            Err(source) => Err(SealingKeyError::Read { path, source }),
        }
    }

    /// Draws a new key and writes it with `create_new`, so a key already there (another
    /// start racing this one) is never overwritten.
    fn create(path: &Path) -> Result<Self, SealingKeyError> {
        let mut secret = [0u8; 32];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut secret))
            .map_err(SealingKeyError::Random)?;
        let write_err = |source| SealingKeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = private_file()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(write_err)?;
        file.write_all(&secret)
            .and_then(|()| file.sync_all())
            .map_err(write_err)?;
        Ok(Self { secret })
    }

    /// The public key as lowercase hex, as `ReportedState::sealing_key` carries it.
    pub fn public_hex(&self) -> String {
        sealed::public_key(&self.secret)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Opens a box the controller sealed for this device.
    pub fn open(&self, device: &DeviceId, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        sealed::open(&self.secret, device, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_is_made_once_as_0600_and_kept() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("state");
        let first = SealingKey::load_or_create(&dir).unwrap();
        let mode = fs::metadata(dir.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let again = SealingKey::load_or_create(&dir).unwrap();
        assert_eq!(first.public_hex(), again.public_hex());
        assert_eq!(first.public_hex().len(), 64);
        assert!(!format!("{first:?}").contains(&format!("{:02x}", first.secret[0]).repeat(32)));
    }

    #[test]
    fn a_damaged_key_file_is_refused_not_replaced() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(temp.path().join(FILE_NAME), b"short").unwrap();
        assert!(matches!(
            SealingKey::load_or_create(temp.path()),
            Err(SealingKeyError::Length { len: 5, .. })
        ));
    }

    #[test]
    fn opens_what_was_sealed_to_its_public_key() {
        let temp = tempfile::tempdir().unwrap();
        let key = SealingKey::load_or_create(temp.path()).unwrap();
        let device: DeviceId = "pi-1".parse().unwrap();
        let public: [u8; 32] = sealed::public_key(&key.secret);
        let boxed = sealed::seal(&public, &device, [9; 32], b"u:p").unwrap();
        assert_eq!(key.open(&device, &boxed).unwrap(), b"u:p");
    }
}
