//! Pure: a profile (names, capability and architecture conditions) → the rules that apply to
//! one container on this device, by syscall number. Both backends (`compile.rs` with
//! seccompiler, `bpf.rs` by hand) build from this, so they agree on what a profile means.

use std::collections::{BTreeMap, BTreeSet};

use coracle_proto::seccomp::syscalls::{self, Arch};
use coracle_proto::seccomp::{
    is_32bit_arg, ArgOp, KernelVersion, RuleFilter, SeccompAction, SeccompProfile,
};

/// What a rule's `includes`/`excludes` are checked against.
#[derive(Debug, Clone)]
pub struct Target {
    pub arch: Arch,
    /// The container's capabilities (`CAP_*`), as Docker checks its bounding set.
    pub caps: BTreeSet<String>,
    pub kernel: KernelVersion,
}

/// The filter for one container: per syscall number its rules, strictest action first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub default: SeccompAction,
    pub syscalls: BTreeMap<u32, Vec<Rule>>,
}

/// Take `action` when every condition holds (no conditions: always).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: SeccompAction,
    pub conditions: Vec<Condition>,
}

/// `arg OP value` (masked: `arg & value == value_two`), on the low 32 bits of the argument
/// when `low32` (the kernel reads only those, see `is_32bit_arg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    pub index: u8,
    pub low32: bool,
    pub op: ArgOp,
    pub value: u64,
    pub value_two: u64,
}

/// The rules of `profile` that apply to `target`. Names this architecture lacks are skipped
/// (as libseccomp does), so one profile serves x86_64, arm64 and arm devices.
pub fn resolve(profile: &SeccompProfile, target: &Target) -> Resolved {
    let mut syscalls: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    for rule in &profile.rules {
        if !applies(&rule.includes, &rule.excludes, target) {
            continue;
        }
        for name in &rule.names {
            let Some(nr) = syscalls::number(target.arch, name) else {
                continue;
            };
            let conditions = rule
                .args
                .iter()
                .map(|a| Condition {
                    index: a.index,
                    low32: target.arch == Arch::Arm || is_32bit_arg(name, a.index),
                    op: a.op,
                    value: a.value,
                    value_two: a.value_two,
                })
                .collect();
            syscalls.entry(nr).or_default().push(Rule {
                action: rule.action,
                conditions,
            });
        }
    }
    for rules in syscalls.values_mut() {
        // Strictest first (stable: the profile's order among equals); nothing after an
        // unconditional rule can change the answer.
        rules.sort_by_key(|r| std::cmp::Reverse(r.action.precedence()));
        if let Some(always) = rules.iter().position(|r| r.conditions.is_empty()) {
            rules.truncate(always + 1);
        }
        rules.dedup();
    }
    Resolved {
        default: profile.default_action,
        syscalls,
    }
}

/// Docker's reading: every `includes.caps` held, none of `excludes.caps`; the architecture
/// listed in `includes.arches` (when any) and not in `excludes.arches`; the kernel at least
/// `includes.minKernel`.
fn applies(includes: &RuleFilter, excludes: &RuleFilter, target: &Target) -> bool {
    let arch = target.arch.go_name();
    let arch_listed = |f: &RuleFilter| f.arches.iter().any(|a| a == arch);
    includes.caps.iter().all(|c| target.caps.contains(c))
        && !excludes.caps.iter().any(|c| target.caps.contains(c))
        && (includes.arches.is_empty() || arch_listed(includes))
        && !arch_listed(excludes)
        && includes.min_kernel.is_none_or(|min| target.kernel >= min)
}

