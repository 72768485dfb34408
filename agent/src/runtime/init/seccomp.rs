//! The default seccomp filter: allow everything except what Docker's default profile
//! blocks (kernel modules, kexec, mount, namespaces, keyrings, ptrace, clock setting, ...),
//! which fails with EPERM. `clone3` gets ENOSYS, as in Docker, so libc falls back to
//! `clone`, whose namespace flags the filter can inspect.

#[cfg(not(target_arch = "arm"))]
use std::collections::BTreeMap;

use seccompiler::BpfProgram;
#[cfg(not(target_arch = "arm"))]
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

/// Failures building or installing the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("build seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    #[error("install seccomp filter")]
    Install(#[source] seccompiler::Error),
    #[error("build seccomp filter for 32-bit ARM")]
    BuildArm(#[source] super::seccomp_bpf::BpfBuildError),
}

/// libc has no `SYS_kexec_file_load` for aarch64 musl; the number is the same for every
/// aarch64 libc.
#[cfg(all(target_arch = "aarch64", target_env = "musl"))]
const SYS_KEXEC_FILE_LOAD: libc::c_long = 294;
#[cfg(not(all(target_arch = "aarch64", target_env = "musl")))]
const SYS_KEXEC_FILE_LOAD: libc::c_long = libc::SYS_kexec_file_load;

/// Syscalls refused outright.
const BLOCKED: &[libc::c_long] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_kcmp,
    SYS_KEXEC_FILE_LOAD,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_nfsservctl,
];

/// clone flags that would create namespaces.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

#[cfg(not(target_arch = "arm"))]
fn arch() -> TargetArch {
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
    #[cfg(target_arch = "x86_64")]
    return TargetArch::x86_64;
}

/// 32-bit ARM: the same policy as one hand-written BPF program (`seccompiler` has no ARM
/// backend).
#[cfg(target_arch = "arm")]
pub fn default_filters() -> Result<Vec<BpfProgram>, SeccompError> {
    use super::seccomp_bpf::{build, FilterSpec};
    const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
    let blocked: Vec<i64> = BLOCKED.iter().map(|&nr| i64::from(nr)).collect();
    let spec = FilterSpec {
        audit_arch: AUDIT_ARCH_ARM,
        blocked: &blocked,
        clone: i64::from(libc::SYS_clone),
        clone3: i64::from(libc::SYS_clone3),
        namespace_flags: NAMESPACE_FLAGS.iter().fold(0, |all, &f| all | f as u32),
    };
    let program =
        build(&spec, libc::EPERM as u32, libc::ENOSYS as u32).map_err(SeccompError::BuildArm)?;
    Ok(vec![program])
}

/// Compiles the default filter: the EPERM filter and the clone3 → ENOSYS filter.
#[cfg(not(target_arch = "arm"))]
pub fn default_filters() -> Result<Vec<BpfProgram>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        BLOCKED.iter().map(|&nr| (nr, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let flag = flag as u64;
            let cond = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(SeccompError::Build)?;
            SeccompRule::new(vec![cond]).map_err(SeccompError::Build)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let eperm = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch(),
    )
    .map_err(SeccompError::Build)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch(),
    )
    .map_err(SeccompError::Build)?;
    let eperm: BpfProgram = eperm.try_into().map_err(SeccompError::Build)?;
    let clone3: BpfProgram = clone3.try_into().map_err(SeccompError::Build)?;
    Ok(vec![eperm, clone3])
}

/// Installs the filters on the calling thread (no_new_privs must be set, or CAP_SYS_ADMIN held).
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(SeccompError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filters_compile_for_this_arch() {
        let filters = default_filters().unwrap();
        assert!(filters[0].len() > BLOCKED.len());
        assert!(filters.iter().all(|f| !f.is_empty()));
    }
}
