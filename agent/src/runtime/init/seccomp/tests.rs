//! Table tests of the default allow-list and of operator profiles on every architecture,
//! through the programs each would install (seccompiler's stack on x86_64 and aarch64, the
//! hand-built program on 32-bit ARM) run by the BPF interpreter, against a plain reading
//! of the resolved rules. No root needed; 32-bit ARM filters are checked on any host (an
//! ARM build checks only its own: it has no seccompiler backend).

use coracle_proto::seccomp::syscalls::{self, Arch};
use coracle_proto::seccomp::{
    ArgCondition, ArgOp, KernelVersion, RuleFilter, SeccompAction, SeccompProfile, SyscallRule,
};
use seccompiler::BpfProgram;

use super::allowlist;
use super::bpf::{self, ret_value};
use super::interpreter::{run_all, Call};
use super::resolve::{resolve, Condition, Resolved, Target};

const ALLOW: u32 = 0x7fff_0000;
const EPERM: u32 = 0x0005_0001;
const ENOSYS: u32 = 0x0005_0026;
const KILL_PROCESS: u32 = 0x8000_0000;

fn audit(arch: Arch) -> u32 {
    match arch {
        Arch::X86_64 => bpf::AUDIT_ARCH_X86_64,
        Arch::Aarch64 => 0xc000_00b7,
        Arch::Arm => bpf::AUDIT_ARCH_ARM,
    }
}

fn target(arch: Arch, caps: &[&str]) -> Target {
    Target {
        arch,
        caps: caps.iter().map(|c| c.to_string()).collect(),
        kernel: KernelVersion { major: 6, minor: 1 },
    }
}

/// The architectures whose programs this build can make.
fn arches() -> &'static [Arch] {
    if cfg!(target_arch = "arm") {
        &[Arch::Arm]
    } else {
        &Arch::ALL
    }
}

/// What the agent built for `arch` would install.
fn programs(arch: Arch, resolved: &Resolved) -> Vec<BpfProgram> {
    #[cfg(not(target_arch = "arm"))]
    use super::compile;
    match arch {
        Arch::Arm => vec![bpf::build(resolved, bpf::AUDIT_ARCH_ARM).unwrap()],
        #[cfg(not(target_arch = "arm"))]
        Arch::Aarch64 => compile::stacked(resolved, seccompiler::TargetArch::aarch64).unwrap(),
        #[cfg(not(target_arch = "arm"))]
        Arch::X86_64 => {
            let mut p = compile::stacked(resolved, seccompiler::TargetArch::x86_64).unwrap();
            p.push(bpf::x32_guard());
            p
        }
        #[cfg(target_arch = "arm")]
        other => panic!("no seccompiler backend for {other} in an ARM build"),
    }
}

fn call(arch: Arch, name: &str, args: [u64; 6]) -> Call {
    let nr = syscalls::number(arch, name).unwrap_or_else(|| panic!("{name} on {arch}"));
    Call {
        nr,
        arch: audit(arch),
        args,
    }
}

fn args(first: u64) -> [u64; 6] {
    [first, 0, 0, 0, 0, 0]
}

