//! A resolved filter → the BPF programs to install. x86_64 and aarch64 use seccompiler; its
//! filters have one match action each, so a profile becomes a stack of them, and the kernel,
//! which runs every installed filter and keeps the strictest answer, puts it back together:
//!
//! 1. the default filter (when the default is not allow): a call that some rule with another
//!    action covers is let through to the others, anything else gets the default;
//! 2. one filter per other action of the rules: that action when one of its rules matches,
//!    else allow.
//!
//! On x86_64 the x32 guard (`bpf::x32_guard`) is added. 32-bit ARM gets the single program
//! `bpf::build` writes.

use seccompiler::BpfProgram;

use super::resolve::Resolved;
use super::SeccompError;

/// The programs for this device's architecture.
pub fn programs(resolved: &Resolved) -> Result<Vec<BpfProgram>, SeccompError> {
    #[cfg(target_arch = "arm")]
    {
        let program = super::bpf::build(resolved, super::bpf::AUDIT_ARCH_ARM)
            .map_err(SeccompError::BuildArm)?;
        Ok(vec![program])
    }
    #[cfg(target_arch = "aarch64")]
    {
        stacked(resolved, seccompiler::TargetArch::aarch64).map_err(SeccompError::Build)
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut programs =
            stacked(resolved, seccompiler::TargetArch::x86_64).map_err(SeccompError::Build)?;
        programs.push(super::bpf::x32_guard());
        Ok(programs)
    }
}

#[cfg(not(target_arch = "arm"))]
pub use stack::stacked;

#[cfg(not(target_arch = "arm"))]
mod stack {
    use std::collections::BTreeMap;

    use coracle_proto::seccomp::{ArgOp, SeccompAction};
    use seccompiler::{
        BackendError, BpfProgram, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    use super::super::bpf::ret_value;
    use super::super::resolve::{Condition, Resolved, Rule};

    /// seccompiler filters for `arch` that together answer as `resolved` says.
    pub fn stacked(resolved: &Resolved, arch: TargetArch) -> Result<Vec<BpfProgram>, BackendError> {
        let mut programs = Vec::new();
        let default = resolved.default;
        if default != SeccompAction::Allow {
            let others = covered(resolved, |action| action != default)?;
            programs.push(program(others, default, SeccompAction::Allow, arch)?);
        }
        let mut actions: Vec<SeccompAction> = resolved
            .syscalls
            .values()
            .flatten()
            .map(|r| r.action)
            .filter(|&a| a != SeccompAction::Allow)
            .collect();
        actions.sort_by_key(|&a| (a.precedence(), ret_value(a)));
        actions.dedup();
        for action in actions {
            let rules = covered(resolved, |a| a == action)?;
            programs.push(program(rules, SeccompAction::Allow, action, arch)?);
        }
        Ok(programs)
    }

    fn program(
        rules: BTreeMap<i64, Vec<SeccompRule>>,
        mismatch: SeccompAction,
        matched: SeccompAction,
        arch: TargetArch,
    ) -> Result<BpfProgram, BackendError> {
        SeccompFilter::new(
            rules,
            to_seccompiler(mismatch),
            to_seccompiler(matched),
            arch,
        )?
        .try_into()
    }

    /// Per syscall, the conditions under which one of its rules with a `wanted` action
    /// matches (an empty list: always).
    fn covered(
        resolved: &Resolved,
        wanted: impl Fn(SeccompAction) -> bool,
    ) -> Result<BTreeMap<i64, Vec<SeccompRule>>, BackendError> {
        let mut map = BTreeMap::new();
        for (&nr, rules) in &resolved.syscalls {
            let rules: Vec<&Rule> = rules.iter().filter(|r| wanted(r.action)).collect();
            if rules.is_empty() {
                continue;
            }
            let chain = if rules.iter().any(|r| r.conditions.is_empty()) {
                Vec::new()
            } else {
                rules
                    .iter()
                    .map(|r| {
                        let conditions: Result<Vec<_>, _> =
                            r.conditions.iter().map(condition).collect();
                        SeccompRule::new(conditions?)
                    })
                    .collect::<Result<_, _>>()?
            };
            map.insert(i64::from(nr), chain);
        }
        Ok(map)
    }

    fn condition(c: &Condition) -> Result<SeccompCondition, BackendError> {
        let len = if c.low32 {
            SeccompCmpArgLen::Dword
        } else {
            SeccompCmpArgLen::Qword
        };
        let (op, value) = match c.op {
            ArgOp::NotEqual => (SeccompCmpOp::Ne, c.value),
            ArgOp::LessThan => (SeccompCmpOp::Lt, c.value),
            ArgOp::LessOrEqual => (SeccompCmpOp::Le, c.value),
            ArgOp::Equal => (SeccompCmpOp::Eq, c.value),
            ArgOp::GreaterOrEqual => (SeccompCmpOp::Ge, c.value),
            ArgOp::GreaterThan => (SeccompCmpOp::Gt, c.value),
            ArgOp::MaskedEqual => (SeccompCmpOp::MaskedEq(c.value), c.value_two),
        };
        SeccompCondition::new(c.index, len, op, value)
    }

    fn to_seccompiler(action: SeccompAction) -> seccompiler::SeccompAction {
        match action {
            SeccompAction::Allow => seccompiler::SeccompAction::Allow,
            SeccompAction::Errno(e) => seccompiler::SeccompAction::Errno(u32::from(e)),
            SeccompAction::KillThread => seccompiler::SeccompAction::KillThread,
            SeccompAction::KillProcess => seccompiler::SeccompAction::KillProcess,
            SeccompAction::Trap => seccompiler::SeccompAction::Trap,
            SeccompAction::Trace(m) => seccompiler::SeccompAction::Trace(u32::from(m)),
            SeccompAction::Log => seccompiler::SeccompAction::Log,
        }
    }
}
