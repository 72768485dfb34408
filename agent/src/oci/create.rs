//! `create`: sets a bundle's container up with the runtime's own code (bundle → spec, the
//! shim's setup steps run in this process) and leaves its init waiting on the exec fifo.
//! Nothing stays behind but the init and the files under `<root>/<id>/`: the caller — a
//! subreaper like conmon, or init — becomes the init's parent when this process exits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::hooks::{self, Hooks};
use super::state::{OciState, OciStatus, Record, OCI_VERSION};
use super::{console, fifo, OciError};
use crate::runtime::cgroups::CgroupConfig;
use crate::runtime::init::console::Console;
use crate::runtime::shim::{self, BeforePivot, OciInit, ShimInput};
use crate::runtime::{bundle, init, ContainerId};

/// What `create` needs besides the bundle.
#[derive(Debug, Clone)]
pub struct CreateRequest<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    /// The cgroup tree and the parent used when the bundle gives no `cgroupsPath`.
    pub cgroup: CgroupConfig,
}

/// Creates the container; returns once its init waits for `start`.
pub fn create(req: &CreateRequest<'_>) -> Result<Record, OciError> {
    // 1. Read the bundle: the runtime's spec plus what only the OCI layer uses.
    let id: ContainerId = req.id.parse()?;
    let bundle = std::path::absolute(req.bundle).map_err(|source| OciError::Bundle {
        path: req.bundle.to_owned(),
        source,
    })?;
    let oci = bundle::read_config(&bundle)?;
    let mut spec = bundle::from_config(&bundle, &oci)?;
    let console = console::connect(&oci, req.console_socket)?;
    let hooks = Hooks::from_spec(oci.hooks().as_ref());
    spec.start_container_hooks = hooks.start_container.clone();
    let cgroups_path = oci.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let (cgroup, cgroup_name) = cgroup_placement(&req.cgroup, &id, cgroups_path.as_deref())?;
    init::check(&spec).map_err(|source| OciError::InvalidSpec {
        id: id.to_string(),
        source,
    })?;
    // 2. The container's dir; its existence is the "id taken" lock.
    crate::private_dir::create_traverse_only_dir(req.root).map_err(|source| {
        OciError::PrepareDir {
            path: req.root.to_owned(),
            source,
        }
    })?;
    let dir = req.root.join(id.as_str());
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(OciError::AlreadyExists { id: id.to_string() })
        }
        Err(source) => return Err(OciError::PrepareDir { path: dir, source }),
    }
    let created = set_up(
        &dir,
        &id,
        bundle,
        &oci,
        spec,
        &hooks,
        (cgroup, cgroup_name),
        console.as_ref(),
        req,
    );
    if created.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    created
}

