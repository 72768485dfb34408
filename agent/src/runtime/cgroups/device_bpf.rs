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
//!   r2 = ctx->access_type & 0xffff; r3 = ctx->access_type >> 16
//!   r4 = ctx->major; r5 = ctx->minor
//!   rule: [if w2 != type goto next]; [if w4 != major goto next]; [if w5 != minor goto next]
//!         [w1 = w3; w1 &= ~granted; if w1 != 0 goto next]
//!         r0 = 1; exit
//!   ...
//!   r0 = 0; exit
//! ```
//!
//! A rule grants the access bits of its device (`BPF_DEVCG_ACC_MKNOD` 1, `READ` 2, `WRITE`
//! 4), as the v1 rules' `rwm` letters do: a request asking for a bit the rule lacks (a write
//! to a `:r` device, a mknod without `m`) falls through to the next rule, and finally to
//! the deny. The default devices get all three; the access check is left out for them. A
//! pattern rule (type `a`, a number `*`) leaves out the comparisons it does not make.

use super::limits::{DeviceRule, DEFAULT_DEVICES};
use crate::runtime::spec::DeviceAccess;

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
/// `w_dst = w_src`: BPF_ALU | BPF_MOV | BPF_X.
pub const ALU32_MOV_X: u8 = 0xbc;
/// `w_dst >>= imm`: BPF_ALU | BPF_RSH | BPF_K.
pub const ALU32_RSH_K: u8 = 0x74;
/// `return r0`: BPF_JMP | BPF_EXIT.
pub const JMP_EXIT: u8 = 0x95;

/// Device types in `access_type`'s low half.
pub const DEV_BLOCK: i32 = 1;
pub const DEV_CHAR: i32 = 2;

/// Access bits in `access_type`'s high half (`BPF_DEVCG_ACC_*`).
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Allowed devices: type ([`DEV_BLOCK`], [`DEV_CHAR`]; `None` = both), major and minor
/// (`None` = any) and the access bits granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub kind: Option<i32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

