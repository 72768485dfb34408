//! Exec into a running container: the agent binary re-executed as
//! `coracle-agent __exec DIR SPEC_JSON` (like the shim, single threaded, no clap, no
//! tracing). The helper joins the container's cgroups, opens the container's namespaces
//! and root through `/proc/PID/…` (the init's pid, start time checked before and after),
//! enters them (mnt last of the non-user ones, then `fchdir` + `chroot(".")`, the user
//! namespace after all others so a host or joined network namespace can still be
//! entered), forks — the child is the one really inside the pid namespace — and the child
//! applies the container's process settings with the same helpers as the init (rlimits,
//! user, bounding/effective/permitted caps, no_new_privs, seccomp, env, cwd) and execs.
//! The helper waits for it with the timeout and, when it expires, SIGKILLs the child's
//! process group (the child starts its own session), never the container.
//!
//! Reporting: stdout and stderr of the exec'd process are one pipe the caller reads
//! (bounded, see [`OUTPUT_LIMIT`]); the helper reports on fd 3 one line: `exit CODE`,
//! `timeout CODE`, or `error: MESSAGE` (a setup step failed, before or after the fork).

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::process::{Command, Stdio as ProcessStdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::cgroups::ContainerCgroup;
use super::error_chain;
use super::id::ContainerId;
use super::init::{self, capabilities, rlimits, seccomp, user, InitError};
use super::process;
use super::shim::{ShimInput, INPUT_FILE};
use super::state::{pid_start_time, ContainerState, Status};
use super::RuntimeError;

/// The hidden subcommand that turns the agent binary into an exec helper.
pub const EXEC_COMMAND: &str = "__exec";
/// Output kept from an exec'd process: the last 4 KiB of stdout and stderr together, like
/// Docker's health log entries.
pub const OUTPUT_LIMIT: usize = 4096;
/// How long the caller waits beyond the timeout for the helper's report before it kills
/// the helper itself (the helper enforces the timeout; this only bounds a stuck helper).
const HELPER_GRACE: Duration = Duration::from_secs(5);
/// After the helper reported, how long output still in flight is waited for (a process
/// left in the background may hold the pipe open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(100);

/// What to run in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// argv; `args[0]` is looked up in the container's `PATH` when it has no '/'.
    pub args: Vec<String>,
    /// `NAME=value` entries added to (or replacing those of) the container's environment.
    pub env: Vec<String>,
    /// The process (and its process group) is SIGKILLed after this long.
    pub timeout: Duration,
    /// A remote session's exec (`exec_session`): stdin and a lifeline on fd 4, optionally
    /// a terminal. `None`: a health check or the local socket's exec.
    #[serde(default)]
    pub interactive: Option<Interactive>,
}

/// How an interactive exec is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interactive {
    /// A pseudo-terminal of (rows, cols), opened in the container; else plain pipes.
    pub tty: Option<(u16, u16)>,
}

impl ExecSpec {
    pub fn new(args: Vec<String>, timeout: Duration) -> Self {
        Self {
            args,
            env: Vec::new(),
            timeout,
            interactive: None,
        }
    }
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Shell-style: the exit status, or 128 + signal (137 after a timeout).
    pub exit_code: i32,
    /// The last [`OUTPUT_LIMIT`] bytes of stdout and stderr, interleaved as written.
    pub output: String,
    pub timed_out: bool,
}

/// The environment of the exec'd process: the container's, with `extra` entries replacing
/// those of the same name and the rest appended.
pub fn merge_env(container: &[String], extra: &[String]) -> Vec<String> {
    let name = |e: &str| e.split_once('=').map_or(e, |(n, _)| n).to_owned();
    let mut env: Vec<String> = container
        .iter()
        .filter(|e| !extra.iter().any(|x| name(x) == name(e)))
        .cloned()
        .collect();
    env.extend(extra.iter().cloned());
    env
}

