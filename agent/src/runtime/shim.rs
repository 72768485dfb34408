//! The per-container shim: the agent binary re-executed as `coracle-agent __shim DIR`, one
//! per container, in its own session so the container outlives the agent (like conmon). It
//! creates the cgroup, clones the container's init, and then owns the container's life:
//! it answers `start`/`kill` on `DIR/shim.sock` while the container is created, pumps its
//! output into rotating logs, reaps it, records exit code and OOM (only when an OOM kill
//! ended the container) in `DIR/state.json`, and removes the cgroup. Single threaded, no
//! async runtime, fixed buffers: it stays small (measured by the runtime tests).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, Pid};
use serde::{Deserialize, Serialize};

use super::cgroups::limits::DeviceRule;
use super::cgroups::{ended_by_oom, CgroupConfig, CgroupError, ContainerCgroup};
use super::error_chain;
use super::hook::HookError;
use super::id::ContainerId;
use super::init::console::Console;
use super::init::{self, dev, InitContext};
use super::logs::{LogError, RotatingLog};
use super::process;
use super::spec::{ContainerSpec, NamespaceKind, Network, Stdio};
use super::state::{pid_start_time, ContainerState, StateError, Status};
use super::userns::{self, UserNsError};

/// The hidden subcommand that turns the agent binary into a shim.
pub const SHIM_COMMAND: &str = "__shim";
/// The shim's input, written by `create` into the container's dir.
pub const INPUT_FILE: &str = "config.json";
pub const SOCKET_FILE: &str = "shim.sock";

/// What `create` hands the shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimInput {
    pub id: ContainerId,
    pub spec: ContainerSpec,
    pub cgroup: CgroupConfig,
    /// Start as soon as created, with no command socket (the foreground `run`).
    #[serde(default)]
    pub start_at_once: bool,
}

