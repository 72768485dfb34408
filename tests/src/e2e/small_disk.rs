//! A small filesystem for a device's data dir: a tmpfs of a fixed size, mounted by the test
//! and unmounted (lazily, in case a container still holds it) when dropped, so a test can
//! fill a device's disk without touching the machine's.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A mounted tmpfs of `size_mib`.
#[derive(Debug)]
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    /// Creates `path` and mounts a tmpfs of `size_mib` MiB on it (root only).
    pub fn mount(path: &Path, size_mib: u32) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
        let options = format!("size={size_mib}m,mode=0711");
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .with_context(|| format!("mount a {size_mib} MiB tmpfs on {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.path);
    }
}