/// Parses the helper's report line.
pub(super) fn parse_report(id: &ContainerId, report: &str) -> Result<(i32, bool), RuntimeError> {
    let line = report.lines().next().unwrap_or("").trim_end();
    let failed = |reason: String| RuntimeError::ExecFailed {
        id: id.clone(),
        reason,
    };
    if let Some(message) = line.strip_prefix("error: ") {
        return Err(failed(message.to_owned()));
    }
    let (kind, code) = line.split_once(' ').unwrap_or((line, ""));
    match (kind, code.parse::<i32>()) {
        ("exit", Ok(code)) => Ok((code, false)),
        ("timeout", Ok(code)) => Ok((code, true)),
        _ if line.is_empty() => Err(failed("the exec helper exited without a report".into())),
        _ => Err(failed(format!("unexpected report {line:?}"))),
    }
}

/// Keeps the last `limit` bytes of everything pushed.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    limit: usize,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > 2 * self.limit {
            self.bytes.drain(..self.bytes.len() - self.limit);
        }
    }

    fn into_string(mut self) -> String {
        if self.bytes.len() > self.limit {
            self.bytes.drain(..self.bytes.len() - self.limit);
        }
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// The caller's side (`LinuxRuntime::exec`): spawns the helper for the container in `dir`
/// and collects its output and report. `state` was read just before and is running.
pub(super) fn run(
    binary: &Path,
    id: &ContainerId,
    dir: &Path,
    spec: &ExecSpec,
) -> Result<ExecOutcome, RuntimeError> {
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
    let (out_r, out_w) = nix::unistd::pipe2(cloexec).map_err(|e| spawn_err(e.into()))?;
    let (report_r, report_w) = nix::unistd::pipe2(cloexec).map_err(|e| spawn_err(e.into()))?;
    let json = serde_json::to_string(spec).expect("exec spec has only plain fields");
    let mut helper = {
        let mut command = Command::new(binary);
        command
            .arg(EXEC_COMMAND)
            .arg(dir)
            .arg(json)
            .stdin(ProcessStdio::null())
            .stdout(out_w.try_clone().map_err(spawn_err)?)
            .stderr(out_w);
        process::pass_fd_as_3(&mut command, report_w.as_raw_fd());
        command.spawn().map_err(spawn_err)?
        // The command and its copies of the write ends drop here.
    };
    drop(report_w);
    let deadline = Instant::now() + spec.timeout + HELPER_GRACE;
    let mut output = Tail {
        bytes: Vec::new(),
        limit: OUTPUT_LIMIT,
    };
    let mut report = Vec::new();
    let (mut out, mut rep) = (File::from(out_r), File::from(report_r));
    let mut out_open = true;
    let mut buf = [0u8; 4096];
    let mut helper_lost = false;
    // Until the report pipe closes (the helper and its child are gone or exec'd).
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            helper_lost = true;
            break;
        }
        let mut fds = vec![PollFd::new(rep.as_fd(), PollFlags::POLLIN)];
        if out_open {
            fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(spawn_err(e.into())),
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let (rep_ready, out_ready) = (ready(&fds[0]), out_open && ready(&fds[1]));
        drop(fds);
        if out_ready {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => output.push(&buf[..n]),
            }
        }
        if rep_ready {
            match rep.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => report.extend_from_slice(&buf[..n]),
            }
        }
    }
    if helper_lost {
        // The helper itself hangs (it enforces the timeout; this should not happen).
        let _ = helper.kill();
    }
    let _ = helper.wait();
    // Output still in the pipe; a background process may keep it open, so not for long.
    let drain_until = Instant::now() + DRAIN_AFTER_EXIT;
    while out_open {
        let left = drain_until.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if left.is_zero() || !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
            break;
        }
        match out.read(&mut buf) {
            Ok(0) | Err(_) => out_open = false,
            Ok(n) => output.push(&buf[..n]),
        }
    }
    if helper_lost {
        return Ok(ExecOutcome {
            exit_code: 137,
            output: output.into_string(),
            timed_out: true,
        });
    }
    let (exit_code, timed_out) = parse_report(id, &String::from_utf8_lossy(&report))?;
    Ok(ExecOutcome {
        exit_code,
        output: output.into_string(),
        timed_out,
    })
}

