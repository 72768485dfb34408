//! The caller's side of an interactive exec (a remote `coracle exec` session): the same
//! `__exec` helper as health checks, wired for a live session instead of a bounded tail.
//!
//! - stdin, stdout and stderr of the exec'd process are pipes the caller keeps, or with a
//!   terminal one pty master (received from the helper, which opens it inside the
//!   container; see `pty`);
//! - fd 4 of the helper is one end of a socket pair, the *lifeline*: when the caller drops
//!   [`InteractiveExec::lifeline`] (the session ended, or the agent died) the helper kills
//!   the process group it started;
//! - fd 3 is the report pipe, as for every exec: `exit CODE` or `error: …`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::exec::{ExecSpec, EXEC_COMMAND};
use super::id::ContainerId;
use super::{process, RuntimeError};

/// A started interactive exec. Dropping it ends the process (through the lifeline).
#[derive(Debug)]
pub struct InteractiveExec {
    pub helper: Child,
    /// Writes go to the process's stdin (the pty master again with a terminal).
    pub stdin: OwnedFd,
    /// The process's stdout (with a terminal: everything it writes).
    pub stdout: OwnedFd,
    /// The process's stderr; `None` with a terminal.
    pub stderr: Option<OwnedFd>,
    /// The pty master, for window size changes.
    pub pty: Option<OwnedFd>,
    /// The helper's report (`exec::parse_report` reads it once the pipe closes).
    pub report: OwnedFd,
    pub lifeline: OwnedFd,
}

/// Spawns the helper for `spec` (which has `interactive` set) in container `id` at `dir`.
pub(super) fn spawn(
    binary: &Path,
    id: &ContainerId,
    dir: &Path,
    spec: &ExecSpec,
) -> Result<InteractiveExec, RuntimeError> {
    let tty = spec.interactive.and_then(|i| i.tty).is_some();
    if spec.args.is_empty() {
        return Err(RuntimeError::ExecFailed {
            id: id.clone(),
            reason: "no command given".into(),
        });
    }
    let spawn_err = |source: std::io::Error| RuntimeError::SpawnShim {
        binary: binary.to_owned(),
        source,
    };
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let pipe = || nix::unistd::pipe2(cloexec).map_err(|e| spawn_err(e.into()));
    let (report_r, report_w) = pipe()?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| spawn_err(e.into()))?;
    let json = serde_json::to_string(spec).expect("exec spec has only plain fields");
    let mut command = Command::new(binary);
    command.arg(EXEC_COMMAND).arg(dir).arg(json);
    process::pass_fds(&mut command, vec![report_w.as_raw_fd(), theirs.as_raw_fd()]);
    let (stdin, stdout, stderr);
    if tty {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let helper = command.spawn().map_err(spawn_err)?;
        drop((command, report_w, theirs));
        // The helper sends the master once the terminal is open, or closes without.
        let master = super::pty::receive_fd(ours.as_raw_fd()).map_err(|e| spawn_err(e.into()))?;
        let Some(master) = master else {
            return Err(failure(helper, report_r, id));
        };
        stdin = master.try_clone().map_err(spawn_err)?;
        let pty = master.try_clone().map_err(spawn_err)?;
        return Ok(InteractiveExec {
            helper,
            stdin,
            stdout: master,
            stderr: None,
            pty: Some(pty),
            report: report_r,
            lifeline: ours,
        });
    }
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    command.stdin(in_r).stdout(out_w).stderr(err_w);
    let helper = command.spawn().map_err(spawn_err)?;
    // The command and its copies of the child's ends drop here.
    drop((command, report_w, theirs));
    (stdin, stdout, stderr) = (in_w, out_r, Some(err_r));
    Ok(InteractiveExec {
        helper,
        stdin,
        stdout,
        stderr,
        pty: None,
        report: report_r,
        lifeline: ours,
    })
}

/// The helper closed the socket without a terminal: it failed, and its report says why.
fn failure(mut helper: Child, report: OwnedFd, id: &ContainerId) -> RuntimeError {
    use std::io::Read;
    let mut text = String::new();
    let _ = std::fs::File::from(report).read_to_string(&mut text);
    let _ = helper.wait();
    match super::exec::parse_report(id, &text) {
        Err(err) => err,
        Ok((code, _)) => RuntimeError::ExecFailed {
            id: id.clone(),
            reason: format!("the exec helper ended ({code}) without opening a terminal"),
        },
    }
}
