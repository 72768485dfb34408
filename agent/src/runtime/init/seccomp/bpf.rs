//! A resolved filter written directly as one classic BPF program, for 32-bit ARM (the
//! 32-bit Raspberry Pi OS), which `seccompiler` has no backend for; and the x32 guard
//! `compile.rs` adds on x86_64. Pure: the tests run the programs through the small
//! interpreter in `interpreter.rs` on any host.
//!
//! Layout: check the ABI (another one kills the process), load the syscall number, then
//! per syscall `jeq nr` → either its only, unconditional answer (`ret`) or a jump to its
//! rule block; after the last syscall the default action. A rule block tries each rule,
//! strictest first: its conditions on the arguments' low 32 bits (the only bits a 32-bit
//! ARM argument has), then `ret` its action; the block ends with the default action.

use seccompiler::{sock_filter, BpfProgram};

use super::resolve::{Condition, Resolved, Rule};
use coracle_proto::seccomp::{ArgOp, SeccompAction};

// Classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
pub const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
pub const JA: u16 = 0x05; // BPF_JMP | BPF_JA
pub const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
pub const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
pub const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
pub const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
pub const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
pub const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Offsets in `struct seccomp_data`: nr, arch, instruction pointer, then six u64 args.
pub const OFFSET_NR: u32 = 0;
pub const OFFSET_ARCH: u32 = 4;
pub const OFFSET_ARGS: u32 = 16;

pub const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// The kernel's limit on one program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;
/// Syscall numbers of the x32 ABI carry this bit under AUDIT_ARCH_X86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Why a resolved filter cannot become a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfBuildError {
    #[error("the filter needs {0} instructions, more than the kernel's 4096")]
    TooLong(usize),
    #[error("a rule needs {0} instructions, more than one jump spans (255)")]
    RuleTooLong(usize),
}

/// The seccomp return value of an action.
pub fn ret_value(action: SeccompAction) -> u32 {
    match action {
        SeccompAction::KillProcess => 0x8000_0000,
        SeccompAction::KillThread => 0x0000_0000,
        SeccompAction::Trap => 0x0003_0000,
        SeccompAction::Errno(errno) => 0x0005_0000 | u32::from(errno),
        SeccompAction::Trace(msg) => 0x7ff0_0000 | u32::from(msg),
        SeccompAction::Log => 0x7ffc_0000,
        SeccompAction::Allow => 0x7fff_0000,
    }
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// One program for the whole filter, accepting only the `audit_arch` ABI.
pub fn build(resolved: &Resolved, audit_arch: u32) -> Result<BpfProgram, BpfBuildError> {
    let default = ret_value(resolved.default);
    let mut head = vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JEQ_K, audit_arch, 1, 0),
        stmt(RET_K, ret_value(SeccompAction::KillProcess)),
        stmt(LD_W_ABS, OFFSET_NR),
    ];
    let mut blocks: Vec<(usize, Vec<sock_filter>)> = Vec::new();
    for (&nr, rules) in &resolved.syscalls {
        head.push(jump(JEQ_K, nr, 0, 1));
        match rules.as_slice() {
            [only] if only.conditions.is_empty() => head.push(stmt(RET_K, ret_value(only.action))),
            _ => {
                blocks.push((head.len(), rule_block(rules, default)?));
                head.push(stmt(JA, 0)); // offset patched below
            }
        }
    }
    head.push(stmt(RET_K, default));
    let mut program = head;
    for (ja_at, block) in blocks {
        program[ja_at].k = (program.len() - ja_at - 1) as u32;
        program.extend(block);
    }
    if program.len() > MAX_INSNS {
        return Err(BpfBuildError::TooLong(program.len()));
    }
    Ok(program)
}

/// The rules of one syscall, strictest first, then the default.
fn rule_block(rules: &[Rule], default: u32) -> Result<Vec<sock_filter>, BpfBuildError> {
    let mut block = Vec::new();
    for rule in rules {
        let checks: Vec<Check> = rule.conditions.iter().flat_map(checks).collect();
        // This rule's instructions, its `ret` included: a failed check jumps just past it.
        let len = checks.len() + 1;
        for (pos, check) in checks.into_iter().enumerate() {
            let to_next_rule =
                u8::try_from(len - pos - 1).map_err(|_| BpfBuildError::RuleTooLong(len))?;
            block.push(check.emit(to_next_rule));
        }
        block.push(stmt(RET_K, ret_value(rule.action)));
    }
    block.push(stmt(RET_K, default));
    Ok(block)
}

/// One instruction of a condition, its failure jump still to be placed.
#[derive(Debug, Clone, Copy)]
enum Check {
    Load(u32),
    And(u32),
    /// Fails unless `code k` holds.
    PassIf(u16, u32),
    /// Fails if `code k` holds.
    FailIf(u16, u32),
    Fail,
}

impl Check {
    fn emit(self, to_next_rule: u8) -> sock_filter {
        match self {
            Check::Load(offset) => stmt(LD_W_ABS, offset),
            Check::And(mask) => stmt(AND_K, mask),
            Check::PassIf(code, k) => jump(code, k, 0, to_next_rule),
            Check::FailIf(code, k) => jump(code, k, to_next_rule, 0),
            Check::Fail => stmt(JA, u32::from(to_next_rule)),
        }
    }
}

/// A condition on a 32-bit argument (the high half of an ARM argument is always zero, so a
/// value above 32 bits decides the check statically).
fn checks(c: &Condition) -> Vec<Check> {
    let load = Check::Load(OFFSET_ARGS + 8 * u32::from(c.index));
    let compared = if c.op == ArgOp::MaskedEqual {
        c.value_two
    } else {
        c.value
    };
    let Ok(k) = u32::try_from(compared) else {
        // arg < 2^32 <= value: the order ops are decided, equality never holds.
        return match c.op {
            ArgOp::NotEqual | ArgOp::LessThan | ArgOp::LessOrEqual => Vec::new(),
            _ => vec![Check::Fail],
        };
    };
    match c.op {
        ArgOp::Equal => vec![load, Check::PassIf(JEQ_K, k)],
        ArgOp::NotEqual => vec![load, Check::FailIf(JEQ_K, k)],
        ArgOp::GreaterThan => vec![load, Check::PassIf(JGT_K, k)],
        ArgOp::GreaterOrEqual => vec![load, Check::PassIf(JGE_K, k)],
        ArgOp::LessThan => vec![load, Check::FailIf(JGE_K, k)],
        ArgOp::LessOrEqual => vec![load, Check::FailIf(JGT_K, k)],
        // Only the mask's low half can meet a 32-bit argument.
        ArgOp::MaskedEqual => vec![load, Check::And(c.value as u32), Check::PassIf(JEQ_K, k)],
    }
}

/// x86_64 only: a call made through the x32 ABI (same audit arch, numbers with bit 30)
/// kills the process, so a deny-list profile cannot be bypassed by renumbering.
pub fn x32_guard() -> BpfProgram {
    vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, ret_value(SeccompAction::KillProcess)),
        stmt(LD_W_ABS, OFFSET_NR),
        jump(JSET_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, ret_value(SeccompAction::KillProcess)),
        stmt(RET_K, ret_value(SeccompAction::Allow)),
    ]
}
