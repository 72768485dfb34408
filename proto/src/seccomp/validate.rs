//! [`SeccompProfile::validate`]: what a profile must satisfy before anyone compiles it.
//! Errors name the field as a path into the profile (`syscalls[3].names[1]`) and the value.

use alloc::format;
use alloc::string::String;

use super::{syscalls, ArgOp, SeccompAction, SeccompProfile, SyscallRule};

/// Bounds that keep a profile (and the filter built from it) small.
pub const MAX_RULES: usize = 512;
pub const MAX_NAMES: usize = 4096;
pub const MAX_ARGS: usize = 6;
pub const MAX_ERRNO: u16 = 4095;

/// Every Linux capability, as profiles name them.
#[rustfmt::skip]
pub const CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_CONTROL", "CAP_AUDIT_READ", "CAP_AUDIT_WRITE", "CAP_BLOCK_SUSPEND", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER", "CAP_FSETID", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_KILL", "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_MKNOD", "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_RAW", "CAP_PERFMON", "CAP_SETFCAP",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYSLOG", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT", "CAP_SYS_MODULE", "CAP_SYS_NICE", "CAP_SYS_PACCT", "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_WAKE_ALARM",
];

/// Architecture names `includes.arches`/`excludes.arches` may use (Go's names, as in
/// Docker's profiles); only `amd64`, `arm64` and `arm` ever match a Coracle device.
#[rustfmt::skip]
pub const KNOWN_ARCHES: &[&str] = &[
    "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mips64n32",
    "mips64len32", "mipsle", "ppc", "ppc64", "ppc64le", "riscv64", "s390", "s390x", "x32", "x86",
];

/// Arguments the kernel reads as 32-bit values (an `int`, or only the low half as `clone`'s
/// flags). The agent compares them on their low 32 bits, so high bits the kernel drops
/// cannot slip a call past a rule; a value that does not fit is refused here.
pub fn is_32bit_arg(syscall: &str, index: u8) -> bool {
    matches!(
        (syscall, index),
        ("socket" | "socketpair", 0..=2) | ("personality", 0) | ("clone", 0)
    )
}

/// A profile refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ProfileError {
    /// Path into the profile, e.g. `syscalls[3].args[0].index`.
    pub field: String,
    pub problem: ProfileProblem,
}

/// What is wrong with the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileProblem {
    #[error("unknown syscall {0:?}: no Linux architecture has it")]
    UnknownSyscall(String),
    #[error("unknown capability {0:?} (names look like CAP_SYS_ADMIN)")]
    UnknownCapability(String),
    #[error("unknown architecture {0:?} (Go names such as amd64, arm64, arm)")]
    UnknownArch(String),
    #[error("argument index {0} is not between 0 and 5")]
    ArgIndex(u8),
    #[error("{value:#x} does not fit {syscall}'s 32-bit argument {index}")]
    ArgTooWide {
        syscall: String,
        index: u8,
        value: u64,
    },
    #[error("errno {0} is not between 0 and 4095")]
    Errno(u16),
    #[error("the rule names no syscall")]
    NoNames,
    #[error("{count} entries, more than the {max} allowed")]
    TooMany { count: usize, max: usize },
}

impl SeccompProfile {
    /// Checks actions, names, argument checks, capabilities and architectures, and bounds.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let error = |field: String, problem| Err(ProfileError { field, problem });
        check_action(self.default_action, "defaultAction")?;
        if self.rules.len() > MAX_RULES {
            return error(
                "syscalls".into(),
                ProfileProblem::TooMany {
                    count: self.rules.len(),
                    max: MAX_RULES,
                },
            );
        }
        let names: usize = self.rules.iter().map(|r| r.names.len()).sum();
        if names > MAX_NAMES {
            return error(
                "syscalls[].names".into(),
                ProfileProblem::TooMany {
                    count: names,
                    max: MAX_NAMES,
                },
            );
        }
        for (i, rule) in self.rules.iter().enumerate() {
            check_rule(rule, &format!("syscalls[{i}]"))?;
        }
        Ok(())
    }
}

fn check_action(action: SeccompAction, field: &str) -> Result<(), ProfileError> {
    match action {
        SeccompAction::Errno(errno) if errno > MAX_ERRNO => Err(ProfileError {
            field: field.into(),
            problem: ProfileProblem::Errno(errno),
        }),
        _ => Ok(()),
    }
}

