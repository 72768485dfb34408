//! Removing a test's own cgroup parent from every hierarchy the machine mounts (v1
//! controllers, combined or not, the hybrid layout's unified v2 tree, and a pure v2
//! machine's one tree at `/sys/fs/cgroup` itself), children first.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Removes `parent` and the empty cgroups under it in every hierarchy under `/sys/fs/cgroup`
/// (and in `/sys/fs/cgroup` itself, on pure v2).
/// Only names a test made are ever passed here. A cgroup whose last process is still exiting
/// (or that a shim is removing itself) cannot be removed yet, so this retries for up to 5 s;
/// returns whether nothing of `parent` is left.
pub fn remove_parent(parent: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if remove_everywhere(parent) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One pass over every hierarchy; whether `parent` is gone from all of them.
fn remove_everywhere(parent: &str) -> bool {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return true;
    };
    let root = Path::new("/sys/fs/cgroup").to_path_buf();
    let mut gone = true;
    for hierarchy in hierarchies.flatten().map(|h| h.path()).chain([root]) {
        let dir = hierarchy.join(parent);
        remove_tree(&dir);
        gone &= !dir.exists();
    }
    gone
}

fn remove_tree(dir: &Path) {
    if let Ok(children) = fs::read_dir(dir) {
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            remove_tree(&child.path());
        }
    }
    let _ = fs::remove_dir(dir);
}
