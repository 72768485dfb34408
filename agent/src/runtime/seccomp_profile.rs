//! An OCI bundle's `linux.seccomp` as the runtime's [`SeccompProfile`] (the Docker-format
//! profile the daemon's services use), so the bundle's own filter is the one installed.
//! The filter covers the device's native architecture; calls made through another
//! (`architectures`) are refused by it, which is stricter than the bundle asked. Flags, a
//! notify listener and `SCMP_ACT_NOTIFY` are not implemented and refused by name.

use coracle_proto::seccomp::{
    ArgCondition, ArgOp, ProfileError, RuleFilter, SeccompAction, SeccompProfile, SyscallRule,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use super::refused::RefusedField;

/// Why a bundle's seccomp section cannot become a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompProfileError {
    #[error(transparent)]
    Refused(#[from] RefusedField),
    #[error("linux.seccomp is not a valid profile")]
    Invalid(#[source] ProfileError),
}

/// EPERM: what OCI's errno actions return when `errnoRet` is left out.
const DEFAULT_ERRNO: u32 = 1;

pub fn from_oci(seccomp: &LinuxSeccomp) -> Result<SeccompProfile, SeccompProfileError> {
    if seccomp.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(refused("linux.seccomp.flags").into());
    }
    if seccomp.listener_path().is_some() {
        return Err(refused("linux.seccomp.listenerPath").into());
    }
    let default_action = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut rules = Vec::new();
    for syscall in seccomp.syscalls().iter().flatten() {
        let args = syscall
            .args()
            .iter()
            .flatten()
            .map(|arg| {
                Ok(ArgCondition {
                    index: u8::try_from(arg.index()).unwrap_or(u8::MAX),
                    op: operator(arg.op()),
                    value: arg.value(),
                    value_two: arg.value_two().unwrap_or(0),
                })
            })
            .collect::<Result<_, SeccompProfileError>>()?;
        rules.push(SyscallRule {
            names: syscall.names().clone(),
            action: action(syscall.action(), syscall.errno_ret())?,
            args,
            includes: RuleFilter::default(),
            excludes: RuleFilter::default(),
        });
    }
    let profile = SeccompProfile {
        default_action,
        rules,
    };
    profile.validate().map_err(SeccompProfileError::Invalid)?;
    Ok(profile)
}

fn refused(field: &'static str) -> RefusedField {
    RefusedField {
        field,
        reason: "not implemented by this runtime",
    }
}

fn action(
    action: LinuxSeccompAction,
    errno: Option<u32>,
) -> Result<SeccompAction, SeccompProfileError> {
    let errno = u16::try_from(errno.unwrap_or(DEFAULT_ERRNO)).unwrap_or(u16::MAX);
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(refused("linux.seccomp SCMP_ACT_NOTIFY").into())
        }
    })
}

fn operator(op: LinuxSeccompOperator) -> ArgOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ArgOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ArgOp::LessThan,
        LinuxSeccompOperator::ScmpCmpLe => ArgOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ArgOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ArgOp::GreaterOrEqual,
        LinuxSeccompOperator::ScmpCmpGt => ArgOp::GreaterThan,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ArgOp::MaskedEqual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seccomp(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn oci_seccomp_becomes_the_profile_with_errno_defaults_and_args() {
        let profile = from_oci(&seccomp(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}"#,
        ))
        .unwrap();
        assert_eq!(profile.default_action, SeccompAction::Allow);
        assert_eq!(profile.rules[0].action, SeccompAction::Errno(1));
        assert_eq!(profile.rules[1].action, SeccompAction::Errno(38));
        assert_eq!(profile.rules[1].args[0].op, ArgOp::Equal);
        assert_eq!(profile.rules[1].args[0].value, 8);
    }

    #[test]
    fn oci_seccomp_notify_and_flags_are_refused_by_name() {
        let err = from_oci(&seccomp(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("SCMP_ACT_NOTIFY"), "{err}");
        let err = from_oci(&seccomp(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("linux.seccomp.flags"), "{err}");
    }
}
