//! The default filter written directly as classic BPF, for architectures `seccompiler` has no
//! backend for (32-bit ARM, the 32-bit Raspberry Pi OS). Same policy as the `seccompiler`
//! filters: the blocked syscalls fail with EPERM, `clone` with a namespace flag fails with
//! EPERM, `clone3` fails with ENOSYS (so libc falls back to `clone`), everything else is
//! allowed, and a syscall made under another architecture's ABI kills the process.
//!
//! The builder is pure and takes the architecture's numbers as arguments, so its tests run
//! the program through a small BPF interpreter on any host.

use seccompiler::{sock_filter, BpfProgram};

// Classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;

// Offsets in `struct seccomp_data`: nr, arch, instruction pointer, then args as u64 each.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// The low 32 bits of args[0] on a little-endian machine (all clone flags live there).
const OFFSET_ARG0_LOW: u32 = 16;

/// What the filter needs to know about the architecture.
#[derive(Debug, Clone)]
pub struct FilterSpec<'a> {
    /// `AUDIT_ARCH_*` of the ABI the filter accepts.
    pub audit_arch: u32,
    pub blocked: &'a [i64],
    pub clone: i64,
    pub clone3: i64,
    /// The clone flags that make `clone` fail with EPERM.
    pub namespace_flags: u32,
}

/// Why a spec cannot become a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfBuildError {
    #[error("syscall number {0} does not fit a BPF immediate")]
    Number(i64),
    #[error("{0} blocked syscalls are too many for one jump table (at most 240)")]
    TooMany(usize),
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

fn number(nr: i64) -> Result<u32, BpfBuildError> {
    u32::try_from(nr).map_err(|_| BpfBuildError::Number(nr))
}

/// Builds the program. Layout: arch check, load nr, one `jeq` per blocked syscall to the
/// EPERM return, `clone3` to the ENOSYS return, `clone` to the flag test, then the returns.
pub fn build(spec: &FilterSpec<'_>, eperm: u32, enosys: u32) -> Result<BpfProgram, BpfBuildError> {
    let n = spec.blocked.len();
    if n > 240 {
        return Err(BpfBuildError::TooMany(n));
    }
    // Indexes of the tail, counted from the start of the program.
    let first_jeq = 4;
    let clone3_at = first_jeq + n;
    let clone_at = clone3_at + 1;
    let load_arg_at = clone_at + 1;
    let jset_at = load_arg_at + 1;
    let allow_at = jset_at + 1;
    let eperm_at = allow_at + 1;
    let enosys_at = eperm_at + 1;
    // A jump offset counts from the instruction after the jump; the tail is < 256 away.
    let to = |from: usize, target: usize| u8::try_from(target - from - 1).unwrap_or(u8::MAX);

    let mut program = vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JEQ_K, spec.audit_arch, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFFSET_NR),
    ];
    for (i, &nr) in spec.blocked.iter().enumerate() {
        let at = first_jeq + i;
        program.push(jump(JEQ_K, number(nr)?, to(at, eperm_at), 0));
    }
    program.push(jump(
        JEQ_K,
        number(spec.clone3)?,
        to(clone3_at, enosys_at),
        0,
    ));
    program.push(jump(JEQ_K, number(spec.clone)?, 0, to(clone_at, allow_at)));
    program.push(stmt(LD_W_ABS, OFFSET_ARG0_LOW));
    program.push(jump(JSET_K, spec.namespace_flags, to(jset_at, eperm_at), 0));
    program.push(stmt(RET_K, RET_ALLOW));
    program.push(stmt(RET_K, RET_ERRNO | (eperm & 0xffff)));
    program.push(stmt(RET_K, RET_ERRNO | (enosys & 0xffff)));
    debug_assert_eq!(program.len(), enosys_at + 1);
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF seccomp program on (nr, arch, arg0) with the subset of opcodes
    /// `build` emits.
    fn run(program: &[sock_filter], nr: u32, arch: u32, arg0: u32) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let ins = &program[pc];
            pc += 1;
            match ins.code {
                LD_W_ABS => {
                    acc = match ins.k {
                        OFFSET_NR => nr,
                        OFFSET_ARCH => arch,
                        OFFSET_ARG0_LOW => arg0,
                        other => panic!("load at {other}"),
                    }
                }
                JEQ_K => pc += usize::from(if acc == ins.k { ins.jt } else { ins.jf }),
                JSET_K => pc += usize::from(if acc & ins.k != 0 { ins.jt } else { ins.jf }),
                RET_K => return ins.k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    const ARCH: u32 = 0x4000_0028; // AUDIT_ARCH_ARM
    const NEWNS: u32 = 0x0002_0000;
    const NEWNET: u32 = 0x4000_0000;

    fn program() -> BpfProgram {
        let blocked: Vec<i64> = (1000..1060).collect();
        let spec = FilterSpec {
            audit_arch: ARCH,
            blocked: &blocked,
            clone: 120,
            clone3: 435,
            namespace_flags: NEWNS | NEWNET,
        };
        build(&spec, 1, 38).unwrap()
    }

    #[test]
    fn blocked_syscalls_fail_with_eperm_and_others_are_allowed() {
        let p = program();
        for nr in [1000, 1030, 1059] {
            assert_eq!(run(&p, nr, ARCH, 0), RET_ERRNO | 1, "nr {nr}");
        }
        for nr in [0, 3, 999, 1060, 20] {
            assert_eq!(run(&p, nr, ARCH, 0), RET_ALLOW, "nr {nr}");
        }
    }

    #[test]
    fn clone_with_a_namespace_flag_is_refused_and_plain_clone_allowed() {
        let p = program();
        assert_eq!(run(&p, 120, ARCH, 0x11), RET_ALLOW); // SIGCHLD | CLONE_VM-like flags
        assert_eq!(run(&p, 120, ARCH, NEWNS | 0x11), RET_ERRNO | 1);
        assert_eq!(run(&p, 120, ARCH, NEWNET), RET_ERRNO | 1);
        assert_eq!(run(&p, 435, ARCH, 0), RET_ERRNO | 38);
    }

    #[test]
    fn another_abi_is_killed() {
        let p = program();
        assert_eq!(run(&p, 3, 0xc000_003e, 0), RET_KILL_PROCESS);
    }

    #[test]
    fn numbers_that_do_not_fit_are_refused() {
        let spec = FilterSpec {
            audit_arch: ARCH,
            blocked: &[-1],
            clone: 120,
            clone3: 435,
            namespace_flags: NEWNS,
        };
        assert_eq!(build(&spec, 1, 38), Err(BpfBuildError::Number(-1)));
    }
}
