//! Removing a test's own cgroup parent from every hierarchy the machine mounts (v1
//! controllers, combined or not, and the unified v2 tree), children first.

use std::fs;
use std::path::Path;

/// Removes `parent` and the empty cgroups under it in every hierarchy under `/sys/fs/cgroup`.
/// Only names a test made are ever passed here.
pub fn remove_parent(parent: &str) {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        remove_tree(&hierarchy.path().join(parent));
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(children) = fs::read_dir(dir) {
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            remove_tree(&child.path());
        }
    }
    let _ = fs::remove_dir(dir);
}
