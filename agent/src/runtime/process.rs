//! The process boundary, one of the runtime's few files with `unsafe` (with `mount_api` and
//! `cgroups::bpf`): clone into new namespaces, fork, exec, signal dispositions, fd plumbing
//! for the shim's report pipe, pidfds, and the loopback ioctl. Everything here is a thin
//! wrapper; the decisions live in `init` and `shim`.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;

/// Stack for the cloned init: it runs setup code (seccomp compile, mount parsing) before
/// exec. Untouched pages of it cost nothing.
const INIT_STACK_BYTES: usize = 1 << 20;

/// Runs `init` in a child created with `flags` (new namespaces). The caller must be single
/// threaded (the shim is), which is what makes running arbitrary code in the child sound.
pub fn clone_init(flags: CloneFlags, init: impl FnMut() -> isize) -> Result<Pid, Errno> {
    let mut stack = vec![0u8; INIT_STACK_BYTES];
    // SAFETY: without CLONE_VM the child gets a copy-on-write copy of this single-threaded
    // process, so `init` cannot race with anything; the stack outlives the call in the
    // parent and is the child's own copy in the child.
    unsafe { nix::sched::clone(Box::new(init), &mut stack, flags, Some(libc::SIGCHLD)) }
}

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Like [`clone_init`], but the child is born in the cgroup v2 directory `cgroup`
/// (`clone3` with `CLONE_INTO_CGROUP`, Linux >= 5.7), so nobody has to move it there: a
/// move takes the cgroup threadgroup lock for writing, which costs an RCU grace period.
/// Fails with ENOSYS or E2BIG on older kernels; the caller then clones and moves.
pub fn clone_init_into_cgroup(
    flags: CloneFlags,
    cgroup: BorrowedFd<'_>,
    mut init: impl FnMut() -> isize,
) -> Result<Pid, Errno> {
    let args = CloneArgs {
        // Through u32: the flags are a C int, and CLONE_IO would sign-extend.
        flags: u64::from(flags.bits() as u32) | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed. Without CLONE_VM and with
    // no stack given, clone3 behaves like fork: the child runs on its own copy-on-write
    // copy of this single-threaded process (the shim), so `init` races with nothing, and
    // it never returns into the caller's frames but ends in `_exit`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match Errno::result(ret)? {
        0 => {
            let code = init();
            // SAFETY: _exit ends the child at once, skipping the parent's atexit handlers.
            unsafe { libc::_exit(code as libc::c_int) }
        }
        pid => Ok(Pid::from_raw(pid as libc::pid_t)),
    }
}

/// Proof that this process had a single thread when it was checked. Whoever holds it must
/// not start threads afterwards (the exec helper checks before its root changes, when
/// `/proc/self` stops being its own).
#[derive(Debug)]
pub struct SingleThreaded(());

/// `Some` when this process has exactly one thread.
pub fn single_threaded() -> Option<SingleThreaded> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .any(|l| l.split_whitespace().eq(["Threads:", "1"]))
        .then_some(SingleThreaded(()))
}

/// The container's init (between clone and exec) is single threaded by construction: the
/// shim that clones it is, and a clone without CLONE_THREAD starts with one thread. The
/// init cannot prove it through /proc, which a bundle need not mount.
pub fn init_is_single_threaded() -> SingleThreaded {
    SingleThreaded(())
}

/// Forks a child that runs `child` and exits with its code; returns the child's pid, or
/// `None` (nothing done) when this process has more than one thread: a forked copy of a
/// multi-threaded process may inherit locks held by threads that do not exist in it.
pub fn fork_single_threaded(child: impl FnOnce() -> i32) -> Result<Option<Pid>, Errno> {
    match single_threaded() {
        Some(proof) => fork_child(&proof, child).map(Some),
        None => Ok(None),
    }
}

/// Forks a child that runs `child` and exits with its code.
pub fn fork_child(_proof: &SingleThreaded, child: impl FnOnce() -> i32) -> Result<Pid, Errno> {
    // SAFETY: the process is single threaded (the proof), so the child is a complete
    // copy of it and may run any code; it never returns into the caller's frames but ends
    // in `_exit`, which skips atexit handlers and stdio buffers that belong to the parent.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            let code = child();
            // SAFETY: _exit ends the process at once; nothing of the parent's runs after.
            unsafe { libc::_exit(code) }
        }
    }
}

