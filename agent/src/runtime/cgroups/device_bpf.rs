//! The cgroup v2 device allow-list as an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE), built
//! here instruction by instruction: no C toolchain, no libbpf. Pure; `bpf.rs` loads and
//! attaches it.
//!
//! The kernel runs the program on every open and mknod of a device node by a task in the
//! cgroup, with `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! (`access_type` = access << 16 | type; type 1 = block, 2 = char) in r1. It returns 1
//! (allow) or 0 (deny, the syscall fails with EPERM). The program is one block per rule:
//!
//! ```text
//!   r2 = ctx->access_type & 0xffff; r4 = ctx->major; r5 = ctx->minor
//!   rule: if w2 != type goto next; if w4 != major goto next; [if w5 != minor goto next]
//!         r0 = 1; exit
//!   ...
//!   r0 = 0; exit
//! ```
//!
//! Every listed device may be read, written and created (mknod), as the v1 rules `rwm` say.

use super::limits::{DeviceRule, DEFAULT_DEVICES};

/// One eBPF instruction (`struct bpf_insn`). `regs` holds dst in its low nibble and src in
/// its high nibble, as the kernel's bitfields lay them out on little-endian machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes (class | op | source), from include/uapi/linux/bpf_common.h and bpf.h.
/// `dst = *(u32 *)(src + off)`: BPF_LDX | BPF_MEM | BPF_W.
pub const LDX_MEM_W: u8 = 0x61;
/// `w_dst &= imm` (32-bit ALU, upper half zeroed): BPF_ALU | BPF_AND | BPF_K.
pub const ALU32_AND_K: u8 = 0x54;
/// `dst = imm`: BPF_ALU64 | BPF_MOV | BPF_K.
pub const ALU64_MOV_K: u8 = 0xb7;
/// `if (u32)dst != (u32)imm goto pc + off`: BPF_JMP32 | BPF_JNE | BPF_K.
pub const JMP32_JNE_K: u8 = 0x56;
/// `return r0`: BPF_JMP | BPF_EXIT.
pub const JMP_EXIT: u8 = 0x95;

/// Device types in `access_type`'s low half.
pub const DEV_BLOCK: i32 = 1;
pub const DEV_CHAR: i32 = 2;

/// One allowed device: type, major, and minor (`None` = any minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub block: bool,
    pub major: u32,
    pub minor: Option<u32>,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        #[cfg(target_endian = "little")]
        let regs = (src << 4) | (dst & 0x0f);
        #[cfg(target_endian = "big")]
        let regs = (dst << 4) | (src & 0x0f);
        Self {
            code,
            regs,
            off,
            imm,
        }
    }

    pub fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0x0f
        } else {
            self.regs >> 4
        }
    }

    pub fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0x0f
        }
    }
}

/// The default devices (null, zero, full, random, urandom, tty, ptmx, pts) plus the
/// passed-through ones. A number that no Linux device can have (wider than 32 bits) is
/// left out: it could never match anyway.
pub fn allow_list(passed_through: &[DeviceRule]) -> Vec<Allowed> {
    let defaults = DEFAULT_DEVICES
        .iter()
        .map(|&(kind, major, minor)| (kind, major, minor));
    let passed = passed_through
        .iter()
        .map(|&(kind, major, minor)| (kind, major, Some(minor)));
    defaults
        .chain(passed)
        .filter_map(|(kind, major, minor)| {
            let minor = match minor {
                Some(m) => Some(u32::try_from(m).ok()?),
                None => None,
            };
            Some(Allowed {
                block: kind == 'b',
                major: u32::try_from(major).ok()?,
                minor,
            })
        })
        .collect()
}

