//! The agent's files are root's alone: its state dir is 0700 and the files it writes 0600,
//! since the committed desired state carries the services' environment (often credentials)
//! and the logs carry whatever the services print. The dirs a container's rootfs and volumes
//! sit below (the data dir and the runtime's state dir) are 0711 instead, as Docker's and
//! containerd's are: nobody else can list them, but a user-namespaced container's root (an
//! unprivileged uid on the host) can still reach its own rootfs through them.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the agent's own dirs.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the dirs containers' rootfs and volumes are reached through.
pub const TRAVERSE_ONLY_DIR_MODE: u32 = 0o711;
/// Mode of the files the agent writes.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) as 0700, and narrows it to 0700 if it existed wider.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    create_dir_with_mode(dir, DIR_MODE)
}

/// Creates `dir` (and missing parents) as 0711, and sets it to 0711 if it existed otherwise.
pub fn create_traverse_only_dir(dir: &Path) -> io::Result<()> {
    create_dir_with_mode(dir, TRAVERSE_ONLY_DIR_MODE)
}

fn create_dir_with_mode(dir: &Path, wanted: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(wanted)
        .create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode != wanted {
        fs::set_permissions(dir, fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// Options that create a file as 0600 (an existing file keeps its mode: callers that reuse a
/// path write a new file and rename it over the old one).
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_are_created_and_narrowed_to_0700_and_files_0600() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an existing wider dir is narrowed");
        create_traverse_only_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o711);
        let file = dir.join("f");
        private_file().write(true).create(true).open(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }
}