/// Closes every descriptor from `first` up (close_range, Linux >= 5.9; one close per
/// descriptor up to the soft limit before that).
pub fn close_from(first: u32) {
    // SAFETY: close_range only closes descriptors; callers own every descriptor from
    // `first` up and hold no Rust object that uses one afterwards.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if closed == 0 {
        return;
    }
    // rlim_t is 32 bits on armv7 and 64 on aarch64: convert both ends to a descriptor.
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .and_then(|(soft, _)| i32::try_from(soft.min(1 << 16)).ok())
        .unwrap_or(1024);
    let Ok(first) = i32::try_from(first) else {
        return;
    };
    for fd in first..limit {
        let _ = nix::unistd::close(fd);
    }
}

/// Ends this process at once with `code`, running nothing of the Rust runtime's exit path
/// (the container's init is a clone of the shim and owns none of its buffers).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process at once; no code of this process runs after it.
    unsafe { libc::_exit(code) }
}

/// Starts a new session for the shim, so no terminal or process-group signal meant for the
/// agent (Ctrl-C, a service manager stopping the agent's group) reaches it. The shim stays
/// the agent's child until the agent dies; then it belongs to init, which reaps it.
pub fn new_session() -> Result<(), Errno> {
    nix::unistd::setsid().map(|_| ())
}

/// Makes `fd` (from the parent) appear as fd 3 in the spawned command.
pub fn pass_fd_as_3(command: &mut Command, fd: RawFd) {
    // SAFETY: dup2 is async-signal-safe and allocates nothing, as pre_exec requires; `fd`
    // stays open in the parent until after spawn returns.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                // dup2 onto itself would keep CLOEXEC set.
                nix::fcntl::fcntl(
                    3,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            } else {
                nix::unistd::dup2(fd, 3)?;
            }
            Ok(())
        })
    };
}

/// Makes `fds` (from the parent) appear as fds 3, 4, … in the spawned command. Each is
/// first copied above the targets, so a source that happens to be 3 or 4 is not clobbered.
pub fn pass_fds(command: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: fcntl(F_DUPFD) and dup2 are async-signal-safe and allocate nothing (the vector
    // is only read), as pre_exec requires; the fds stay open in the parent until after
    // spawn returns.
    unsafe {
        command.pre_exec(move || {
            let mut high = [0; 8];
            for (slot, fd) in high.iter_mut().zip(&fds) {
                *slot = nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(16))?;
            }
            for (target, fd) in (3..).zip(high.iter().take(fds.len())) {
                nix::unistd::dup2(*fd, target)?;
            }
            Ok(())
        })
    };
}

/// Makes the spawned command enter the namespaces `fds` (opened `/proc/PID/ns/*` files,
/// mount first) before it execs, so its program resolves and runs inside them.
pub fn enter_namespaces_before_exec(
    command: &mut Command,
    fds: Vec<(std::os::fd::OwnedFd, CloneFlags)>,
) {
    // SAFETY: setns is a plain syscall, async-signal-safe, and allocates nothing, as
    // pre_exec requires; the closure owns the fds, which stay open until spawn returns.
    unsafe {
        command.pre_exec(move || {
            for (fd, flag) in &fds {
                nix::sched::setns(fd, *flag)?;
            }
            Ok(())
        })
    };
}

