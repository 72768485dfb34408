//! Seccomp policies on the wire: which filter a service's container runs under.
//!
//! [`SeccompPolicy::Default`] is the agent's built-in allow-list (Docker's default profile);
//! [`SeccompPolicy::Unconfined`] is `security_opt: seccomp=unconfined`;
//! [`SeccompPolicy::Profile`] is a profile file in Docker's JSON format, read and parsed by
//! the CLI and the controller at deploy time (the file lives on the operator's machine) and
//! shipped inside the signed desired state as a [`SeccompProfile`]. Syscalls are kept by
//! name: the device resolves them for its own architecture ([`syscalls::number`]), so one
//! profile serves a mixed fleet. [`SeccompProfile::validate`] (in `validate.rs`) runs on both
//! sides: the controller refuses a bad profile at `coracle deploy`, the device refuses a
//! state that carries one.
//!
//! Semantics follow Docker/libseccomp: a call takes the action of the rule that matches it,
//! else the default action; a rule applies when the container holds every capability in
//! `includes.caps` and none in `excludes.caps`, and the device's architecture (Go name:
//! `amd64`, `arm64`, `arm`) passes `includes.arches`/`excludes.arches`. When rules with
//! different actions match one call, the strictest wins (the kernel's order: kill process,
//! kill thread, trap, errno, trace, log, allow).

pub mod syscalls;
mod table;
mod validate;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub use syscalls::Arch;
pub use validate::{is_32bit_arg, ProfileError, ProfileProblem, CAPABILITIES, KNOWN_ARCHES};

/// The filter a service's container runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompPolicy {
    /// The agent's built-in allow-list.
    #[default]
    Default,
    /// No filter at all.
    Unconfined,
    /// A profile the operator supplied.
    Profile(SeccompProfile),
}

/// A Docker-format profile, parsed: default action and rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompProfile {
    /// What an unmatched call gets (`defaultAction` with `defaultErrnoRet`).
    pub default_action: SeccompAction,
    /// `syscalls`, in the profile's order.
    pub rules: Vec<SyscallRule>,
}

/// One entry of `syscalls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallRule {
    pub names: Vec<String>,
    pub action: SeccompAction,
    /// All must hold (libseccomp ANDs a rule's argument checks).
    pub args: Vec<ArgCondition>,
    pub includes: RuleFilter,
    pub excludes: RuleFilter,
}

/// What the kernel does with a call (`SCMP_ACT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompAction {
    Allow,
    /// Fail with this errno (0..=4095).
    Errno(u16),
    /// `SCMP_ACT_KILL` and `SCMP_ACT_KILL_THREAD`.
    KillThread,
    KillProcess,
    /// SIGSYS.
    Trap,
    /// Hand to a ptrace tracer with this message (ENOSYS without one).
    Trace(u16),
    /// Allow and log.
    Log,
}

impl SeccompAction {
    /// The kernel's precedence when several filters or rules answer: higher wins.
    pub fn precedence(self) -> u8 {
        match self {
            SeccompAction::KillProcess => 6,
            SeccompAction::KillThread => 5,
            SeccompAction::Trap => 4,
            SeccompAction::Errno(_) => 3,
            SeccompAction::Trace(_) => 2,
            SeccompAction::Log => 1,
            SeccompAction::Allow => 0,
        }
    }
}

/// A check of one syscall argument (`args[]`): `arg OP value`, or for
/// [`ArgOp::MaskedEqual`] `arg & value == value_two`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgCondition {
    /// 0..=5.
    pub index: u8,
    pub op: ArgOp,
    pub value: u64,
    pub value_two: u64,
}

/// `SCMP_CMP_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArgOp {
    NotEqual,
    LessThan,
    LessOrEqual,
    Equal,
    GreaterOrEqual,
    GreaterThan,
    MaskedEqual,
}

/// `includes`/`excludes` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFilter {
    /// `CAP_*` names.
    pub caps: Vec<String>,
    /// Go architecture names (`amd64`, `arm64`, `arm`, `s390x`, ...).
    pub arches: Vec<String>,
    /// `includes.minKernel`: the rule applies only on this kernel or newer.
    pub min_kernel: Option<KernelVersion>,
}

impl RuleFilter {
    pub fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty() && self.min_kernel.is_none()
    }
}

/// `major.minor` of a Linux kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelVersion {
    pub major: u16,
    pub minor: u16,
}
