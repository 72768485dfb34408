//! Checking a downloaded agent build and writing it to the free slot. Nothing is swapped
//! unless every check passes: the file's SHA-256 is the signed one, it is an ELF program
//! for this device's architecture, and it fits the record. The slot file is written as a
//! temp file, synced, renamed and its directory synced; only then does the record name it
//! as the trial.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use coracle_proto::{AgentUpdate, Digest};

use super::slots::{SlotBinary, SlotError, SlotFiles};

/// Why a build was not staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("read agent build {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent build {version} has digest {found}, but the signed update says {expected}")]
    DigestMismatch {
        version: String,
        expected: Digest,
        found: Digest,
    },
    #[error("agent build {version} is not an ELF program this list knows (header {header})")]
    NotAProgram { version: String, header: String },
    #[error("agent build {version} is for {found}, this device runs {expected}")]
    WrongArchitecture {
        version: String,
        expected: String,
        found: String,
    },
    #[error("agent update for {version} names platform {named}, this device runs {expected}")]
    WrongPlatform {
        version: String,
        expected: String,
        named: String,
    },
    #[error("write agent slot file {path}")]
    WriteSlot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent slot record")]
    Record(#[from] SlotError),
}

impl StageError {
    /// Whether the build itself is bad (never try it again), rather than this device's
    /// disk failing now (try again later).
    pub fn is_bad_build(&self) -> bool {
        matches!(
            self,
            Self::DigestMismatch { .. }
                | Self::NotAProgram { .. }
                | Self::WrongArchitecture { .. }
                | Self::WrongPlatform { .. }
        )
    }
}

/// The platform this device runs, and its ELF spelling (ELF has no variants: `linux/arm`).
#[derive(Debug, Clone)]
pub struct DevicePlatform {
    pub oci: String,
    pub elf: String,
}

impl DevicePlatform {
    pub fn this_device() -> Self {
        let platform = crate::platform::this_device();
        Self {
            elf: format!("{}/{}", platform.os, platform.architecture),
            oci: platform.to_string(),
        }
    }
}

/// Checks the update's platform before anything is downloaded.
pub fn check_platform(update: &AgentUpdate, device: &DevicePlatform) -> Result<(), StageError> {
    if update.platform != device.oci {
        return Err(StageError::WrongPlatform {
            version: update.version.clone(),
            expected: device.oci.clone(),
            named: update.platform.clone(),
        });
    }
    Ok(())
}

/// Checks the bytes of a build against the update and this device.
pub fn verify(
    bytes: &[u8],
    update: &AgentUpdate,
    device: &DevicePlatform,
) -> Result<(), StageError> {
    let found = Digest::of(bytes);
    if found != update.binary {
        return Err(StageError::DigestMismatch {
            version: update.version.clone(),
            expected: update.binary,
            found,
        });
    }
    let header = &bytes[..bytes.len().min(20)];
    let Some(elf) = crate::platform::elf_platform(header) else {
        return Err(StageError::NotAProgram {
            version: update.version.clone(),
            header: header.iter().take(4).map(|b| format!("{b:02x}")).collect(),
        });
    };
    if elf != device.elf {
        return Err(StageError::WrongArchitecture {
            version: update.version.clone(),
            expected: device.elf.clone(),
            found: elf.to_string(),
        });
    }
    Ok(())
}

/// Verifies the build at `source` and makes it the trial in the free slot.
pub fn stage(
    source: &Path,
    update: &AgentUpdate,
    device: &DevicePlatform,
    files: &SlotFiles,
) -> Result<SlotBinary, StageError> {
    let mut bytes = Vec::new();
    std::fs::File::open(source)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source_err| StageError::Read {
            path: source.to_path_buf(),
            source: source_err,
        })?;
    verify(&bytes, update, device)?;
    let state = files.load()?;
    let target = SlotBinary {
        slot: state.free_slot(),
        version: update.version.clone(),
        binary: update.binary,
        image: Some(update.image.digest),
    };
    write_slot(&files.path(target.slot), &bytes)?;
    files.save(&state.begin_trial(target.clone(), update.sequence))?;
    Ok(target)
}

/// temp → fsync → rename → fsync dir, executable by root only.
fn write_slot(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    let fail = |source| StageError::WriteSlot {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let temp = dir.join(".tmp-slot");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&temp)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&temp, path).map_err(fail)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::slots::{Slot, SlotState};

    fn this_exe() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    fn update_for(bytes: &[u8]) -> AgentUpdate {
        AgentUpdate {
            device: "pi-1".parse().unwrap(),
            sequence: 2,
            version: "0.2.0".into(),
            platform: DevicePlatform::this_device().oci,
            image: format!("coracle-agent@{}", Digest::of(b"index"))
                .parse()
                .unwrap(),
            binary: Digest::of(bytes),
        }
    }

    fn staged_files() -> (tempfile::TempDir, SlotFiles, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let files = SlotFiles::new(dir.path());
        let source = dir.path().join("download");
        (dir, files, source)
    }

    #[test]
    fn a_good_build_lands_in_the_free_slot_as_the_trial() {
        let (_dir, files, source) = staged_files();
        let exe = this_exe();
        std::fs::write(&source, &exe).unwrap();
        let update = update_for(&exe);
        let target = stage(&source, &update, &DevicePlatform::this_device(), &files).unwrap();
        assert_eq!(target.slot, Slot::A);
        assert_eq!(std::fs::read(files.path(Slot::A)).unwrap(), exe);
        let state = files.load().unwrap();
        assert_eq!(state.trial.unwrap().target, target);
        assert_eq!(state.sequence, 2);
    }

    #[test]
    fn a_wrong_digest_is_refused_and_nothing_is_swapped() {
        let (_dir, files, source) = staged_files();
        let exe = this_exe();
        std::fs::write(&source, &exe).unwrap();
        let mut update = update_for(&exe);
        update.binary = Digest::of(b"something else");
        let err = stage(&source, &update, &DevicePlatform::this_device(), &files).unwrap_err();
        assert!(matches!(err, StageError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("the signed update says"), "{err}");
        assert!(err.is_bad_build());
        assert!(!files.path(Slot::A).exists());
        assert_eq!(files.load().unwrap(), SlotState::default());
    }

    #[test]
    fn a_build_for_another_architecture_is_refused_by_name() {
        let mut other = vec![0u8; 64];
        other[..4].copy_from_slice(b"\x7fELF");
        other[4] = 2;
        other[5] = 1;
        // aarch64 on x86_64 hosts, x86_64 elsewhere.
        let machine: u16 = if cfg!(target_arch = "x86_64") {
            183
        } else {
            62
        };
        other[18..20].copy_from_slice(&machine.to_le_bytes());
        let update = update_for(&other);
        let err = verify(&other, &update, &DevicePlatform::this_device()).unwrap_err();
        assert!(matches!(err, StageError::WrongArchitecture { .. }), "{err}");
        assert!(err.to_string().contains("this device runs"), "{err}");
        let script = b"#!/bin/sh\nexit 1\n";
        let err = verify(script, &update_for(script), &DevicePlatform::this_device()).unwrap_err();
        assert!(matches!(err, StageError::NotAProgram { .. }), "{err}");
    }

    #[test]
    fn an_update_for_another_platform_is_refused_before_any_download() {
        let mut update = update_for(b"x");
        update.platform = "linux/riscv64".into();
        let err = check_platform(&update, &DevicePlatform::this_device()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "agent update for 0.2.0 names platform linux/riscv64, this device runs {}",
                DevicePlatform::this_device().oci
            )
        );
    }
}
