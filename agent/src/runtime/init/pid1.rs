//! The container's own init for `init: true` (what tini is to Docker): the container's
//! first process stays PID 1, forks the service's program and then only forwards signals
//! to it and reaps. A shell or a server run as PID 1 ignores SIGTERM (the kernel gives PID
//! 1 no default actions) and never reaps the orphans its children leave; as PID 1's child
//! it gets SIGTERM's default action, and orphans come to this loop, which reaps them.
//!
//! It runs after the container's setup, so under the container's user, capabilities and
//! seccomp filter: it uses only calls the default allow-list grants (rt_sigprocmask,
//! clone without namespace flags, rt_sigtimedwait, wait4, kill, exit_group). It exits
//! with the program's status (128 + signal when the program was killed); PID 1 exiting
//! ends every other process of the container.

use std::fs::File;
use std::io::Write;

use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::InitError;
use crate::runtime::process;

/// Signals that are about the init itself (faults, or not catchable): never blocked.
const OWN_SIGNALS: [Signal; 9] = [
    Signal::SIGKILL,
    Signal::SIGSTOP,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGABRT,
    Signal::SIGSYS,
];

/// Every standard signal but `OWN_SIGNALS`: SIGCHLD to reap, the rest to forward.
fn waited_signals() -> SigSet {
    let mut set = SigSet::all();
    for signal in OWN_SIGNALS {
        set.remove(signal);
    }
    set
}

/// Forks `exec` (which must only return its error) and becomes its init; never returns.
/// The child reports an exec failure on `report` as the init itself would; this process
/// closes its copies of the report pipe at once, so the shim sees EOF when the child has
/// exec'd.
pub fn run(report: &mut File, exec: impl FnOnce() -> InitError) -> ! {
    let waited = waited_signals();
    // Blocked before the fork, so no signal is lost between fork and the wait loop; the
    // child unblocks them before exec.
    if let Err(err) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), None) {
        fail(report, &InitError::Signals(err));
    }
    let proof = process::init_is_single_threaded();
    let child = process::fork_child(&proof, || {
        let err = match process::reset_signals() {
            Ok(()) => exec(),
            Err(err) => InitError::Signals(err),
        };
        let _ = write!(report, "E{}", crate::runtime::error_chain(&err));
        127
    });
    let child = match child {
        Ok(pid) => pid,
        Err(err) => fail(report, &InitError::Fork(err)),
    };
    // Every descriptor above stdio goes: the report pipe (and the shim's own copy of it,
    // inherited at clone) would hide the child's exec from the shim, which waits for the
    // close-on-exec EOF, and the init needs nothing else.
    process::close_from(3);
    loop {
        match waited.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap(child) {
                    process::exit_now(code);
                }
            }
            Ok(signal) => {
                // The child may be gone already; its exit comes with the next SIGCHLD.
                let _ = kill(child, signal);
            }
            Err(_) => {}
        }
    }
}

/// Reaps every exited child; the exit code to end with once `child` is among them.
fn reap(child: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, status)) if pid == child => code = Some(status),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                code = Some(128 + signal as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(_) => {}
        }
    }
}

/// Reports `err` to the shim and ends the init.
fn fail(report: &mut File, err: &InitError) -> ! {
    let _ = write!(report, "E{}", crate::runtime::error_chain(err));
    process::exit_now(1)
}
