//! Running one OCI hook: the program with its own argv and environment, the container's
//! state JSON on stdin, killed when its timeout passes; createContainer hooks inside the
//! container's namespaces. Shared by the OCI command line
//! (`oci::hooks`, in the runtime's namespaces) and the container's init (startContainer
//! hooks, inside the container), so it spawns with std's `Command` and waits on a pidfd.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::process;
use super::spec::Hook;

/// Failures of one hook, naming its path.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("open namespace {path} for a hook")]
    OpenNamespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("start hook {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("wait for hook {path}")]
    Wait {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hook {path} did not finish within its timeout of {timeout_secs} s")]
    Timeout { path: PathBuf, timeout_secs: u32 },
    #[error("hook {path} failed: {status}")]
    Failed { path: PathBuf, status: String },
}

/// Runs `hook` with `state` on its stdin and waits for it; a non-zero exit is an error.
pub fn run(hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    run_with(hook, state, Command::new(&hook.path))
}

/// As [`run`], inside the mount, uts, ipc and network namespaces of process `pid` (the
/// container's init): OCI's createContainer hooks.
pub fn run_in_namespaces_of(pid: i32, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    use nix::sched::CloneFlags;
    let mut fds = Vec::new();
    for (name, flag) in [
        ("mnt", CloneFlags::CLONE_NEWNS),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("net", CloneFlags::CLONE_NEWNET),
    ] {
        let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let file = std::fs::File::open(&path).map_err(|source| HookError::OpenNamespace {
            path: path.clone(),
            source,
        })?;
        fds.push((file.into(), flag));
    }
    let mut command = Command::new(&hook.path);
    process::enter_namespaces_before_exec(&mut command, fds);
    run_with(hook, state, command)
}

fn run_with(hook: &Hook, state: &[u8], mut command: Command) -> Result<(), HookError> {
    let path = hook.path.clone();
    if let Some((argv0, rest)) = hook.args.split_first() {
        command.arg0(argv0).args(rest);
    }
    command.env_clear().stdin(Stdio::piped());
    for entry in &hook.env {
        if let Some((key, value)) = entry.split_once('=') {
            command.env(key, value);
        }
    }
    let mut child = command.spawn().map_err(|source| HookError::Spawn {
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that exits without reading its stdin is no failure (EPIPE is ignored).
        let _ = stdin.write_all(state);
    }
    let wait_err = |source| HookError::Wait {
        path: path.clone(),
        source,
    };
    if let Some(timeout_secs) = hook.timeout_secs {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let pidfd = process::pidfd_open(pid).map_err(|e| wait_err(e.into()))?;
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let millis = u64::from(timeout_secs) * 1000;
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout).map_err(|e| wait_err(e.into()))? == 0 {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout { path, timeout_secs });
        }
    }
    let status = child.wait().map_err(wait_err)?;
    if status.success() {
        return Ok(());
    }
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    };
    Err(HookError::Failed { path, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout_secs: Option<u32>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["GREETING=hi".into()],
            timeout_secs,
        }
    }

    #[test]
    fn hook_reads_the_state_on_stdin_with_its_own_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("read -r line; echo \"$GREETING $line\" > {}", out.display());
        run(&hook(&script, Some(10)), b"{\"id\":\"x\"}\n").unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "hi {\"id\":\"x\"}\n");
    }

    #[test]
    fn hook_failure_and_timeout_are_errors_naming_the_path() {
        let err = run(&hook("exit 3", None), b"").unwrap_err();
        assert!(err.to_string().contains("/bin/sh") && err.to_string().contains("exit code 3"));
        let err = run(&hook("sleep 5", Some(0)), b"").unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }), "{err}");
    }
}