/// The `BPF_DEVCG_ACC_*` bits of `access`.
pub fn access_bits(access: DeviceAccess) -> u32 {
    let bit = |on: bool, bit: u32| if on { bit } else { 0 };
    bit(access.read, ACC_READ) | bit(access.write, ACC_WRITE) | bit(access.mknod, ACC_MKNOD)
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

/// The default devices (null, zero, full, random, urandom, tty, ptmx, pts) with every
/// access, plus the passed-through ones with theirs. A number that no Linux device can have
/// (wider than 32 bits) is left out: it could never match anyway; so is a rule granting
/// nothing.
pub fn allow_list(passed_through: &[DeviceRule]) -> Vec<Allowed> {
    let defaults = DEFAULT_DEVICES.iter().map(|&(kind, major, minor)| {
        DeviceRule::pattern(kind, Some(major), minor, DeviceAccess::ALL)
    });
    let passed = passed_through
        .iter()
        .filter(|r| !r.is_every_device())
        .copied();
    defaults
        .chain(passed)
        .filter(|r| access_bits(r.access) != 0)
        .filter_map(|r| {
            let number = |n: Option<u64>| match n {
                Some(n) => u32::try_from(n).ok().map(Some),
                None => Some(None),
            };
            Some(Allowed {
                kind: match r.kind {
                    'b' => Some(DEV_BLOCK),
                    'c' => Some(DEV_CHAR),
                    _ => None,
                },
                major: number(r.major)?,
                minor: number(r.minor)?,
                access: access_bits(r.access),
            })
        })
        .collect()
}

/// The program for a container's rules: [`program`] over [`allow_list`], or one allowing
/// every device when a rule is [`DeviceRule::EVERY`] (a privileged container).
pub fn program_for(devices: &[DeviceRule]) -> Vec<Insn> {
    if devices.iter().any(DeviceRule::is_every_device) {
        return vec![
            Insn::new(ALU64_MOV_K, 0, 0, 0, 1),
            Insn::new(JMP_EXIT, 0, 0, 0, 0),
        ];
    }
    program(&allow_list(devices))
}

/// The program allowing exactly `allowed` and denying every other device.
pub fn program(allowed: &[Allowed]) -> Vec<Insn> {
    let mut insns = vec![
        Insn::new(LDX_MEM_W, 2, 1, 0, 0),
        Insn::new(ALU32_AND_K, 2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, 3, 1, 0, 0),
        Insn::new(ALU32_RSH_K, 3, 0, 0, 16),
        Insn::new(LDX_MEM_W, 4, 1, 4, 0),
        Insn::new(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in allowed {
        let mut body = Vec::new();
        if let Some(kind) = rule.kind {
            body.push(Insn::new(JMP32_JNE_K, 2, 0, 0, kind));
        }
        // JMP32 compares the low 32 bits, so the bit pattern is what matters.
        if let Some(major) = rule.major {
            body.push(Insn::new(JMP32_JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            body.push(Insn::new(JMP32_JNE_K, 5, 0, 0, minor as i32));
        }
        let denied = ACC_ALL & !rule.access;
        if denied != 0 {
            // r1 (the context) is no longer needed: every field is loaded.
            body.push(Insn::new(ALU32_MOV_X, 1, 3, 0, 0));
            body.push(Insn::new(ALU32_AND_K, 1, 0, 0, denied as i32));
            body.push(Insn::new(JMP32_JNE_K, 1, 0, 0, 0));
        }
        body.push(Insn::new(ALU64_MOV_K, 0, 0, 0, 1));
        body.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
        // Each jump skips the rest of this rule, up to and including its `exit`.
        let len = body.len();
        for (i, insn) in body.iter_mut().enumerate() {
            if insn.code == JMP32_JNE_K {
                insn.off = (len - i - 1) as i16;
            }
        }
        insns.extend(body);
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
        run_access(insns, ACC_READ | ACC_WRITE, block, major, minor)
    }

    /// As `run`, asking for `access` (`ACC_*` bits).
    fn run_access(insns: &[Insn], access: u32, block: bool, major: u32, minor: u32) -> u64 {
        let ctx = [access << 16 | if block { 1 } else { 2 }, major, minor];
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
                ALU32_RSH_K => regs[dst] = u64::from(regs[dst] as u32 >> insn.imm),
                ALU32_MOV_X => regs[dst] = u64::from(regs[src] as u32),
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
    fn every_device_rule_allows_all_and_other_rules_do_not() {
        let every = program_for(&[
            DeviceRule::new('c', 89, 1, DeviceAccess::parse("r").unwrap()),
            DeviceRule::EVERY,
        ]);
        for (block, major, minor) in [(false, 1, 1), (true, 8, 1), (false, 10, 237)] {
            assert_eq!(run(&every, block, major, minor), 1, "{major}:{minor}");
            assert_eq!(run_access(&every, ACC_MKNOD, block, major, minor), 1);
        }
        let narrow = program_for(&[DeviceRule::new('c', 89, 1, DeviceAccess::ALL)]);
        assert_eq!(run(&narrow, false, 89, 1), 1);
        assert_eq!(run(&narrow, false, 10, 237), 0);
    }

    #[test]
    fn program_allows_the_default_and_passed_devices_and_denies_the_rest() {
        // i2c-1 (char 89:1) and a block device 8:0 passed through.
        let insns = program(&allow_list(&[
            DeviceRule::new('c', 89, 1, DeviceAccess::ALL),
            DeviceRule::new('b', 8, 0, DeviceAccess::ALL),
        ]));
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
    fn program_grants_only_the_access_bits_of_each_rule() {
        let access = |text: &str| DeviceAccess::parse(text).unwrap();
        let insns = program(&allow_list(&[
            DeviceRule::new('c', 10, 200, access("r")),
            DeviceRule::new('c', 89, 1, access("rw")),
            DeviceRule::new('c', 89, 2, access("wm")),
            DeviceRule::new('c', 89, 3, DeviceAccess::NONE),
        ]));
        let (r, w, m) = (ACC_READ, ACC_WRITE, ACC_MKNOD);
        let cases = [
            (10, 200, r, 1, "tun: read"),
            (10, 200, w, 0, "tun: write on :r"),
            (10, 200, r | w, 0, "tun: read-write open on :r"),
            (10, 200, m, 0, "tun: mknod without m"),
            (89, 1, r | w, 1, "i2c-1: rw"),
            (89, 1, m, 0, "i2c-1: mknod without m"),
            (89, 2, m, 1, "i2c-2: mknod"),
            (89, 2, w, 1, "i2c-2: write"),
            (89, 2, r, 0, "i2c-2: read without r"),
            (89, 3, r, 0, "i2c-3: granted nothing"),
            (1, 3, r | w, 1, "null keeps rwm"),
            (1, 3, m, 1, "null may be created"),
        ];
        for (major, minor, want_access, want, name) in cases {
            assert_eq!(
                run_access(&insns, want_access, false, major, minor),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn program_matches_pattern_rules_on_the_fields_they_give() {
        let access = |text: &str| DeviceAccess::parse(text).unwrap();
        let insns = program(&allow_list(&[
            DeviceRule::pattern('c', Some(10), None, access("m")),
            DeviceRule::pattern('a', None, None, access("r")),
            DeviceRule::pattern('b', None, Some(0), access("m")),
        ]));
        let (r, w, m) = (ACC_READ, ACC_WRITE, ACC_MKNOD);
        let cases = [
            (false, 10, 229, m, 1, "c 10:*: mknod of fuse"),
            (false, 10, 229, w, 0, "c 10:*: no write"),
            (false, 89, 1, r, 1, "a *:*: read any char"),
            (true, 8, 1, r, 1, "a *:*: read any block"),
            (true, 8, 1, w, 0, "a *:*: no write"),
            (true, 8, 0, m, 1, "b *:0: mknod"),
            (true, 8, 1, m, 0, "b *:0: not minor 1"),
            (false, 89, 0, m, 0, "b *:0: not a char device"),
        ];
        for (block, major, minor, want_access, want, name) in cases {
            assert_eq!(
                run_access(&insns, want_access, block, major, minor),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn access_bits_follow_the_kernels_numbers() {
        assert_eq!(access_bits(DeviceAccess::ALL), 7);
        assert_eq!(access_bits(DeviceAccess::parse("r").unwrap()), 2);
        assert_eq!(access_bits(DeviceAccess::parse("w").unwrap()), 4);
        assert_eq!(access_bits(DeviceAccess::parse("m").unwrap()), 1);
    }

    #[test]
    fn empty_allow_list_denies_everything() {
        let insns = program(&[]);
        assert_eq!(insns.len(), 8);
        assert_eq!(run(&insns, false, 1, 3), 0);
    }

    #[test]
    fn numbers_no_device_can_have_are_left_out() {
        let list = allow_list(&[
            DeviceRule::new('c', 1 << 40, 1, DeviceAccess::ALL),
            DeviceRule::new('c', 4, 1 << 33, DeviceAccess::ALL),
        ]);
        assert_eq!(list.len(), DEFAULT_DEVICES.len());
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        let insns = program(&allow_list(&[
            DeviceRule::new('c', 89, 1, DeviceAccess::parse("r").unwrap()),
            DeviceRule::new('c', 89, 2, DeviceAccess::ALL),
        ]));
        for (pc, insn) in insns.iter().enumerate() {
            if insn.code == JMP32_JNE_K {
                let target = pc as isize + 1 + insn.off as isize;
                assert!(target > pc as isize && (target as usize) < insns.len());
            }
        }
        assert_eq!(insns.last().unwrap().code, JMP_EXIT);
    }
}