/// Failures of the helper, named after its steps; reported as `error: …` on fd 3.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("parse exec spec")]
    ParseSpec(#[source] serde_json::Error),
    #[error(transparent)]
    State(#[from] super::state::StateError),
    #[error("read container config {path}")]
    ReadInput {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse container config {path}")]
    ParseInput {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("container is {status:?}, not running")]
    NotRunning { status: Status },
    #[error("the container's init (pid {pid}) is gone")]
    InitGone { pid: i32 },
    #[error("open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] super::cgroups::CgroupError),
    #[error("enter the container's {kind} namespace")]
    Setns {
        kind: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("change root to the container's")]
    Chroot(#[source] nix::Error),
    #[error(transparent)]
    UserNs(#[from] super::userns::UserNsError),
    #[error("fork into the pid namespace")]
    Fork(#[source] nix::Error),
    #[error("the exec helper is not single threaded")]
    Threads,
    #[error("wait for the exec'd process")]
    Wait(#[source] nix::Error),
    #[error("start a new session")]
    Session(#[source] nix::Error),
    #[error(transparent)]
    Init(#[from] InitError),
    #[error("open a terminal in the container")]
    Pty(#[source] nix::Error),
    #[error("attach the terminal {path}")]
    AttachPty {
        path: String,
        #[source]
        source: nix::Error,
    },
}

/// Entry point of `coracle-agent __exec DIR SPEC_JSON`; returns the helper's exit code.
pub fn main(dir: &Path, spec_json: &str) -> i32 {
    let Some(mut report) = process::take_fd_3() else {
        return 125;
    };
    // An interactive exec's lifeline: the agent's end closing means the session is over.
    let lifeline = process::take_fd(4);
    let result = serde_json::from_str::<ExecSpec>(spec_json)
        .map_err(ExecError::ParseSpec)
        .and_then(|spec| helper(dir, &spec, &report, lifeline.as_ref()));
    let line = match result {
        Ok((code, false)) => format!("exit {code}\n"),
        Ok((code, true)) => format!("timeout {code}\n"),
        Err(err) => format!("error: {}\n", error_chain(&err)),
    };
    let _ = report.write_all(line.as_bytes());
    0
}

/// Namespaces entered, in order; the user namespace comes after all of them (see the
/// module note), mnt last of these so `/proc/PID/…` paths work until then.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn open(path: String) -> Result<File, ExecError> {
    File::open(&path).map_err(|source| ExecError::Open { path, source })
}

/// Whether `ns` is the namespace this process is already in (entering one's own user
/// namespace is an error; for the others it is skipped as pointless).
fn same_namespace(ns: &File, kind: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (ns.metadata(), fs::metadata(format!("/proc/self/ns/{kind}"))) {
        (Ok(theirs), Ok(ours)) => theirs.ino() == ours.ino() && theirs.dev() == ours.dev(),
        _ => false,
    }
}

fn helper(
    dir: &Path,
    spec: &ExecSpec,
    report: &File,
    lifeline: Option<&File>,
) -> Result<(i32, bool), ExecError> {
    // 1. The container: running, its init alive, its spec.
    let state = ContainerState::load(dir)?;
    if state.status != Status::Running {
        return Err(ExecError::NotRunning {
            status: state.status,
        });
    }
    let alive = || pid_start_time(state.pid) == Some(state.pid_start_time);
    if !alive() {
        return Err(ExecError::InitGone { pid: state.pid });
    }
    let input_path = dir.join(INPUT_FILE);
    let input = fs::read(&input_path).map_err(|source| ExecError::ReadInput {
        path: input_path.clone(),
        source,
    })?;
    let input: ShimInput =
        serde_json::from_slice(&input).map_err(|source| ExecError::ParseInput {
            path: input_path,
            source,
        })?;
    // 2. Open everything of the init's first, then check it is still the same process.
    let pid = state.pid;
    let namespaces = NAMESPACES
        .iter()
        .map(|(kind, flag)| Ok((*kind, *flag, open(format!("/proc/{pid}/ns/{kind}"))?)))
        .collect::<Result<Vec<_>, ExecError>>()?;
    let userns = open(format!("/proc/{pid}/ns/user"))?;
    let root = open(format!("/proc/{pid}/root"))?;
    if !alive() {
        return Err(ExecError::InitGone { pid });
    }
    let single = process::single_threaded().ok_or(ExecError::Threads)?;
    // 3. The container's cgroups (host paths: before the mount namespace changes).
    let cgroup = ContainerCgroup::from_paths(state.cgroup_version, &state.cgroup_paths);
    match cgroup.self_join_files() {
        Some(tasks) => super::cgroups::join_self(&tasks)?,
        None => cgroup.join(std::process::id() as i32)?,
    }
    // 4. Namespaces, then the container's root. Compared with ours while `/proc/self` is
    //    still this process (in the container's /proc it is not).
    let enter_user = input.spec.user_namespace.is_some() && !same_namespace(&userns, "user");
    for (kind, flag, ns) in &namespaces {
        if !same_namespace(ns, kind) {
            nix::sched::setns(ns, *flag).map_err(|source| ExecError::Setns { kind, source })?;
        }
    }
    nix::unistd::fchdir(root.as_raw_fd()).map_err(ExecError::Chroot)?;
    nix::unistd::chroot(".").map_err(ExecError::Chroot)?;
    drop(root);
    if enter_user {
        nix::sched::setns(&userns, CloneFlags::CLONE_NEWUSER).map_err(|source| {
            ExecError::Setns {
                kind: "user",
                source,
            }
        })?;
        super::userns::become_root()?;
    }
    drop(userns);
    drop(namespaces);
    // 4b. `exec -t`: a terminal of the container's own devpts; the master goes to the agent.
    let tty = match (spec.interactive.and_then(|i| i.tty), lifeline) {
        (Some((rows, cols)), Some(lifeline)) => {
            let (master, path) = super::pty::open_pair().map_err(ExecError::Pty)?;
            super::pty::resize(master.as_fd(), rows, cols).map_err(ExecError::Pty)?;
            super::pty::send_fd(lifeline.as_raw_fd(), master.as_raw_fd())
                .map_err(ExecError::Pty)?;
            Some(path)
        }
        _ => None,
    };
    // 5. Fork: only a child is inside the pid namespace.
    let child = process::fork_child(&single, || {
        let err = child_exec(&input, spec, tty.as_deref());
        let _ = writeln!(&*report, "error: {}", error_chain(&err));
        127
    })
    .map_err(ExecError::Fork)?;
    // 6. Wait, within the timeout; then kill the child's process group.
    let pidfd = process::pidfd_open(child).map_err(ExecError::Wait)?;
    let deadline = Instant::now() + spec.timeout;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            // The child made itself a process-group leader; before that, only it exists.
            let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
            let _ = kill(child, Signal::SIGKILL);
            break;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if let Some(lifeline) = lifeline {
            fds.push(PollFd::new(lifeline.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_)
                if fds
                    .get(1)
                    .is_some_and(|f| f.revents().is_some_and(|r| !r.is_empty())) =>
            {
                // The session ended (or the agent died): the process goes with it.
                timed_out = true;
                let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
                let _ = kill(child, Signal::SIGKILL);
                break;
            }
            Ok(_) => break,
            Err(e) => return Err(ExecError::Wait(e)),
        }
    }
    let code = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ExecError::Wait(e)),
        }
    };
    if timed_out {
        // What else of the group is left (the child died first) goes too.
        let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
    }
    Ok((code, timed_out))
}

/// The forked child, inside every namespace: the container's process settings, then exec.
/// Returns only the error that stopped it.
fn child_exec(input: &ShimInput, exec: &ExecSpec, tty: Option<&str>) -> ExecError {
    match child_setup_and_exec(input, exec, tty) {
        Ok(never) => match never {},
        Err(err) => err,
    }
}

fn child_setup_and_exec(
    input: &ShimInput,
    exec: &ExecSpec,
    tty: Option<&str>,
) -> Result<std::convert::Infallible, ExecError> {
    let spec = &input.spec;
    // Its own session and process group, so a timeout kills what it started too.
    nix::unistd::setsid().map_err(ExecError::Session)?;
    if let Some(path) = tty {
        attach_terminal(path).map_err(|source| ExecError::AttachPty {
            path: path.to_owned(),
            source,
        })?;
    }
    rlimits::apply(&spec.process.rlimits).map_err(InitError::from)?;
    let ids = user::resolve_in_container(&spec.process.user, &spec.process.group_add)
        .map_err(InitError::from)?;
    let caps = capabilities::plan(&spec.process).map_err(InitError::from)?;
    let filters = seccomp::filters(spec, &caps.bounding).map_err(InitError::from)?;
    let cwd = &spec.process.cwd;
    nix::unistd::chdir(cwd.as_str()).map_err(|source| InitError::Cwd {
        cwd: cwd.clone(),
        source,
    })?;
    let env = merge_env(&spec.process.env, &exec.env);
    let args = cstrings(&exec.args)?;
    let env_c = cstrings(&env)?;
    let program = init::find_program(&exec.args[0], &env, |p| p.is_file())?;
    let program = CString::new(program.into_os_string().into_encoded_bytes()).map_err(|e| {
        InitError::NulByte {
            value: String::from_utf8_lossy(&e.into_vec()).into_owned(),
        }
    })?;
    // The init's order: bounding set, user keeping caps, final caps, no_new_privs, seccomp.
    capabilities::limit_bounding(&caps.bounding).map_err(InitError::from)?;
    nix::sys::prctl::set_keepcaps(true).map_err(InitError::Prctl)?;
    user::switch(&ids).map_err(InitError::from)?;
    nix::sys::prctl::set_keepcaps(false).map_err(InitError::Prctl)?;
    capabilities::apply(&caps).map_err(InitError::from)?;
    if spec.process.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(InitError::Prctl)?;
    }
    seccomp::install(&filters).map_err(InitError::from)?;
    process::reset_signals().map_err(InitError::Signals)?;
    let source = match process::exec(&program, &args, &env_c) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(InitError::Exec {
        path: exec.args[0].clone(),
        source,
    }
    .into())
}

/// Makes the pty slave at `path` this session's controlling terminal and stdin, stdout and
/// stderr.
fn attach_terminal(path: &str) -> nix::Result<()> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::open(path, OFlag::O_RDWR, nix::sys::stat::Mode::empty())?;
    super::pty::make_controlling(fd)?;
    for target in 0..=2 {
        nix::unistd::dup2(fd, target)?;
    }
    if fd > 2 {
        nix::unistd::close(fd)?;
    }
    Ok(())
}

fn cstrings(values: &[String]) -> Result<Vec<CString>, InitError> {
    values
        .iter()
        .map(|v| CString::new(v.as_bytes()).map_err(|_| InitError::NulByte { value: v.clone() }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_env_replaces_same_names_and_appends_new_ones() {
        let container = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let extra = vec!["A=2".to_string(), "B=3".to_string()];
        assert_eq!(merge_env(&container, &extra), ["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn reports_parse_into_codes_timeouts_and_errors() {
        let id: ContainerId = "web".parse().unwrap();
        assert_eq!(parse_report(&id, "exit 3\n").unwrap(), (3, false));
        assert_eq!(parse_report(&id, "timeout 137\n").unwrap(), (137, true));
        let err = parse_report(&id, "error: enter the container's mnt namespace\n");
        assert!(err.unwrap_err().to_string().contains("mnt namespace"));
        assert!(parse_report(&id, "").is_err());
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut tail = Tail {
            bytes: Vec::new(),
            limit: 4,
        };
        for chunk in [&b"abc"[..], b"defgh", b"ij"] {
            tail.push(chunk);
        }
        assert_eq!(tail.into_string(), "ghij");
    }
}
