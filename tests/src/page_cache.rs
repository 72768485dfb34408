//! Page-cache conditions for memory benchmarks.
//!
//! The peak RSS of a short-lived process is mostly its executable's file pages, and how many
//! of those get mapped depends on the page cache more than on the program: a page fault maps a
//! whole cached folio (up to 2 MB on a THP kernel) and its neighbours, and the folio sizes come
//! from the read-ahead window of the disk the binary lives on. This VM reads ahead 8 MB, so a
//! large binary read once sits in huge folios and every touch maps megabytes; a Raspberry Pi's
//! SD card reads ahead the kernel default, 128 KB. [`DeviceConditions`] puts every measured
//! binary into the same, device-like state: the default read-ahead on their disks, and the
//! binaries evicted from the page cache so the runs read them in under that window.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The kernel's default read-ahead window (`VM_READAHEAD_PAGES`), what SD cards and most
/// block devices use.
pub const DEFAULT_READ_AHEAD_KB: u32 = 128;

/// Device-like page-cache conditions for a set of binaries; restores the read-ahead of every
/// disk it changed on drop.
#[derive(Debug)]
pub struct DeviceConditions {
    restore: Vec<(PathBuf, String)>,
}

impl DeviceConditions {
    /// Sets the read-ahead of the disks holding `binaries` to `read_ahead_kb` and evicts the
    /// binaries' pages from the page cache.
    pub fn apply(binaries: &[PathBuf], read_ahead_kb: u32) -> anyhow::Result<Self> {
        let mut conditions = DeviceConditions {
            restore: Vec::new(),
        };
        for binary in binaries {
            let knob = read_ahead_knob(binary)?;
            if !conditions.restore.iter().any(|(k, _)| *k == knob) {
                let old = std::fs::read_to_string(&knob)
                    .with_context(|| format!("read {}", knob.display()))?;
                std::fs::write(&knob, read_ahead_kb.to_string())
                    .with_context(|| format!("set {} (run as root)", knob.display()))?;
                conditions.restore.push((knob, old.trim().to_owned()));
            }
        }
        for binary in binaries {
            evict(binary)?;
        }
        Ok(conditions)
    }

    /// The disks' read-ahead before [`DeviceConditions::apply`], for the report.
    pub fn previous_read_ahead(&self) -> Vec<(PathBuf, String)> {
        self.restore.clone()
    }
}

impl Drop for DeviceConditions {
    fn drop(&mut self) {
        for (knob, old) in &self.restore {
            if let Err(e) = std::fs::write(knob, old) {
                eprintln!("could not restore {} to {old}: {e}", knob.display());
            }
        }
    }
}

/// Drops `path`'s clean pages from the page cache (written pages are flushed first, since
/// dirty pages cannot be dropped).
pub fn evict(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("flush {}", path.display()))?;
    // SAFETY: plain syscall on a file descriptor that `file` keeps open.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!(
            "evict {} from the page cache: {}",
            path.display(),
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok(())
}

/// How many of `path`'s pages are in the page cache (mincore).
pub fn resident_pages(path: &Path) -> anyhow::Result<usize> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: a fresh read-only shared mapping of an open file; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        bail!(
            "mmap {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    let mut vec = vec![0u8; len.div_ceil(4096)];
    // SAFETY: `addr..addr+len` is the mapping made above; `vec` has a byte per page.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: unmaps exactly the mapping made above, which nothing else refers to.
    unsafe { libc::munmap(addr, len) };
    if rc != 0 {
        bail!("mincore {}: {err}", path.display());
    }
    Ok(vec.iter().filter(|&&b| b & 1 == 1).count())
}

/// `/sys/dev/block/MAJ:MIN/queue/read_ahead_kb` of the disk holding `path` (a partition's
/// queue is its parent disk's).
pub fn read_ahead_knob(path: &Path) -> anyhow::Result<PathBuf> {
    let dev = std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .dev();
    let node = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(dev),
        libc::minor(dev)
    ));
    let node = node.canonicalize().with_context(|| {
        format!(
            "{} is not on a block device ({} missing)",
            path.display(),
            node.display()
        )
    })?;
    for dir in node.ancestors() {
        let knob = dir.join("queue/read_ahead_kb");
        if knob.is_file() {
            return Ok(knob);
        }
    }
    bail!("no queue/read_ahead_kb above {}", node.display())
}

/// Finds `name` on PATH, as the runtimes are started.
pub fn which(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found on PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knob_of_this_crates_disk_is_found() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        match read_ahead_knob(here) {
            Ok(knob) => {
                let kb: u32 = std::fs::read_to_string(&knob)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                assert!(knob.ends_with("queue/read_ahead_kb"));
                assert!(kb <= 1 << 20, "{kb} KB from {}", knob.display());
            }
            // overlayfs or tmpfs (containers): no block device behind the checkout.
            Err(e) => assert!(e.to_string().contains("not on a block device"), "{e:#}"),
        }
    }

    #[test]
    fn eviction_drops_a_files_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        assert!(resident_pages(&path).unwrap() > 0, "just written");
        evict(&path).unwrap();
        if read_ahead_knob(&path).is_ok() {
            // tmpfs has no disk to drop its pages to; a real disk does.
            assert_eq!(resident_pages(&path).unwrap(), 0);
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            vec![7u8; 1 << 20],
            "content is kept"
        );
    }
}