/// The program allowing exactly `allowed` and denying every other device.
pub fn program(allowed: &[Allowed]) -> Vec<Insn> {
    let mut insns = vec![
        Insn::new(LDX_MEM_W, 2, 1, 0, 0),
        Insn::new(ALU32_AND_K, 2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, 4, 1, 4, 0),
        Insn::new(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in allowed {
        let mut checks = vec![
            (2, if rule.block { DEV_BLOCK } else { DEV_CHAR }),
            (4, rule.major as i32),
        ];
        if let Some(minor) = rule.minor {
            // JMP32 compares the low 32 bits, so the bit pattern is what matters.
            checks.push((5, minor as i32));
        }
        // Each check skips the rest of this rule: the later checks, `r0 = 1` and `exit`.
        let len = checks.len();
        for (i, (reg, value)) in checks.into_iter().enumerate() {
            let skip = (len - i - 1 + 2) as i16;
            insns.push(Insn::new(JMP32_JNE_K, reg, 0, skip, value));
        }
        insns.push(Insn::new(ALU64_MOV_K, 0, 0, 0, 1));
        insns.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    }
    insns.push(Insn::new(ALU64_MOV_K, 0, 0, 0, 0));
    insns.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    insns
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `insns` on a device context the way the kernel would, for the opcodes
    /// `program` emits; anything else is a test failure.
    fn run(insns: &[Insn], block: bool, major: u32, minor: u32) -> u64 {
        let access = 0b110u32 << 16; // read | write
        let ctx = [access | if block { 1 } else { 2 }, major, minor];
        let mut regs = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..4096 {
            let insn = insns[pc];
            let (dst, src) = (insn.dst() as usize, insn.src() as usize);
            pc += 1;
            match insn.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    regs[dst] = u64::from(ctx[insn.off as usize / 4]);
                }
                ALU32_AND_K => regs[dst] = u64::from(regs[dst] as u32 & insn.imm as u32),
                ALU64_MOV_K => regs[dst] = insn.imm as i64 as u64,
                JMP32_JNE_K => {
                    if regs[dst] as u32 != insn.imm as u32 {
                        pc = (pc as isize + insn.off as isize) as usize;
                    }
                }
                JMP_EXIT => return regs[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        panic!("program did not exit");
    }

    #[test]
    fn program_allows_the_default_and_passed_devices_and_denies_the_rest() {
        // i2c-1 (char 89:1) and a block device 8:0 passed through.
        let insns = program(&allow_list(&[('c', 89, 1), ('b', 8, 0)]));
        let cases = [
            (false, 1, 3, 1, "null"),
            (false, 1, 5, 1, "zero"),
            (false, 1, 7, 1, "full"),
            (false, 1, 8, 1, "random"),
            (false, 1, 9, 1, "urandom"),
            (false, 5, 0, 1, "tty"),
            (false, 5, 2, 1, "ptmx"),
            (false, 136, 0, 1, "pts/0"),
            (false, 136, 4711, 1, "pts/4711"),
            (false, 89, 1, 1, "i2c-1"),
            (true, 8, 0, 1, "sda"),
            (false, 1, 1, 0, "mem"),
            (false, 1, 2, 0, "kmem"),
            (false, 10, 237, 0, "loop-control"),
            (false, 89, 0, 0, "i2c-0"),
            (true, 8, 1, 0, "sda1"),
            (true, 1, 3, 0, "block 1:3 is not null"),
            (false, 8, 0, 0, "char 8:0 is not sda"),
            (false, 5, 1, 0, "console"),
        ];
        for (block, major, minor, want, name) in cases {
            assert_eq!(run(&insns, block, major, minor), want, "{name}");
        }
    }

    #[test]
    fn empty_allow_list_denies_everything() {
        let insns = program(&[]);
        assert_eq!(insns.len(), 6);
        assert_eq!(run(&insns, false, 1, 3), 0);
    }

    #[test]
    fn numbers_no_device_can_have_are_left_out() {
        let list = allow_list(&[('c', 1 << 40, 1), ('c', 4, 1 << 33)]);
        assert_eq!(list.len(), DEFAULT_DEVICES.len());
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        let insns = program(&allow_list(&[('c', 89, 1)]));
        for (pc, insn) in insns.iter().enumerate() {
            if insn.code == JMP32_JNE_K {
                let target = pc as isize + 1 + insn.off as isize;
                assert!(target > pc as isize && (target as usize) < insns.len());
            }
        }
        assert_eq!(insns.last().unwrap().code, JMP_EXIT);
    }
}
