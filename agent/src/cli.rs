//! Command-line subcommands that drive the runtime directly (no daemon needed):
//! `coracle-agent run --bundle DIR ID`, the crun/runc-compatible foreground run.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::runtime::cgroups::CgroupConfig;
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
    let spec = bundle::load(&args.bundle)?;
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