fn check_rule(rule: &SyscallRule, at: &str) -> Result<(), ProfileError> {
    let error = |field: String, problem| Err(ProfileError { field, problem });
    check_action(rule.action, &format!("{at}.action"))?;
    if rule.names.is_empty() {
        return error(format!("{at}.names"), ProfileProblem::NoNames);
    }
    for (j, name) in rule.names.iter().enumerate() {
        if !syscalls::is_known(name) {
            return error(
                format!("{at}.names[{j}]"),
                ProfileProblem::UnknownSyscall(name.clone()),
            );
        }
    }
    if rule.args.len() > MAX_ARGS {
        return error(
            format!("{at}.args"),
            ProfileProblem::TooMany {
                count: rule.args.len(),
                max: MAX_ARGS,
            },
        );
    }
    for (k, arg) in rule.args.iter().enumerate() {
        if arg.index > 5 {
            return error(
                format!("{at}.args[{k}].index"),
                ProfileProblem::ArgIndex(arg.index),
            );
        }
        let compared = match arg.op {
            ArgOp::MaskedEqual => arg.value_two,
            _ => arg.value,
        };
        let narrow = rule.names.iter().find(|n| is_32bit_arg(n, arg.index));
        if let (Some(syscall), true) = (narrow, compared > u64::from(u32::MAX)) {
            return error(
                format!("{at}.args[{k}].value"),
                ProfileProblem::ArgTooWide {
                    syscall: syscall.clone(),
                    index: arg.index,
                    value: compared,
                },
            );
        }
    }
    for (side, filter) in [("includes", &rule.includes), ("excludes", &rule.excludes)] {
        for (j, cap) in filter.caps.iter().enumerate() {
            if !CAPABILITIES.contains(&cap.as_str()) {
                return error(
                    format!("{at}.{side}.caps[{j}]"),
                    ProfileProblem::UnknownCapability(cap.clone()),
                );
            }
        }
        for (j, arch) in filter.arches.iter().enumerate() {
            if !KNOWN_ARCHES.contains(&arch.as_str()) {
                return error(
                    format!("{at}.{side}.arches[{j}]"),
                    ProfileProblem::UnknownArch(arch.clone()),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{ArgCondition, RuleFilter};
    use alloc::vec;
    use alloc::vec::Vec;

    fn rule(names: &[&str]) -> SyscallRule {
        SyscallRule {
            names: names.iter().map(|n| String::from(*n)).collect(),
            action: SeccompAction::Allow,
            args: Vec::new(),
            includes: RuleFilter::default(),
            excludes: RuleFilter::default(),
        }
    }

    fn profile(rules: Vec<SyscallRule>) -> SeccompProfile {
        SeccompProfile {
            default_action: SeccompAction::Errno(1),
            rules,
        }
    }

    fn refusal(p: &SeccompProfile) -> String {
        p.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_profile_with_names_of_other_architectures_is_valid() {
        let p = profile(vec![rule(&["read", "socketcall", "arch_prctl", "_llseek"])]);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn refusals_name_the_field_and_the_value() {
        let cases: Vec<(SeccompProfile, &str)> =
            vec![
            (
                profile(vec![rule(&["read"]), rule(&["write", "opne"])]),
                "syscalls[1].names[1]: unknown syscall \"opne\"",
            ),
            (profile(vec![rule(&[])]), "syscalls[0].names: the rule names no syscall"),
            (
                SeccompProfile {
                    default_action: SeccompAction::Errno(5000),
                    rules: vec![],
                },
                "defaultAction: errno 5000",
            ),
            (
                profile(vec![{
                    let mut r = rule(&["read"]);
                    r.includes.caps = vec!["SYS_ADMIN".into()];
                    r
                }]),
                "syscalls[0].includes.caps[0]: unknown capability \"SYS_ADMIN\"",
            ),
            (
                profile(vec![{
                    let mut r = rule(&["read"]);
                    r.excludes.arches = vec!["x86_64".into()];
                    r
                }]),
                "syscalls[0].excludes.arches[0]: unknown architecture \"x86_64\"",
            ),
            (
                profile(vec![{
                    let mut r = rule(&["read"]);
                    r.args = vec![ArgCondition {
                        index: 6,
                        op: ArgOp::Equal,
                        value: 0,
                        value_two: 0,
                    }];
                    r
                }]),
                "syscalls[0].args[0].index: argument index 6",
            ),
            (
                profile(vec![{
                    let mut r = rule(&["socket"]);
                    r.args = vec![ArgCondition {
                        index: 0,
                        op: ArgOp::NotEqual,
                        value: 0x1_0000_0028,
                        value_two: 0,
                    }];
                    r
                }]),
                "syscalls[0].args[0].value: 0x100000028 does not fit socket's 32-bit argument 0",
            ),
        ];
        for (p, want) in cases {
            let got = refusal(&p);
            assert!(got.starts_with(want), "{got} should start with {want}");
        }
    }

    #[test]
    fn too_many_rules_are_refused() {
        let p = profile((0..=MAX_RULES).map(|_| rule(&["read"])).collect());
        assert!(refusal(&p).starts_with("syscalls: 513 entries"));
    }
}
