//! cgroup v1: one hierarchy per controller, each mounted at `<root>/<controller>`.

use std::fs;
use std::path::{Path, PathBuf};

use super::limits::LimitWrite;
use super::{
    create_dir, write_file, CgroupConfig, CgroupError, CgroupVersion, Condition, ContainerCgroup,
};
use crate::runtime::id::ContainerId;

/// The hierarchies a container joins when they are mounted.
pub(super) const CONTROLLERS: &[&str] = &[
    "memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer",
];

pub(super) fn create(
    config: &CgroupConfig,
    id: &ContainerId,
    writes: &[LimitWrite],
) -> Result<(ContainerCgroup, Vec<Condition>), CgroupError> {
    let mut cgroup = ContainerCgroup {
        version: CgroupVersion::V1,
        dirs: Vec::new(),
    };
    // A missing hierarchy is reported by `apply` when a limit needs it.
    let _ = writes;
    for &controller in CONTROLLERS {
        let hierarchy = config.root.join(controller);
        if !hierarchy.is_dir() {
            continue;
        }
        // The parent may be several levels deep (an OCI cgroupsPath) or empty (the root).
        let parent = Path::new(&config.parent).join(id.as_str());
        let made = parent
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .try_fold(hierarchy.clone(), |above, part| {
                let dir = above.join(part);
                create_dir(&dir)?;
                if controller == "cpuset" {
                    inherit_cpuset(&above, &dir)?;
                }
                Ok(dir)
            });
        match made {
            Ok(leaf) => cgroup.dirs.push((controller.to_string(), leaf)),
            Err(err) => {
                let _ = cgroup.remove();
                return Err(err);
            }
        }
    }
    Ok((cgroup, Vec::new()))
}

/// A fresh v1 cpuset has empty cpus/mems and refuses tasks: copy them from the parent.
fn inherit_cpuset(from: &Path, to: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let dest: PathBuf = to.join(file);
        let current = fs::read_to_string(&dest).unwrap_or_default();
        if current.trim().is_empty() {
            let src = from.join(file);
            let value = fs::read_to_string(&src)
                .map_err(|source| CgroupError::ReadFile { path: src, source })?;
            write_file(&dest, value.trim())?;
        }
    }
    Ok(())
}
