//! Test only: runs classic BPF seccomp programs the way the kernel does, for the opcodes
//! our builders and seccompiler emit, so filters are checked on any host (32-bit ARM ones
//! included) without installing them.

use seccompiler::sock_filter;

use super::bpf::{
    AND_K, JA, JEQ_K, JGE_K, JGT_K, JSET_K, LD_W_ABS, OFFSET_ARCH, OFFSET_ARGS, OFFSET_NR, RET_K,
};

/// `struct seccomp_data` (little-endian, as on every target of ours).
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

fn load(call: &Call, offset: u32) -> u32 {
    match offset {
        OFFSET_NR => call.nr,
        OFFSET_ARCH => call.arch,
        o if (OFFSET_ARGS..OFFSET_ARGS + 48).contains(&o) && o % 4 == 0 => {
            let arg = call.args[((o - OFFSET_ARGS) / 8) as usize];
            if (o - OFFSET_ARGS) % 8 == 0 {
                arg as u32
            } else {
                (arg >> 32) as u32
            }
        }
        other => panic!("load at offset {other}"),
    }
}

/// One program's return value.
pub fn run(program: &[sock_filter], call: &Call) -> u32 {
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let ins = program.get(pc).expect("the program returns before its end");
        pc += 1;
        let branch = |taken: bool| usize::from(if taken { ins.jt } else { ins.jf });
        match ins.code {
            LD_W_ABS => acc = load(call, ins.k),
            AND_K => acc &= ins.k,
            JA => pc += ins.k as usize,
            JEQ_K => pc += branch(acc == ins.k),
            JGT_K => pc += branch(acc > ins.k),
            JGE_K => pc += branch(acc >= ins.k),
            JSET_K => pc += branch(acc & ins.k != 0),
            RET_K => return ins.k,
            other => panic!("opcode {other:#x} at {}", pc - 1),
        }
    }
}

/// Installed filters together: the kernel runs the newest first and keeps the strictest
/// action (lowest as a signed action value); among equals the first it saw.
pub fn run_all(programs: &[Vec<sock_filter>], call: &Call) -> u32 {
    let action = |ret: u32| (ret & 0xffff_0000) as i32;
    let mut verdict = 0x7fff_0000; // allow
    for program in programs.iter().rev() {
        let ret = run(program, call);
        if action(ret) < action(verdict) {
            verdict = ret;
        }
    }
    verdict
}