/// Steps 3 on, in the container's dir, which the caller removes on error.
#[allow(clippy::too_many_arguments)]
fn set_up(
    dir: &Path,
    id: &ContainerId,
    bundle: PathBuf,
    oci: &Spec,
    spec: crate::runtime::ContainerSpec,
    hooks: &Hooks,
    (cgroup, cgroup_name): (CgroupConfig, ContainerId),
    console: Option<&Console>,
    req: &CreateRequest<'_>,
) -> Result<Record, OciError> {
    // 3. The rootfs mount point and the exec fifo the init will wait on.
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(|source| OciError::PrepareDir {
        path: rootfs,
        source,
    })?;
    let exec_fifo = fifo::make(dir)?;
    // 4. The shim's setup steps, here: devices, cgroup, clone, init up to the fifo. The
    //    input's id names the cgroup leaf (the bundle's cgroupsPath may rename it).
    let input = ShimInput {
        id: cgroup_name,
        spec,
        cgroup,
        start_at_once: false,
    };
    // 5. The create-time hooks run while the init waits just before pivot_root, with the
    //    state the caller will see (no record yet: it is written once they pass).
    let annotations: BTreeMap<String, String> = oci
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let create_hooks = |pid: i32| {
        let state = OciState {
            oci_version: OCI_VERSION,
            id: id.as_str(),
            status: OciStatus::Created,
            pid: Some(pid),
            bundle: &bundle,
            annotations: &annotations,
        };
        let state = serde_json::to_vec(&state).expect("state has only plain serialisable fields");
        hooks::run_all(hooks.at_create(), &state)
            .and_then(|()| hooks::run_in_container(pid, &hooks.create_container, &state))
    };
    let any_create_hook = hooks.at_create().next().is_some() || !hooks.create_container.is_empty();
    let oci_init = OciInit {
        exec_fifo: &exec_fifo,
        console,
        before_pivot: any_create_hook.then_some(&create_hooks as &BeforePivot<'_>),
    };
    let init = shim::create_detached(dir, &input, oci_init).map_err(|source| OciError::Setup {
        id: id.to_string(),
        source,
    })?;
    drop(exec_fifo);
    for condition in &init.conditions {
        tracing::warn!(container = %id, ?condition, "cgroup limit not enforceable");
    }
    // 6. The record makes the container visible to `state`.
    let record = Record {
        id: id.to_string(),
        pid: init.pid,
        pid_start_time: init.pid_start_time,
        bundle,
        annotations,
        cgroup_version: init.cgroup.version,
        cgroup_paths: init.cgroup.paths(),
        poststart: hooks.poststart.clone(),
        poststop: hooks.poststop.clone(),
    };
    let announced = record
        .store(dir)
        .map_err(OciError::from)
        .and_then(|()| write_pid_file(req.pid_file, init.pid));
    if let Err(err) = announced {
        shim::abandon_detached(&init);
        return Err(err);
    }
    Ok(record)
}

/// Where the container's cgroup goes: `<parent>/<id>` by default; an absolute
/// `cgroupsPath` is taken from the cgroup root, a relative one from the default parent.
fn cgroup_placement(
    default: &CgroupConfig,
    id: &ContainerId,
    cgroups_path: Option<&Path>,
) -> Result<(CgroupConfig, ContainerId), OciError> {
    let Some(path) = cgroups_path else {
        return Ok((default.clone(), id.clone()));
    };
    let refuse = || OciError::Unsupported {
        field: "linux.cgroupsPath",
        reason: "needs plain path components ending in a valid container id",
    };
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::RootDir => {}
            std::path::Component::Normal(part) => parts.push(part.to_str().ok_or_else(refuse)?),
            _ => return Err(refuse()),
        }
    }
    let (name, above) = parts.split_last().ok_or_else(refuse)?;
    let name: ContainerId = name.parse().map_err(|_| refuse())?;
    let mut parent = PathBuf::new();
    if !path.is_absolute() {
        parent.push(&default.parent);
    }
    parent.extend(above);
    let config = CgroupConfig {
        parent: parent.to_str().ok_or_else(refuse)?.to_owned(),
        ..default.clone()
    };
    Ok((config, name))
}

/// runc writes the bare number, no newline; callers parse it as such.
fn write_pid_file(path: Option<&Path>, pid: i32) -> Result<(), OciError> {
    let Some(path) = path else { return Ok(()) };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| OciError::PidFile {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_placement_takes_absolute_paths_from_the_root_and_relative_from_the_parent() {
        let default = CgroupConfig::default();
        let id: ContainerId = "c1".parse().unwrap();
        let place = |path: Option<&str>| {
            let (cfg, name) = cgroup_placement(&default, &id, path.map(Path::new)).unwrap();
            (cfg.parent, name.to_string())
        };
        assert_eq!(place(None), ("coracle".into(), "c1".into()));
        assert_eq!(place(Some("/peers/x")), ("peers".into(), "x".into()));
        assert_eq!(place(Some("/x")), ("".into(), "x".into()));
        assert_eq!(place(Some("a/b/x")), ("coracle/a/b".into(), "x".into()));
        let err = cgroup_placement(&default, &id, Some(Path::new("/a/../x"))).unwrap_err();
        assert!(err.to_string().contains("linux.cgroupsPath"), "{err}");
    }
}
