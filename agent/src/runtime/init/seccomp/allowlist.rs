//! The default filter: an allow-list at least as strict as Docker's default seccomp profile
//! (moby `profiles/seccomp/default.json`), written as a [`SeccompProfile`] so it goes through
//! the same resolve and compile steps as an operator's profile.
//!
//! Unlisted calls fail with EPERM. Docker's argument rules are kept: `socket` refuses
//! AF_VSOCK, `personality` takes only the personas Docker allows, `clone` no namespace flag,
//! and `clone3` fails with ENOSYS so libc falls back to `clone` (whose flags a filter can
//! read). Capabilities added to the container unlock the calls Docker ties to them
//! (CAP_SYS_ADMIN → mount, unshare, setns, clone3, ...; CAP_SYS_BOOT → reboot; ...).
//!
//! Stricter than Docker: `io_uring_*` are not allowed (Docker removed them in 2023 as well),
//! and `ptrace`, `process_vm_readv`/`writev` need CAP_SYS_PTRACE (Docker allows them from
//! kernel 4.8 on). Calls of another ABI (32-bit x86 on x86_64, AArch32 on arm64) kill the
//! process instead of being filtered as that ABI.

use coracle_proto::seccomp::{
    ArgCondition, ArgOp, RuleFilter, SeccompAction, SeccompProfile, SyscallRule,
};

/// Allowed for every container. Names an architecture lacks are skipped there.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
    "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid",
    "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit",
    "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area",
    "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set",
    "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64",
    "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore",
    "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2",
    "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap",
    "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2",
    "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
    "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev",
    "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom",
    "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
    "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat",
    "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask",
    "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64",
    "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee",
    "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
    "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
];

/// Allowed only on these architectures (Go names), as in Docker's profile.
const BY_ARCH: &[(&[&str], &[&str])] = &[
    (&["amd64"], &["arch_prctl", "modify_ldt"]),
    (
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
];

/// Allowed when the container holds the capability (Docker's `includes.caps`).
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// The personas `personality` may set: Linux, with ADDR_LIMIT_32BIT (0x8), UNAME26
/// (0x20000), both, and the 0xffffffff query.
const PERSONAS: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

const AF_VSOCK: u64 = 40;
/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
const NAMESPACE_FLAGS: u64 = 0x7e02_0000;
const EPERM: u16 = 1;
const ENOSYS: u16 = 38;

fn rule(names: &[&str], action: SeccompAction) -> SyscallRule {
    SyscallRule {
        names: names.iter().map(|n| n.to_string()).collect(),
        action,
        args: Vec::new(),
        includes: RuleFilter::default(),
        excludes: RuleFilter::default(),
    }
}

fn arg0(op: ArgOp, value: u64, value_two: u64) -> Vec<ArgCondition> {
    vec![ArgCondition {
        index: 0,
        op,
        value,
        value_two,
    }]
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The default profile.
pub fn default_profile() -> SeccompProfile {
    let mut rules = vec![rule(ALLOWED, SeccompAction::Allow)];
    let mut socket = rule(&["socket"], SeccompAction::Allow);
    socket.args = arg0(ArgOp::NotEqual, AF_VSOCK, 0);
    rules.push(socket);
    for &persona in PERSONAS {
        let mut personality = rule(&["personality"], SeccompAction::Allow);
        personality.args = arg0(ArgOp::Equal, persona, 0);
        rules.push(personality);
    }
    for (arches, names) in BY_ARCH {
        let mut by_arch = rule(names, SeccompAction::Allow);
        by_arch.includes.arches = strings(arches);
        rules.push(by_arch);
    }
    for (cap, names) in BY_CAPABILITY {
        let mut by_cap = rule(names, SeccompAction::Allow);
        by_cap.includes.caps = strings(&[cap]);
        rules.push(by_cap);
    }
    // Without CAP_SYS_ADMIN: clone without namespace flags, clone3 "not implemented".
    let mut clone = rule(&["clone"], SeccompAction::Allow);
    clone.args = arg0(ArgOp::MaskedEqual, NAMESPACE_FLAGS, 0);
    clone.excludes.caps = strings(&["CAP_SYS_ADMIN"]);
    rules.push(clone);
    let mut clone3 = rule(&["clone3"], SeccompAction::Errno(ENOSYS));
    clone3.excludes.caps = strings(&["CAP_SYS_ADMIN"]);
    rules.push(clone3);
    SeccompProfile {
        default_action: SeccompAction::Errno(EPERM),
        rules,
    }
}