#[test]
fn the_default_allow_list_answers_as_docker_on_every_architecture() {
    const NEWNS: u64 = 0x2_0000;
    const SIGCHLD: u64 = 17;
    let admin: &[&str] = &["CAP_SYS_ADMIN"];
    let table: &[(&str, u64, &[&str], u32)] = &[
        ("read", 0, &[], ALLOW),
        ("execve", 0, &[], ALLOW),
        ("io_uring_setup", 0, &[], EPERM),
        ("io_uring_setup", 0, admin, EPERM),
        ("socket", 2, &[], ALLOW),
        ("socket", 1, &[], ALLOW),
        ("socket", 40, &[], EPERM),
        ("personality", 0, &[], ALLOW),
        ("personality", 0x2_0008, &[], ALLOW),
        ("personality", 0xffff_ffff, &[], ALLOW),
        ("personality", 0x4_0000, &[], EPERM), // ADDR_NO_RANDOMIZE
        ("clone", SIGCHLD, &[], ALLOW),
        ("clone", NEWNS | SIGCHLD, &[], EPERM),
        ("clone", NEWNS | SIGCHLD, admin, ALLOW),
        ("clone3", 0, &[], ENOSYS),
        ("clone3", 0, admin, ALLOW),
        ("mount", 0, &[], EPERM),
        ("mount", 0, admin, ALLOW),
        ("unshare", 0, admin, ALLOW),
        ("reboot", 0, admin, EPERM),
        ("reboot", 0, &["CAP_SYS_BOOT"], ALLOW),
        ("ptrace", 0, &[], EPERM),
        ("ptrace", 0, &["CAP_SYS_PTRACE"], ALLOW),
        ("bpf", 0, &["CAP_BPF"], ALLOW),
        ("kexec_load", 0, &["CAP_SYS_BOOT", "CAP_SYS_ADMIN"], EPERM),
        ("init_module", 0, &["CAP_SYS_MODULE"], ALLOW),
    ];
    for &arch in arches() {
        for &(name, first, caps, want) in table {
            let resolved = resolve(&allowlist::default_profile(), &target(arch, caps));
            let got = run_all(&programs(arch, &resolved), &call(arch, name, args(first)));
            assert_eq!(got, want, "{name}({first:#x}) with {caps:?} on {arch}");
        }
    }
}

#[test]
fn the_default_allow_list_keeps_architecture_specific_calls_and_refuses_other_abis() {
    let resolved = |arch| resolve(&allowlist::default_profile(), &target(arch, &[]));
    let verdict =
        |arch, name| run_all(&programs(arch, &resolved(arch)), &call(arch, name, args(0)));
    assert_eq!(verdict(Arch::Arm, "set_tls"), ALLOW);
    assert_eq!(verdict(Arch::Arm, "cacheflush"), ALLOW);
    assert_eq!(verdict(Arch::Arm, "_llseek"), ALLOW);
    for &arch in arches() {
        let mut foreign = call(arch, "read", args(0));
        foreign.arch = 0x4000_0003; // AUDIT_ARCH_I386
        assert_eq!(
            run_all(&programs(arch, &resolved(arch)), &foreign),
            KILL_PROCESS
        );
    }
    if cfg!(target_arch = "arm") {
        return;
    }
    assert_eq!(verdict(Arch::X86_64, "arch_prctl"), ALLOW);
    // A socket domain with high bits the kernel drops is still AF_VSOCK.
    let vsock_high = call(Arch::X86_64, "socket", args(0x1_0000_0028));
    assert_eq!(
        run_all(
            &programs(Arch::X86_64, &resolved(Arch::X86_64)),
            &vsock_high
        ),
        EPERM
    );
}

