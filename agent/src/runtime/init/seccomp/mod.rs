//! The container's seccomp filter: the default allow-list (`allowlist.rs`), the operator's
//! profile from the spec, or none. The profile is resolved for this device — architecture,
//! the container's capabilities, the running kernel — (`resolve.rs`, pure) and compiled
//! (`compile.rs`: seccompiler on x86_64/aarch64, `bpf.rs` on 32-bit ARM). Installed last
//! in the init and in exec, after the capability and user changes it would forbid.

pub mod allowlist;
pub mod bpf;
pub mod compile;
pub mod resolve;

#[cfg(test)]
mod interpreter;
#[cfg(test)]
mod tests;

use caps::CapsHashSet;
use coracle_proto::seccomp::Arch;
use seccompiler::BpfProgram;

use crate::runtime::spec::ContainerSpec;
use resolve::Target;

/// Failures building or installing the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("build seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    #[error("build seccomp filter for 32-bit ARM")]
    BuildArm(#[source] bpf::BpfBuildError),
    #[error("read the running kernel's release (uname)")]
    Uname(#[source] nix::Error),
    #[error("read the running kernel's version from release {release:?}")]
    KernelRelease { release: String },
    #[error("install seccomp filter")]
    Install(#[source] seccompiler::Error),
    #[error("install seccomp filter without no_new_privs (needs CAP_SYS_ADMIN)")]
    InstallPrivileged(#[source] nix::Error),
}

/// The architecture this agent was built for, hence the one its containers run.
pub const NATIVE: Arch = if cfg!(target_arch = "x86_64") {
    Arch::X86_64
} else if cfg!(target_arch = "aarch64") {
    Arch::Aarch64
} else {
    Arch::Arm
};

/// The filters for the container, whose capabilities are `caps`; none when the spec turns
/// seccomp off (`unconfined`).
pub fn filters(spec: &ContainerSpec, caps: &CapsHashSet) -> Result<Vec<BpfProgram>, SeccompError> {
    if !spec.seccomp {
        return Ok(Vec::new());
    }
    let default;
    let profile = match &spec.seccomp_profile {
        Some(profile) => profile,
        None => {
            default = allowlist::default_profile();
            &default
        }
    };
    let target = Target {
        arch: NATIVE,
        caps: caps.iter().map(|c| c.to_string()).collect(),
        kernel: running_kernel()?,
    };
    compile::programs(&resolve::resolve(profile, &target))
}

fn running_kernel() -> Result<coracle_proto::seccomp::KernelVersion, SeccompError> {
    let uname = nix::sys::utsname::uname().map_err(SeccompError::Uname)?;
    let release = uname.release().to_string_lossy();
    resolve::kernel_version(&release).ok_or_else(|| SeccompError::KernelRelease {
        release: release.into_owned(),
    })
}

/// Installs the filters on the calling thread (seccompiler also sets no_new_privs, which a
/// process without CAP_SYS_ADMIN needs to install one).
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(SeccompError::Install)?;
    }
    Ok(())
}

/// Installs the filters without setting no_new_privs, for a spec that leaves it off: the
/// kernel then requires CAP_SYS_ADMIN, so the init calls this before dropping privileges.
pub fn install_keeping_privileges(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for filter in filters {
        crate::runtime::process::install_seccomp_filter(filter)
            .map_err(SeccompError::InstallPrivileged)?;
    }
    Ok(())
}