/// `major.minor` from a kernel release string such as `6.1.0-18-arm64`.
pub fn kernel_version(release: &str) -> Option<KernelVersion> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some(KernelVersion { major, minor })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::seccomp::{ArgCondition, SyscallRule};

    fn rule(names: &[&str], action: SeccompAction) -> SyscallRule {
        SyscallRule {
            names: names.iter().map(|n| n.to_string()).collect(),
            action,
            args: Vec::new(),
            includes: RuleFilter::default(),
            excludes: RuleFilter::default(),
        }
    }

    fn target(arch: Arch, caps: &[&str]) -> Target {
        Target {
            arch,
            caps: caps.iter().map(|c| c.to_string()).collect(),
            kernel: KernelVersion { major: 6, minor: 1 },
        }
    }

    fn nr(arch: Arch, name: &str) -> u32 {
        syscalls::number(arch, name).unwrap()
    }

    #[test]
    fn names_become_this_architectures_numbers_and_missing_ones_are_skipped() {
        let profile = SeccompProfile {
            default_action: SeccompAction::Errno(1),
            rules: vec![rule(&["read", "open", "_llseek"], SeccompAction::Allow)],
        };
        let got = resolve(&profile, &target(Arch::Aarch64, &[]));
        assert_eq!(got.syscalls.keys().copied().collect::<Vec<_>>(), [63]);
        let got = resolve(&profile, &target(Arch::Arm, &[]));
        let want: Vec<u32> = ["read", "open", "_llseek"]
            .iter()
            .map(|n| nr(Arch::Arm, n))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(got.syscalls.keys().copied().collect::<Vec<_>>(), want);
    }

    #[test]
    fn includes_and_excludes_follow_capabilities_architecture_and_kernel() {
        let mut admin = rule(&["mount"], SeccompAction::Allow);
        admin.includes.caps = vec!["CAP_SYS_ADMIN".into()];
        let mut not_admin = rule(&["clone3"], SeccompAction::Errno(38));
        not_admin.excludes.caps = vec!["CAP_SYS_ADMIN".into()];
        let mut amd64 = rule(&["arch_prctl"], SeccompAction::Allow);
        amd64.includes.arches = vec!["amd64".into()];
        let mut new_kernel = rule(&["getpid"], SeccompAction::Allow);
        new_kernel.includes.min_kernel = Some(KernelVersion { major: 6, minor: 9 });
        let profile = SeccompProfile {
            default_action: SeccompAction::Errno(1),
            rules: vec![admin, not_admin, amd64, new_kernel],
        };
        let table: [(Arch, &[&str], &[&str]); 3] = [
            (Arch::X86_64, &[], &["clone3", "arch_prctl"]),
            (Arch::X86_64, &["CAP_SYS_ADMIN"], &["mount", "arch_prctl"]),
            (Arch::Aarch64, &["CAP_SYS_ADMIN"], &["mount"]),
        ];
        for (arch, caps, want) in table {
            let got = resolve(&profile, &target(arch, caps));
            let mut want: Vec<u32> = want.iter().map(|n| nr(arch, n)).collect();
            want.sort_unstable();
            assert_eq!(
                got.syscalls.keys().copied().collect::<Vec<_>>(),
                want,
                "{arch} {caps:?}"
            );
        }
        let mut newer = target(Arch::X86_64, &[]);
        newer.kernel = KernelVersion {
            major: 6,
            minor: 10,
        };
        assert!(resolve(&profile, &newer)
            .syscalls
            .contains_key(&nr(Arch::X86_64, "getpid")));
    }

    #[test]
    fn rules_are_ordered_strictest_first_and_cut_after_an_unconditional_one() {
        let mut conditional = rule(&["socket"], SeccompAction::Allow);
        conditional.args = vec![ArgCondition {
            index: 0,
            op: ArgOp::NotEqual,
            value: 40,
            value_two: 0,
        }];
        let profile = SeccompProfile {
            default_action: SeccompAction::Errno(1),
            rules: vec![
                conditional,
                rule(&["socket"], SeccompAction::Log),
                rule(&["socket"], SeccompAction::KillProcess),
                rule(&["socket"], SeccompAction::Allow),
            ],
        };
        let got = resolve(&profile, &target(Arch::X86_64, &[]));
        let actions: Vec<SeccompAction> = got.syscalls[&41].iter().map(|r| r.action).collect();
        assert_eq!(actions, [SeccompAction::KillProcess]);
        let profile = SeccompProfile {
            default_action: SeccompAction::Errno(1),
            rules: profile.rules[..2].to_vec(),
        };
        let got = resolve(&profile, &target(Arch::X86_64, &[]));
        let rules = &got.syscalls[&41];
        assert_eq!(
            rules.len(),
            1,
            "Log always matches, so the Allow check is moot"
        );
        assert_eq!(rules[0].action, SeccompAction::Log);
        // The domain is an int: compared on its low 32 bits.
        let got = resolve(
            &SeccompProfile {
                default_action: SeccompAction::Errno(1),
                rules: profile.rules[..1].to_vec(),
            },
            &target(Arch::X86_64, &[]),
        );
        assert!(got.syscalls[&41][0].conditions[0].low32);
    }

    #[test]
    fn kernel_releases_parse_to_major_and_minor() {
        let v = |major, minor| Some(KernelVersion { major, minor });
        assert_eq!(kernel_version("6.1.0-18-arm64"), v(6, 1));
        assert_eq!(kernel_version("5.15.92-v8+"), v(5, 15));
        assert_eq!(kernel_version("6.18"), v(6, 18));
        assert_eq!(kernel_version("garbage"), None);
    }
}
