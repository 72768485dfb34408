//! Crash-safe file replacement: write a temp file, fsync it, keep the old file as `.prev`,
//! rename the temp over the target, fsync the directory. A kill -9 or power cut at any point
//! leaves either the old or the new content under the target name, never a mix.
//!
//! Files carry a magic, a format version and a sha256 of the body, so a torn or bit-rotted
//! file (SD cards) is detected on load instead of being trusted.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::private_dir::{create_private_dir, private_file, FILE_MODE};

const MAGIC: &[u8; 4] = b"CRST";
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1 + 32;

/// Why a state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot create state dir {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write temp file {path}")]
    WriteTemp {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot keep the previous copy as {path}")]
    KeepPrevious {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rename {from} over {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fsync directory {path}")]
    SyncDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is damaged: {why}")]
    Damaged { path: PathBuf, why: &'static str },
}

/// Paths that belong to one state file.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The copy of the last good content kept beside `path`.
pub fn previous_path(path: &Path) -> PathBuf {
    sibling(path, ".prev")
}

fn temp_path(path: &Path) -> PathBuf {
    sibling(path, ".tmp")
}

/// Atomically replaces `path` with `body` (framed with magic, version and checksum).
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<(), StateFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(|source| StateFileError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let temp = temp_path(path);
    let write = || -> std::io::Result<()> {
        let mut file = private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        // A temp file left by an older agent may be wider; the renamed file must not be.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE))?;
        file.write_all(MAGIC)?;
        file.write_all(&[FORMAT_VERSION])?;
        file.write_all(&Sha256::digest(body))?;
        file.write_all(body)?;
        file.sync_all()
    };
    write().map_err(|source| StateFileError::WriteTemp {
        path: temp.clone(),
        source,
    })?;
    // The old content stays reachable as `.prev` (a hard link, so no copy and no window in
    // which the target is missing) in case the new file later rots on the card.
    let previous = previous_path(path);
    let keep_previous = || {
        ignore_missing(fs::remove_file(&previous))?;
        ignore_missing(fs::hard_link(path, &previous))
    };
    keep_previous().map_err(|source| StateFileError::KeepPrevious {
        path: previous.clone(),
        source,
    })?;
    fs::rename(&temp, path).map_err(|source| StateFileError::Rename {
        from: temp.clone(),
        to: path.to_path_buf(),
        source,
    })?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateFileError::SyncDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// A file that is already absent is as good as removed (or as an old copy not kept).
fn ignore_missing(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Reads and checks one framed file; `Ok(None)` when it does not exist.
pub fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, StateFileError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let damaged = |why| StateFileError::Damaged {
        path: path.to_path_buf(),
        why,
    };
    if bytes.len() < HEADER_LEN {
        return Err(damaged("shorter than its header"));
    }
    if &bytes[..4] != MAGIC {
        return Err(damaged("wrong magic"));
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(damaged("unknown format version"));
    }
    let body = &bytes[HEADER_LEN..];
    if Sha256::digest(body).as_slice() != &bytes[5..HEADER_LEN] {
        return Err(damaged("checksum mismatch"));
    }
    Ok(Some(body.to_vec()))
}

/// Removes a temp file left by a write that was killed before its rename. Its content was
/// never the state of record, so dropping it loses nothing.
pub fn remove_stale_temp(path: &Path) -> Result<bool, StateFileError> {
    let temp = temp_path(path);
    match fs::remove_file(&temp) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StateFileError::WriteTemp { path: temp, source }),
    }
}

/// Moves a damaged file aside (never deletes it: an operator may want it).
pub fn quarantine(path: &Path) -> Result<PathBuf, StateFileError> {
    let aside = sibling(path, ".damaged");
    fs::rename(path, &aside).map_err(|source| StateFileError::Rename {
        from: path.to_path_buf(),
        to: aside.clone(),
        source,
    })?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_and_keeps_previous() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.bin");
        assert_eq!(read_checked(&path).unwrap(), None);
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(read_checked(&path).unwrap().unwrap(), b"two");
        assert_eq!(
            read_checked(&previous_path(&path)).unwrap().unwrap(),
            b"one"
        );
        assert!(!temp_path(&path).exists());
        // The desired state holds the services' environment: root's alone.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn damaged_files_are_named_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        write_atomic(&path, b"payload").unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = read_checked(&path).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        fs::write(&path, b"CR").unwrap();
        assert!(matches!(
            read_checked(&path),
            Err(StateFileError::Damaged {
                why: "shorter than its header",
                ..
            })
        ));
        let aside = quarantine(&path).unwrap();
        assert!(aside.exists() && !path.exists());
    }

    #[test]
    fn stale_temp_from_a_killed_write_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        write_atomic(&path, b"good").unwrap();
        fs::write(temp_path(&path), b"half writ").unwrap();
        assert!(remove_stale_temp(&path).unwrap());
        assert!(!remove_stale_temp(&path).unwrap());
        assert_eq!(read_checked(&path).unwrap().unwrap(), b"good");
    }
}