/// Failures in the shim, named after its steps.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("run the OCI create-time hooks")]
    CreateHooks(#[source] HookError),
    #[error("read shim input {path}")]
    ReadInput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse shim input {path}")]
    ParseInput {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("start a new session")]
    Detach(#[source] nix::Error),
    #[error(transparent)]
    Device(#[from] dev::DevError),
    #[error("open network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open namespace {path}")]
    OpenNamespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("join pid namespace {path}")]
    JoinPidNamespace {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    UserNs(#[from] UserNsError),
    #[error("create pipe")]
    Pipe(#[source] nix::Error),
    #[error("clone the container's init")]
    Clone(#[source] nix::Error),
    #[error("talk to the container's init")]
    InitPipe(#[source] std::io::Error),
    #[error("container setup failed: {reason}")]
    Setup { reason: String },
    #[error("container init exited during setup with {status:?}")]
    InitDied { status: String },
    #[error("listen on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("wait for the container")]
    Wait(#[source] nix::Error),
}

/// Entry point of `coracle-agent __shim DIR`; returns the shim's exit code.
pub fn main(dir: &Path) -> i32 {
    run(dir, process::take_fd_3())
}

/// The shim's life, reporting to `report` until the container is created (or failed).
pub fn run(dir: &Path, mut report: Option<File>) -> i32 {
    let fail = |report: &mut Option<File>, err: &ShimError| {
        if let Some(r) = report.as_mut() {
            let _ = writeln!(r, "error: {}", error_chain(err));
        }
        1
    };
    let mut shim = match process::new_session()
        .map_err(ShimError::Detach)
        .and_then(|()| Shim::create(dir))
    {
        Ok(shim) => shim,
        Err(err) => return fail(&mut report, &err),
    };
    if shim.start_at_once {
        // `run`: nobody will send `start`, so no socket; the report comes after exec.
        if let Err(err) = shim.start() {
            shim.abandon();
            return fail(&mut report, &err);
        }
        if let Some(mut r) = report.take() {
            let _ = r.write_all(b"ok\n");
        }
        let result = shim.run_to_exit(None);
        return exit_code(&shim, result);
    }
    let listener = match shim.listen() {
        Ok(listener) => listener,
        Err(err) => {
            shim.abandon();
            return fail(&mut report, &err);
        }
    };
    if let Some(mut r) = report.take() {
        // One line, not EOF: the created init holds a copy of this pipe until it execs.
        let _ = r.write_all(b"ok\n");
    }
    let result = shim.supervise(listener);
    exit_code(&shim, result)
}

/// A container set up by the OCI `create`, its init waiting on the exec fifo. No shim stays
/// behind: the caller (its subreaper) becomes the init's parent when `create` exits.
#[derive(Debug)]
pub struct DetachedInit {
    pub pid: i32,
    pub pid_start_time: u64,
    pub cgroup: ContainerCgroup,
    pub conditions: Vec<super::cgroups::Condition>,
}

/// What an OCI `create` hands the init: the exec fifo it waits on for `start` (the read
/// end, opened O_RDWR), for a terminal the console its pty's master goes to, and the
/// create-time hooks, run with the init's pid while it waits just before pivot_root.
#[derive(Clone, Copy)]
pub struct OciInit<'a> {
    pub exec_fifo: &'a OwnedFd,
    pub console: Option<&'a Console>,
    pub before_pivot: Option<&'a BeforePivot<'a>>,
}

/// The OCI create-time hooks (prestart, createRuntime, createContainer), given the pid.
pub type BeforePivot<'a> = dyn Fn(i32) -> Result<(), HookError> + 'a;

impl std::fmt::Debug for OciInit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciInit")
            .field("exec_fifo", &self.exec_fifo)
            .field("console", &self.console)
            .field("before_pivot", &self.before_pivot.is_some())
            .finish()
    }
}

/// Sets the container up in this (single-threaded) process as the shim would, up to
/// "created", with the init left waiting on the exec fifo.
pub fn create_detached(
    dir: &Path,
    input: &ShimInput,
    oci: OciInit<'_>,
) -> Result<DetachedInit, ShimError> {
    let shim = Shim::create_from(dir, input, Some(oci))?;
    Ok(DetachedInit {
        pid: shim.state.pid,
        pid_start_time: shim.state.pid_start_time,
        cgroup: shim.cgroup.clone(),
        conditions: shim.state.conditions.clone(),
    })
}

/// Undoes a [`create_detached`] container whose announcement failed: kill, reap, remove
/// its cgroup.
pub fn abandon_detached(init: &DetachedInit) {
    let pid = Pid::from_raw(init.pid);
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
    let _ = init.cgroup.remove();
}

fn exit_code(shim: &Shim, result: Result<(), ShimError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(err) => {
            tracing::error!(container = %shim.state.id, error = %error_chain(&err), "shim failed");
            1
        }
    }
}

struct Shim {
    dir: PathBuf,
    state: ContainerState,
    cgroup: ContainerCgroup,
    report: File,
    go: File,
    logs: Option<(OwnedFd, OwnedFd, u64, u32)>,
    start_at_once: bool,
}

/// How long the shim stays as it is before it gives back its file pages (see
/// `process::release_clean_file_pages`, ~1 ms of work): a container that is started, or
/// that exits, within this time never waits for it; one that lives longer costs no more.
const RELEASE_AFTER_MS: u16 = 20;

/// Releases the shim's clean file pages unless `fd` (the command socket, or the container's
/// pidfd) becomes readable first.
fn release_pages_unless_ready(fd: BorrowedFd<'_>) {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    if let Ok(0) = poll(&mut fds, PollTimeout::from(RELEASE_AFTER_MS)) {
        process::release_clean_file_pages();
    }
}

/// The log pipes of a container with `Stdio::Logs`: stdout's and stderr's (read, write)
/// ends, and the rotating logs' size and count.
type LogPipes = ((OwnedFd, OwnedFd), (OwnedFd, OwnedFd), (u64, u32));

/// The channels between the shim and the init it clones, made before clone.
struct InitPipes {
    /// The init's reports (`R`, `H`, `E<message>`); the write end closes on exec.
    report_r: OwnedFd,
    report_w: OwnedFd,
    /// A socket, not a pipe: with a user namespace the go message carries the rootfs mount.
    go_r: OwnedFd,
    go_w: OwnedFd,
    logs: Option<LogPipes>,
}

impl InitPipes {
    /// Opens the report pipe and the go socket, and the log pipes with `Stdio::Logs`.
    fn open(spec: &ContainerSpec) -> Result<Self, ShimError> {
        let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).map_err(ShimError::Pipe)?;
        let (go_r, go_w) = UnixStream::pair().map_err(ShimError::InitPipe)?;
        let (go_r, go_w) = (OwnedFd::from(go_r), OwnedFd::from(go_w));
        let logs = match spec.stdio {
            Stdio::Inherit => None,
            Stdio::Logs { max_bytes, keep } => Some((
                pipe2(OFlag::O_CLOEXEC).map_err(ShimError::Pipe)?,
                pipe2(OFlag::O_CLOEXEC).map_err(ShimError::Pipe)?,
                (max_bytes, keep),
            )),
        };
        Ok(Self {
            report_r,
            report_w,
            go_r,
            go_w,
            logs,
        })
    }
}

/// Clones the init into its namespaces (with a user namespace, from inside `netns`, which it
/// inherits); it runs `init::run` until exec and reports a failure on the report pipe. On v2
/// the init is born in its cgroup; older kernels fall back to clone + move. Returns its pid
/// and whether it was born in the cgroup.
fn clone_init(
    ctx: &InitContext<'_>,
    pipes: &InitPipes,
    id: &ContainerId,
    cgroup: &ContainerCgroup,
    netns: Option<&OwnedFd>,
) -> Result<(Pid, bool), ShimError> {
    let userns = ctx.spec.user_namespace.as_ref();
    let mut flags = init::clone_flags(ctx.spec);
    if userns.is_some() {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let mut child = || {
        let (Ok(report), Ok(go)) = (pipes.report_w.try_clone(), pipes.go_r.try_clone()) else {
            return 1;
        };
        let (mut report, mut go) = (File::from(report), File::from(go));
        let err = init::run(ctx, &mut report, &mut go);
        if ctx.exec_fifo.is_some() {
            // After an OCI `create` nobody reads the report: the caller's stderr is ours.
            eprintln!("coracle-runc: container {}: {}", id, error_chain(&err));
        }
        let _ = write!(report, "E{}", error_chain(&err));
        1
    };
    let v2_dir = cgroup.v2_dir().and_then(|d| File::open(d).ok());
    let mut born_in_cgroup = false;
    let mut clone = || {
        if let Some(dir) = &v2_dir {
            match process::clone_init_into_cgroup(flags, dir.as_fd(), &mut child) {
                Err(Errno::ENOSYS | Errno::E2BIG) => {}
                other => {
                    born_in_cgroup = other.is_ok();
                    return other;
                }
            }
        }
        process::clone_init(flags, &mut child)
    };
    let cloned = match userns {
        Some(_) => userns::clone_in_netns(netns, clone)?,
        None => clone(),
    };
    let pid = cloned.map_err(ShimError::Clone)?;
    Ok((pid, born_in_cgroup))
}

impl Shim {
    /// Steps up to "created": the container is set up and waits for `start`.
    fn create(dir: &Path) -> Result<Self, ShimError> {
        // 1. Read what to run.
        let path = dir.join(INPUT_FILE);
        let bytes = fs::read(&path).map_err(|source| ShimError::ReadInput {
            path: path.clone(),
            source,
        })?;
        let input: ShimInput = serde_json::from_slice(&bytes)
            .map_err(|source| ShimError::ParseInput { path, source })?;
        Self::create_from(dir, &input, None)
    }

    /// Steps 2 on of `create`; with `oci` the init waits on its exec fifo for `start`.
    fn create_from(
        dir: &Path,
        input: &ShimInput,
        oci: Option<OciInit<'_>>,
    ) -> Result<Self, ShimError> {
        let spec = &input.spec;
        // 2. Devices: the standard set plus passed-through host nodes and described ones;
        //    one at a standard path replaces the standard node (podman's `--privileged`
        //    lists /dev/null and the rest).
        let mut nodes = dev::default_nodes();
        let mut rules = Vec::new();
        for device in &spec.devices {
            let node = dev::node_for(device)?;
            if let Some(kind) = node.kind.cgroup_type() {
                rules.push(DeviceRule::new(kind, node.major, node.minor, device.access));
            }
            nodes.retain(|n| n.path != node.path);
            nodes.push(node);
        }
        for rule in &spec.device_cgroup_rules {
            rules.push(DeviceRule::pattern(
                rule.kind,
                rule.major,
                rule.minor,
                rule.access,
            ));
        }
        // A privileged container: every device, and the host's nodes besides the ones above.
        if spec.host_devices {
            rules = vec![DeviceRule::EVERY];
            for node in dev::host_device_nodes(Path::new("/dev"))? {
                if !nodes.iter().any(|n| n.path == node.path) {
                    nodes.push(node);
                }
            }
        }
        let netns = match &spec.network {
            Network::Join(path) => Some(
                File::open(path)
                    .map_err(|source| ShimError::OpenNetns {
                        path: path.clone(),
                        source,
                    })?
                    .into(),
            ),
            _ => None,
        };
        // Namespaces to join, opened here on the host: the pid one is entered now (only
        // children change pid namespace), the others by the init, mount first.
        let mut joined = Vec::new();
        for ns in &spec.joined_namespaces {
            let fd: OwnedFd = File::open(&ns.path)
                .map_err(|source| ShimError::OpenNamespace {
                    path: ns.path.clone(),
                    source,
                })?
                .into();
            if ns.kind == NamespaceKind::Pid {
                nix::sched::setns(&fd, CloneFlags::CLONE_NEWPID).map_err(|source| {
                    ShimError::JoinPidNamespace {
                        path: ns.path.clone(),
                        source,
                    }
                })?;
            } else {
                joined.push((ns.kind, fd));
            }
        }
        joined.sort_by_key(|(kind, _)| *kind != NamespaceKind::Mount);
        // 3. cgroup with limits; what the kernel cannot enforce becomes a condition.
        let (cgroup, conditions) =
            ContainerCgroup::create(&input.cgroup, &input.id, &spec.resources, &rules)?;
        for condition in &conditions {
            tracing::warn!(container = %input.id, ?condition, "cgroup limit not enforceable");
        }
        let result = Self::spawn_init(
            dir,
            input,
            &nodes,
            netns.as_ref(),
            cgroup.clone(),
            oci,
            &joined,
        );
        let mut shim = match result {
            Ok(shim) => shim,
            Err(err) => {
                let _ = cgroup.remove();
                return Err(err);
            }
        };
        shim.state.conditions = conditions;
        shim.start_at_once = input.start_at_once;
        Ok(shim)
    }

    fn spawn_init(
        dir: &Path,
        input: &ShimInput,
        nodes: &[dev::Node],
        netns: Option<&OwnedFd>,
        cgroup: ContainerCgroup,
        oci: Option<OciInit<'_>>,
        joined_namespaces: &[(NamespaceKind, OwnedFd)],
    ) -> Result<Self, ShimError> {
        let spec = &input.spec;
        let pipes = InitPipes::open(spec)?;
        let rootfs = dir.join("rootfs");
        let userns = spec.user_namespace.as_ref();
        // On v1 the init moves itself into its cgroups (cheap, see `cgroups::join_self`);
        // the shim moves it on v2 and when a user namespace keeps it from host files.
        let self_join = cgroup.self_join_files().filter(|_| userns.is_none());
        let ctx = InitContext {
            spec,
            rootfs: &rootfs,
            nodes,
            // With a user namespace the init inherits the network namespace at clone.
            netns: netns.filter(|_| userns.is_none()),
            join_cgroup: self_join.as_deref(),
            stdout: pipes.logs.as_ref().map(|((_, w), _, _)| w),
            stderr: pipes.logs.as_ref().map(|(_, (_, w), _)| w),
            exec_fifo: oci.map(|o| o.exec_fifo),
            console: oci.and_then(|o| o.console),
            pause_before_pivot: oci.is_some_and(|o| o.before_pivot.is_some()),
            joined_namespaces,
        };
        // 4. Clone the init into its namespaces; it runs `init::run` until exec.
        let (pid, born_in_cgroup) = clone_init(&ctx, &pipes, &input.id, &cgroup, netns)?;
        let mut shim = Shim::created(dir, &input.id, pid, cgroup, pipes);
        // 5. Into the cgroup (with a user namespace: id maps written, rootfs built), then
        //    let the init go on to set itself up.
        let in_cgroup = self_join.is_some() || born_in_cgroup;
        if let Err(err) = shim.release_init(in_cgroup, spec, oci.and_then(|o| o.before_pivot)) {
            shim.abandon();
            return Err(err);
        }
        Ok(shim)
    }

    /// The shim of the init just cloned as `pid`, "created". Closes the init's ends of the
    /// pipes here, which leaves the init the only writer: EOF comes with its exit.
    fn created(
        dir: &Path,
        id: &ContainerId,
        pid: Pid,
        cgroup: ContainerCgroup,
        pipes: InitPipes,
    ) -> Self {
        let InitPipes {
            report_r,
            report_w,
            go_r,
            go_w,
            logs,
        } = pipes;
        drop((report_w, go_r));
        let logs =
            logs.map(|((out_r, _), (err_r, _), (max_bytes, keep))| (out_r, err_r, max_bytes, keep));
        Shim {
            dir: dir.to_owned(),
            state: ContainerState {
                id: id.clone(),
                status: Status::Created,
                pid: pid.as_raw(),
                pid_start_time: pid_start_time(pid.as_raw()).unwrap_or(0),
                shim_pid: std::process::id() as i32,
                shim_start_time: pid_start_time(std::process::id() as i32).unwrap_or(0),
                exit_code: None,
                oom_killed: false,
                conditions: Vec::new(),
                cgroup_version: cgroup.version,
                cgroup_paths: cgroup.paths(),
            },
            cgroup,
            report: File::from(report_r),
            go: File::from(go_w),
            logs,
            start_at_once: false,
        }
    }

    /// Step 5: moves the init into its cgroup unless it is there already (with a user
    /// namespace: writes its id maps and builds the rootfs), sends it `C` and waits until
    /// it is ready.
    fn release_init(
        &mut self,
        in_cgroup: bool,
        spec: &ContainerSpec,
        before_pivot: Option<&BeforePivot<'_>>,
    ) -> Result<(), ShimError> {
        let pid = Pid::from_raw(self.state.pid);
        if !in_cgroup {
            self.cgroup.join(pid.as_raw())?;
        }
        match &spec.user_namespace {
            Some(mapping) => {
                userns::write_maps(pid, mapping)?;
                let tree = userns::prepare_rootfs(pid, mapping, &spec.rootfs)?;
                userns::send_go(self.go.as_raw_fd(), b'C', tree.as_ref())?;
            }
            None => self.go.write_all(b"C").map_err(ShimError::InitPipe)?,
        }
        self.await_init(before_pivot)
    }

    /// Reads the init's report: `R` (ready), `E<message>`, or EOF (it exec'd or died).
    /// Waits for the init's `R`; on its `H` (OCI create-time hooks) runs `before_pivot`
    /// and lets it go on.
    fn await_init(&mut self, before_pivot: Option<&BeforePivot<'_>>) -> Result<(), ShimError> {
        let mut first = [0u8];
        match self.report.read(&mut first).map_err(ShimError::InitPipe)? {
            1 if first[0] == b'R' => Ok(()),
            1 if first[0] == b'H' && before_pivot.is_some() => {
                if let Some(hooks) = before_pivot {
                    hooks(self.state.pid).map_err(ShimError::CreateHooks)?;
                }
                self.go.write_all(b"H").map_err(ShimError::InitPipe)?;
                self.await_init(None)
            }
            1 => {
                let mut reason = String::new();
                let _ = self.report.read_to_string(&mut reason);
                Err(ShimError::Setup { reason })
            }
            _ => {
                let status =
                    waitpid(Pid::from_raw(self.state.pid), None).map_err(ShimError::Wait)?;
                Err(ShimError::InitDied {
                    status: format!("{status:?}"),
                })
            }
        }
    }

    /// Undoes a created container that cannot be announced: kill, reap, remove the cgroup.
    fn abandon(&self) {
        let pid = Pid::from_raw(self.state.pid);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        let _ = self.cgroup.remove();
    }

    /// Opens the command socket and records "created": from here on the container is visible.
    fn listen(&self) -> Result<UnixListener, ShimError> {
        let socket = self.dir.join(SOCKET_FILE);
        let _ = fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|source| ShimError::Listen {
            path: socket.clone(),
            source,
        })?;
        self.state.store(&self.dir)?;
        Ok(listener)
    }

    /// From "created" to "stopped": serve start/kill, pump logs, reap, record.
    fn supervise(&mut self, listener: UnixListener) -> Result<(), ShimError> {
        let socket = self.dir.join(SOCKET_FILE);
        release_pages_unless_ready(listener.as_fd());
        let waiter = self.serve_until_started(&listener);
        drop(listener);
        let _ = fs::remove_file(&socket);
        self.run_to_exit(waiter)
    }

    /// From "running" to "stopped": pump logs, reap, record, tell `waiter`.
    fn run_to_exit(&mut self, waiter: Option<UnixStream>) -> Result<(), ShimError> {
        // The log is opened before the pages are released, so that only the pump loop
        // runs (and maps code back in) while the container lives.
        let logs = match self.logs.take() {
            Some((out, err, max_bytes, keep)) => {
                Some((RotatingLog::open(&self.dir, max_bytes, keep)?, out, err))
            }
            None => None,
        };
        match process::pidfd_open(Pid::from_raw(self.state.pid)) {
            Ok(pidfd) => release_pages_unless_ready(pidfd.as_fd()),
            Err(_) => process::release_clean_file_pages(),
        }
        if let Some((mut log, out, err)) = logs {
            super::logs::pump(&[out, err], &mut log)?;
        }
        let status = waitpid(Pid::from_raw(self.state.pid), None).map_err(ShimError::Wait)?;
        let exit_code = match status {
            WaitStatus::Exited(_, code) => code,
            WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
            _ => 255,
        };
        self.state.exit_code = Some(exit_code);
        self.state.oom_killed = ended_by_oom(exit_code, self.cgroup.oom_kills());
        self.state.status = Status::Stopped;
        let removed = self.cgroup.remove();
        if removed.is_ok() {
            self.state.cgroup_paths.clear();
        }
        self.state.store(&self.dir)?;
        if let Some(mut w) = waiter {
            // The caller may be gone (agent killed); the state file has the answer anyway.
            let _ = writeln!(w, "exited {}", self.state.exit_code.unwrap_or(255));
        }
        removed.map_err(ShimError::from)
    }

    /// Answers commands until the container starts or is killed. Returns the connection
    /// of the `start` caller, told once more when the container exits.
    fn serve_until_started(&mut self, listener: &UnixListener) -> Option<UnixStream> {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            if BufReader::new(&conn).read_line(&mut line).is_err() {
                continue;
            }
            let mut words = line.split_whitespace();
            match (
                words.next(),
                words.next().and_then(|n| n.parse::<i32>().ok()),
            ) {
                (Some("start"), _) => match self.start() {
                    Ok(()) => {
                        let _ = conn.write_all(b"started\n");
                        return Some(conn);
                    }
                    Err(err) => {
                        let _ = writeln!(conn, "error: {}", error_chain(&err));
                        return None;
                    }
                },
                (Some("kill"), Some(signal)) => {
                    let sent = Signal::try_from(signal)
                        .and_then(|s| kill(Pid::from_raw(self.state.pid), s));
                    let _ = match sent {
                        Ok(()) => conn.write_all(b"ok\n"),
                        Err(e) => writeln!(conn, "error: {e}"),
                    };
                    if sent.is_ok() {
                        return None;
                    }
                }
                _ => {
                    let _ = writeln!(conn, "error: unknown command {:?}", line.trim());
                }
            }
        }
        None
    }

    /// Lets the init exec and records "running".
    fn start(&mut self) -> Result<(), ShimError> {
        self.go.write_all(b"S").map_err(ShimError::InitPipe)?;
        self.await_exec()?;
        self.state.status = Status::Running;
        // The exec happened; a state file that fails to update is repaired at exit.
        let _ = self.state.store(&self.dir);
        Ok(())
    }

    /// After `S`: EOF on the report pipe means exec happened (the pipe is close-on-exec).
    fn await_exec(&mut self) -> Result<(), ShimError> {
        let mut message = String::new();
        self.report
            .read_to_string(&mut message)
            .map_err(ShimError::InitPipe)?;
        match message.strip_prefix('E') {
            None => Ok(()),
            Some(reason) => Err(ShimError::Setup {
                reason: reason.to_owned(),
            }),
        }
    }
}
