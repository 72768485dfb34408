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
        let parent = hierarchy.join(&config.parent);
        let leaf = parent.join(id.as_str());
        let made = create_dir(&parent)
            .and_then(|_| create_dir(&leaf))
            .and_then(|made| {
                if controller == "cpuset" {
                    inherit_cpuset(&hierarchy, &parent)?;
                    inherit_cpuset(&parent, &leaf)?;
                }
                Ok(made)
            });
        match made {
            Ok(_) => cgroup.dirs.push((controller.to_string(), leaf)),
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