/// Takes over fd `fd` passed by [`pass_fds`], close-on-exec; `None` when it is not open.
pub fn take_fd(fd: RawFd) -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .ok()?;
    // SAFETY: `fd` is open (checked above) and, by the helper's calling convention, belongs
    // to nothing else in this process, so this File is its only owner.
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Restores default signal handling for the container: the shim's Rust runtime ignores
/// SIGPIPE, and an ignored disposition would survive exec.
pub fn reset_signals() -> Result<(), Errno> {
    // SAFETY: installing SIG_DFL runs no handler code; the process is single threaded.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) }?;
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// Installs a classic BPF seccomp filter with seccomp(2), without the no_new_privs that
/// seccompiler's `apply_filter` sets: the caller must hold CAP_SYS_ADMIN.
pub fn install_seccomp_filter(filter: &[seccompiler::sock_filter]) -> Result<(), Errno> {
    let len = u16::try_from(filter.len()).map_err(|_| Errno::EINVAL)?;
    let program = libc::sock_fprog {
        len,
        // seccompiler's sock_filter is the kernel's struct (u16, u8, u8, u32), as libc's.
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `program` points at `len` valid instructions that outlive the call; the
    // kernel copies them and keeps no pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &program as *const libc::sock_fprog,
        )
    };
    Errno::result(ret).map(|_| ())
}

/// Replaces this process with `path`; returns only on failure.
pub fn exec(path: &CString, args: &[CString], env: &[CString]) -> Result<Infallible, Errno> {
    nix::unistd::execve(path, args, env)
}

// ioctl's request is an int on musl and an unsigned long on glibc.
#[cfg(target_env = "musl")]
type IoctlRequest = libc::c_int;
#[cfg(not(target_env = "musl"))]
type IoctlRequest = libc::c_ulong;
const IOCTL_GET_FLAGS: IoctlRequest = libc::SIOCGIFFLAGS as IoctlRequest;
const IOCTL_SET_FLAGS: IoctlRequest = libc::SIOCSIFFLAGS as IoctlRequest;

/// Sets IFF_UP on `lo` in the current (fresh) network namespace.
pub fn bring_up_loopback() -> Result<(), Errno> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; SIOCGIFFLAGS fills ifru_flags.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), IOCTL_GET_FLAGS, &mut req) })?;
    // SAFETY: ifru_flags is the union member SIOCGIFFLAGS just wrote.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: same valid ifreq, now with IFF_UP set.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), IOCTL_SET_FLAGS, &req) })?;
    Ok(())
}

/// Takes ownership of fd 3, the report pipe [`pass_fd_as_3`] gave the shim.
pub fn take_fd_3() -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    // Close-on-exec, so the container never inherits the agent's report pipe.
    nix::fcntl::fcntl(
        3,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .ok()?;
    // SAFETY: fd 3 is open (checked above) and, by the shim's calling convention, belongs to
    // nothing else in this process, so this File is its only owner.
    Some(unsafe { std::fs::File::from_raw_fd(3) })
}

/// A pidfd for `pid` (Linux >= 5.3): readable once the process has exited.
pub fn pidfd_open(pid: Pid) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain integer arguments; the result is a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = Errno::result(ret)? as RawFd;
    // SAFETY: pidfd_open returned a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Drops this process's page-table entries for read-only, never-written file mappings (the
/// agent binary's code, libc): the pages stay in the page cache, shared with the agent and
/// other shims, and are faulted back in only where the shim runs again. A shim spends its
/// life blocked in one or two calls, so its resident set shrinks to what those touch.
/// Mappings holding any private (copied-on-write) page are left alone: their content is
/// not the file's.
pub fn release_clean_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    // Collected first and released in one tight loop afterwards: code that runs after a
    // release maps its pages back (64 KiB at a time, by fault-around), so the parsing must
    // not run in between.
    let mut releasable = Vec::with_capacity(64);
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let perms = fields.next().unwrap_or("");
            let inode = fields.nth(2).unwrap_or("0");
            let parsed = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            );
            candidate = match parsed {
                (Ok(start), Ok(end)) if inode != "0" && !perms.contains('w') => Some((start, end)),
                _ => None,
            };
        } else if first == "Anonymous:" {
            let anonymous_kb = fields.next().unwrap_or("1");
            if let (Some(range), "0") = (candidate.take(), anonymous_kb) {
                releasable.push(range);
            }
        }
    }
    drop(smaps);
    for (start, end) in releasable {
        // SAFETY: [start, end) is a whole mapping of this process, read-only and
        // file-backed with no private page (checked above), so MADV_DONTNEED only
        // unmaps page-cache pages that the next access maps again unchanged.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}
