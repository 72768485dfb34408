//! Command-line subcommands that drive the runtime directly (no daemon needed):
//! `coracle-agent run --bundle DIR ID`, the crun/runc-compatible foreground run.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::runtime::cgroups::CgroupConfig;
use crate::runtime::refused::RefusedField;
use crate::runtime::{bundle, ContainerId, LinuxRuntime, Runtime, RuntimeConfig};

/// `run`: create, start, wait for and delete a container from an OCI bundle.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Bundle directory holding config.json and the rootfs.
    #[arg(long, short)]
    pub bundle: PathBuf,
    /// Container id.
    pub id: String,
    /// Where container state lives.
    #[arg(long, default_value = "/run/coracle")]
    pub root: PathBuf,
    /// cgroup mount point.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Parent cgroup of all containers.
    #[arg(long, default_value = "coracle")]
    pub cgroup_parent: String,
    /// Run even when a controller the bundle's limits need is missing (reported as a
    /// condition), instead of refusing.
    #[arg(long)]
    pub allow_missing_controllers: bool,
}

/// Runs the bundle in the foreground; returns the container's exit code.
pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let id: ContainerId = args.id.parse()?;
    let oci = bundle::read_config(&args.bundle)?;
    refuse_oci_only_fields(&oci)?;
    let spec = bundle::from_config(&args.bundle, &oci)?;
    let runtime = LinuxRuntime::foreground(RuntimeConfig {
        state_dir: args.root.clone(),
        cgroup: CgroupConfig {
            root: args.cgroup_root.clone(),
            parent: args.cgroup_parent.clone(),
            allow_missing_controllers: args.allow_missing_controllers,
        },
        shim_binary: std::env::current_exe().context("find this binary to use as the shim")?,
    });
    let state = runtime.run_foreground(&id, &spec)?;
    runtime.delete(&id)?;
    if state.oom_killed {
        tracing::warn!(container = %id, "container was killed by the OOM killer");
    }
    Ok(state.exit_code.unwrap_or(255))
}

/// Fields only the OCI command line honours: this foreground run runs no hooks and puts the
/// container's cgroup at `<cgroup-parent>/<id>`, so a bundle that sets them is refused,
/// naming the field, rather than run without.
fn refuse_oci_only_fields(oci: &oci_spec::runtime::Spec) -> Result<(), RefusedField> {
    const USE_OCI_RUN: &str = "honoured by `coracle-agent oci run`, not by `run`";
    let hooks = oci.hooks().as_ref();
    let any_hook = hooks.is_some_and(|h| {
        #[allow(deprecated)]
        let prestart = h.prestart();
        [
            prestart,
            h.create_runtime(),
            h.create_container(),
            h.start_container(),
            h.poststart(),
            h.poststop(),
        ]
        .iter()
        .any(|list| list.as_ref().is_some_and(|l| !l.is_empty()))
    });
    if any_hook {
        return Err(RefusedField {
            field: "hooks",
            reason: USE_OCI_RUN,
        });
    }
    if oci
        .linux()
        .as_ref()
        .is_some_and(|l| l.cgroups_path().is_some())
    {
        return Err(RefusedField {
            field: "linux.cgroupsPath",
            reason: USE_OCI_RUN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> oci_spec::runtime::Spec {
        let mut config = serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}});
        if let (Some(base), Some(more)) = (config.as_object_mut(), extra.as_object()) {
            base.extend(more.clone());
        }
        serde_json::from_value(config).unwrap()
    }

    #[test]
    fn foreground_run_refuses_hooks_and_cgroups_path_by_name() {
        refuse_oci_only_fields(&spec(serde_json::json!({}))).unwrap();
        refuse_oci_only_fields(&spec(serde_json::json!({"hooks": {"poststop": []}}))).unwrap();
        let hooked = spec(serde_json::json!({"hooks": {"poststop": [{"path": "/bin/true"}]}}));
        assert_eq!(refuse_oci_only_fields(&hooked).unwrap_err().field, "hooks");
        let placed = spec(serde_json::json!({"linux": {"cgroupsPath": "/x/y"}}));
        let err = refuse_oci_only_fields(&placed).unwrap_err();
        assert!(err.to_string().contains("linux.cgroupsPath"), "{err}");
    }
}