#[test]
fn the_default_profile_is_valid_and_small_enough_for_the_kernel() {
    let profile = allowlist::default_profile();
    assert_eq!(profile.validate(), Ok(()));
    for &arch in arches() {
        for caps in [&[][..], &["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]] {
            let p = programs(arch, &resolve(&profile, &target(arch, caps)));
            let longest = p.iter().map(Vec::len).max().unwrap();
            assert!(longest < 4096, "{arch}: {longest} instructions");
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_table_agrees_with_libc_on_this_host() {
    for (name, nr) in [
        ("read", libc::SYS_read),
        ("mount", libc::SYS_mount),
        ("clone3", libc::SYS_clone3),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("personality", libc::SYS_personality),
        ("socket", libc::SYS_socket),
        ("arch_prctl", libc::SYS_arch_prctl),
    ] {
        assert_eq!(
            syscalls::number(Arch::X86_64, name),
            Some(nr as u32),
            "{name}"
        );
    }
}

fn rule(
    names: &[&str],
    action: SeccompAction,
    conditions: &[(u8, ArgOp, u64, u64)],
) -> SyscallRule {
    SyscallRule {
        names: names.iter().map(|n| n.to_string()).collect(),
        action,
        args: conditions
            .iter()
            .map(|&(index, op, value, value_two)| ArgCondition {
                index,
                op,
                value,
                value_two,
            })
            .collect(),
        includes: RuleFilter::default(),
        excludes: RuleFilter::default(),
    }
}

/// The plain reading: the strictest matching rule, else the default.
fn reference(resolved: &Resolved, call: &Call) -> u32 {
    let holds = |c: &Condition| {
        let arg = call.args[usize::from(c.index)];
        let arg = if c.low32 { arg & 0xffff_ffff } else { arg };
        match c.op {
            ArgOp::NotEqual => arg != c.value,
            ArgOp::LessThan => arg < c.value,
            ArgOp::LessOrEqual => arg <= c.value,
            ArgOp::Equal => arg == c.value,
            ArgOp::GreaterOrEqual => arg >= c.value,
            ArgOp::GreaterThan => arg > c.value,
            ArgOp::MaskedEqual => arg & c.value == c.value_two,
        }
    };
    let matched = resolved.syscalls.get(&call.nr).and_then(|rules| {
        rules
            .iter()
            .find(|r| r.conditions.iter().all(holds))
            .map(|r| r.action)
    });
    ret_value(matched.unwrap_or(resolved.default))
}

#[test]
fn operator_profiles_mean_the_same_through_every_backend() {
    use ArgOp::*;
    use SeccompAction::*;
    let deny_list = SeccompProfile {
        default_action: Allow,
        rules: vec![
            rule(&["io_uring_setup"], Errno(1), &[]),
            rule(&["socket"], Errno(13), &[(0, Equal, 40, 0)]),
            rule(&["personality"], Trap, &[(0, MaskedEqual, 0xff00, 0x0100)]),
            rule(&["getpid"], Trace(5), &[]),
            rule(&["ptrace"], Log, &[]),
        ],
    };
    let allow_list = SeccompProfile {
        default_action: KillProcess,
        rules: vec![
            rule(&["read", "write", "exit_group"], Allow, &[]),
            rule(&["openat"], Allow, &[(2, LessThan, 0x100, 0)]),
            rule(&["mprotect"], Allow, &[(2, LessOrEqual, 7, 0)]),
            rule(
                &["socket"],
                Allow,
                &[(0, GreaterOrEqual, 1, 0), (1, GreaterThan, 0, 0)],
            ),
            rule(&["close"], Errno(9), &[(0, Equal, 1000, 0)]),
            rule(&["close"], Allow, &[(0, NotEqual, 1000, 0)]),
            rule(&["kill"], Log, &[(1, Equal, 0, 0)]),
        ],
    };
    let names = [
        "read",
        "write",
        "openat",
        "mprotect",
        "socket",
        "close",
        "kill",
        "personality",
        "getpid",
        "ptrace",
        "io_uring_setup",
        "mount",
    ];
    let values = [
        0,
        1,
        2,
        7,
        8,
        0xff,
        0x100,
        40,
        0x0100,
        0x1100,
        1000,
        0xffff_ffff,
    ];
    for profile in [&deny_list, &allow_list] {
        for &arch in arches() {
            let resolved = resolve(profile, &target(arch, &[]));
            let installed = programs(arch, &resolved);
            // On x86_64 also the hand-built program, to hold the ARM builder to seccompiler.
            let hand_built = bpf::build(&resolved, audit(arch)).unwrap();
            for name in names {
                for a in values {
                    for b in [0, 1, 7, 8, 0x100] {
                        let c = call(arch, name, [a, b, b, 0, 0, 0]);
                        let want = reference(&resolved, &c);
                        assert_eq!(
                            run_all(&installed, &c),
                            want,
                            "{name}({a:#x}, {b:#x}) on {arch}"
                        );
                        assert_eq!(
                            run_all(std::slice::from_ref(&hand_built), &c),
                            want,
                            "{name}({a:#x}, {b:#x}) hand-built for {arch}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "arm"))]
#[test]
fn the_x32_abi_cannot_bypass_a_deny_list() {
    let profile = SeccompProfile {
        default_action: SeccompAction::Allow,
        rules: vec![rule(&["socket"], SeccompAction::Errno(1), &[])],
    };
    let resolved = resolve(&profile, &target(Arch::X86_64, &[]));
    let mut x32 = call(Arch::X86_64, "socket", args(2));
    x32.nr |= 0x4000_0000;
    assert_eq!(
        run_all(&programs(Arch::X86_64, &resolved), &x32),
        KILL_PROCESS
    );
}
