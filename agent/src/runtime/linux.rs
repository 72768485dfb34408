//! `LinuxRuntime`: the [`Runtime`] on Linux. A container is a directory under the state
//! dir (`<state>/<id>/`: shim input, state file, socket, logs, rootfs mount point) plus a
//! shim process. The handle itself holds nothing but configuration, so any new handle on
//! the same state dir — a restarted agent — adopts every container there.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcessStdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cgroups::{detect_version, CgroupConfig, CgroupVersion, ContainerCgroup};
use super::id::ContainerId;
use super::init;
use super::shim::{self, ShimInput, INPUT_FILE, SHIM_COMMAND, SOCKET_FILE};
use super::spec::{ContainerSpec, Stdio};
use super::state::{pid_start_time, write_atomically, ContainerState, StateError, Status};
use super::{process, ExecOutcome, ExecSpec, Runtime, RuntimeError};

/// Where containers live and which binary serves as their shim.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub state_dir: PathBuf,
    pub cgroup: CgroupConfig,
    /// The agent binary, re-executed as `__shim`.
    pub shim_binary: PathBuf,
}

/// The Linux runtime handle.
#[derive(Debug, Clone)]
pub struct LinuxRuntime {
    config: RuntimeConfig,
    /// Fork shims instead of re-executing the binary (see `foreground`).
    fork_shims: bool,
}

impl LinuxRuntime {
    pub fn new(config: RuntimeConfig) -> Self {
        Self {
            config,
            fork_shims: false,
        }
    }

    /// A runtime for a single-threaded foreground caller (`coracle-agent run`): the shim of
    /// a container with inherited stdio is a fork of the caller rather than a new exec of
    /// the binary, which saves loading and relocating it again (about 1 ms per start).
    /// Should the caller have grown threads, shims are re-executed as usual.
    pub fn foreground(config: RuntimeConfig) -> Self {
        Self {
            config,
            fork_shims: true,
        }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub(super) fn dir(&self, id: &ContainerId) -> PathBuf {
        self.config.state_dir.join(id.as_str())
    }

    /// Removes a container whose state file cannot be read: its cgroups are found by name.
    fn delete_unreadable(&self, id: &ContainerId, err: &StateError) -> Result<(), RuntimeError> {
        tracing::warn!(container = %id, error = %super::error_chain(err), "state unreadable, removing by name");
        let cfg = &self.config.cgroup;
        // No hierarchy at the root: no cgroup of this container can exist there either.
        if let Ok(version) = detect_version(&cfg.root) {
            let paths: Vec<PathBuf> = match version {
                CgroupVersion::V2 => vec![cfg.root.join(&cfg.parent).join(id.as_str())],
                CgroupVersion::V1 => fs::read_dir(&cfg.root)
                    .map(|entries| {
                        entries
                            .flatten()
                            .map(|e| e.path().join(&cfg.parent).join(id.as_str()))
                            .filter(|p| p.is_dir())
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            ContainerCgroup::from_paths(version, &paths).remove()?;
        }
        let dir = self.dir(id);
        fs::remove_dir_all(&dir).map_err(|source| RuntimeError::RemoveDir { path: dir, source })
    }

    /// The container's cgroup, for reading usage counters.
    pub fn cgroup(&self, id: &ContainerId) -> Result<ContainerCgroup, RuntimeError> {
        let state = self.state(id)?;
        Ok(ContainerCgroup::from_paths(
            state.cgroup_version,
            &state.cgroup_paths,
        ))
    }

    /// Path of the container's current log file.
    pub fn log_path(&self, id: &ContainerId) -> PathBuf {
        self.dir(id).join(super::logs::LOG_FILE)
    }

    fn connect(&self, id: &ContainerId) -> Result<UnixStream, RuntimeError> {
        let path = self.dir(id).join(SOCKET_FILE);
        UnixStream::connect(&path).map_err(|source| RuntimeError::ConnectShim {
            id: id.clone(),
            path,
            source,
        })
    }

    fn start_command(&self, id: &ContainerId) -> Result<BufReader<UnixStream>, RuntimeError> {
        let state = self.state(id)?;
        if state.status != Status::Created {
            return Err(RuntimeError::WrongStatus {
                id: id.clone(),
                status: state.status,
                wanted: "created",
            });
        }
        let mut conn = self.connect(id)?;
        let io = |source| RuntimeError::ShimIo {
            id: id.clone(),
            source,
        };
        conn.write_all(b"start\n").map_err(io)?;
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        match line.trim_end() {
            "started" => Ok(reader),
            other => Err(RuntimeError::StartFailed {
                id: id.clone(),
                reason: other.trim_start_matches("error: ").to_owned(),
            }),
        }
    }

    fn spawn_shim(
        &self,
        id: &ContainerId,
        dir: &Path,
        spec: &ContainerSpec,
    ) -> Result<(), RuntimeError> {
        let (report_r, report_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
                RuntimeError::SpawnShim {
                    binary: self.config.shim_binary.clone(),
                    source: e.into(),
                }
            })?;
        let spawn_err = |source| RuntimeError::SpawnShim {
            binary: self.config.shim_binary.clone(),
            source,
        };
        let forked = if self.fork_shims && spec.stdio == Stdio::Inherit {
            let report = report_w.try_clone().map_err(spawn_err)?;
            process::fork_single_threaded(move || {
                // Like the exec'd shim: the container does not read the caller's stdin.
                if let Ok(null) = fs::File::open("/dev/null") {
                    let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
                }
                shim::run(dir, Some(fs::File::from(report)))
            })
            .map_err(|e| spawn_err(e.into()))?
        } else {
            None
        };
        let mut shim_pid = forked;
        if forked.is_none() {
            let mut command = Command::new(&self.config.shim_binary);
            command
                .arg(SHIM_COMMAND)
                .arg(dir)
                .stdin(ProcessStdio::null());
            if let Stdio::Logs { .. } = spec.stdio {
                command
                    .stdout(ProcessStdio::null())
                    .stderr(ProcessStdio::null());
            }
            process::pass_fd_as_3(&mut command, report_w.as_raw_fd());
            // The shim is our child until we die; `delete` reaps it (init does, after a crash).
            let child = command.spawn().map_err(spawn_err)?;
            shim_pid = i32::try_from(child.id()).ok().map(Pid::from_raw);
        }
        drop(report_w);
        let mut report = String::new();
        let mut reader = BufReader::new(fs::File::from(report_r));
        reader.read_line(&mut report).map_err(spawn_err)?;
        if report.trim_end() == "ok" {
            return Ok(());
        }
        // A failed shim exits right after its report: wait for EOF so that, when create
        // returns its error, no process of the container is left, and reap the shim, which
        // no `delete` will (there is no container to delete): else it stays a zombie.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        if let Some(pid) = shim_pid {
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        let reason = match report.trim_end() {
            "" => "the shim exited without a report".to_owned(),
            other => other.trim_start_matches("error: ").to_owned(),
        };
        Err(RuntimeError::CreateFailed {
            id: id.clone(),
            reason,
        })
    }
}

impl LinuxRuntime {
    /// An exec needs a running container: anything else is `WrongStatus`.
    fn ensure_running(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let state = self.state(id)?;
        if state.status != Status::Running {
            return Err(RuntimeError::WrongStatus {
                id: id.clone(),
                status: state.status,
                wanted: "running",
            });
        }
        Ok(())
    }

    /// The foreground `run`: creates the container already started (the shim opens no
    /// command socket and nobody round-trips a `start`) and blocks until it has exited.
    /// The container is left stopped, for `delete`.
    pub fn run_foreground(
        &self,
        id: &ContainerId,
        spec: &ContainerSpec,
    ) -> Result<ContainerState, RuntimeError> {
        let state = self.create_with(id, spec, true)?;
        self.reap_shim(&state);
        self.state(id)
    }

    /// Waits until the container's shim has exited: our own child is reaped; an adopted
    /// one (another process's child) is polled for up to 2 s.
    fn reap_shim(&self, state: &ContainerState) {
        let shim = Pid::from_raw(state.shim_pid);
        let alive = pid_start_time(state.shim_pid) == Some(state.shim_start_time);
        if (alive || shim_is_zombie(state.shim_pid)) && nix::sys::wait::waitpid(shim, None).is_err()
        {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while pid_start_time(state.shim_pid) == Some(state.shim_start_time)
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }

    fn create_with(
        &self,
        id: &ContainerId,
        spec: &ContainerSpec,
        start_at_once: bool,
    ) -> Result<ContainerState, RuntimeError> {
        // 1. Refuse what cannot work before anything exists.
        init::check(spec).map_err(|source| RuntimeError::InvalidSpec {
            id: id.clone(),
            source,
        })?;
        // 2. The container's dir; its existence is the "id taken" lock.
        let dir = self.dir(id);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| RuntimeError::PrepareDir { path, source }
        };
        crate::private_dir::create_traverse_only_dir(&self.config.state_dir)
            .map_err(io(&self.config.state_dir))?;
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists { id: id.clone() })
            }
            Err(source) => return Err(RuntimeError::PrepareDir { path: dir, source }),
        }
        // 3. Hand the spec to a new shim, which sets everything up and reports.
        let input = ShimInput {
            id: id.clone(),
            spec: spec.clone(),
            cgroup: self.config.cgroup.clone(),
            start_at_once,
        };
        let json = serde_json::to_vec(&input).expect("spec has only plain serialisable fields");
        let prepared = fs::create_dir(dir.join("rootfs"))
            .map_err(io(&dir.join("rootfs")))
            .and_then(|()| {
                write_atomically(&dir.join(INPUT_FILE), &json).map_err(RuntimeError::from)
            })
            .and_then(|()| self.spawn_shim(id, &dir, spec));
        if let Err(err) = prepared {
            // The shim removed its cgroup and init; the dir is all that is left.
            let _ = fs::remove_dir_all(&dir);
            return Err(err);
        }
        let state = self.state(id)?;
        tracing::info!(container = %id, pid = state.pid, "container created");
        Ok(state)
    }
}

impl Runtime for LinuxRuntime {
    fn create(
        &self,
        id: &ContainerId,
        spec: &ContainerSpec,
    ) -> Result<ContainerState, RuntimeError> {
        self.create_with(id, spec, false)
    }

    fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.start_command(id)?;
        tracing::info!(container = %id, "container started");
        Ok(())
    }

    fn state(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        let dir = self.dir(id);
        if !dir.join(super::state::STATE_FILE).exists() {
            return Err(RuntimeError::NotFound { id: id.clone() });
        }
        let state = ContainerState::load(&dir)?;
        if state.status == Status::Stopped
            || pid_start_time(state.shim_pid) == Some(state.shim_start_time)
        {
            return Ok(state);
        }
        // The shim is gone. It records the exit before it exits, so the state read again
        // now has it, unless the shim vanished (killed by hand): then say stopped, code
        // unknown. (Reading once only raced a shim exiting between the read and the check.)
        let mut state = ContainerState::load(&dir)?;
        state.status = Status::Stopped;
        Ok(state)
    }

    fn kill(&self, id: &ContainerId, signal: Signal) -> Result<(), RuntimeError> {
        let state = self.state(id)?;
        match state.status {
            Status::Stopped => Err(RuntimeError::WrongStatus {
                id: id.clone(),
                status: state.status,
                wanted: "created or running",
            }),
            Status::Created => {
                let mut conn = self.connect(id)?;
                let io = |source| RuntimeError::ShimIo {
                    id: id.clone(),
                    source,
                };
                writeln!(conn, "kill {}", signal as i32).map_err(io)?;
                let mut line = String::new();
                BufReader::new(conn).read_line(&mut line).map_err(io)?;
                Ok(())
            }
            Status::Running => {
                // Never signal a recycled pid.
                if pid_start_time(state.pid) != Some(state.pid_start_time) {
                    return Ok(());
                }
                kill(Pid::from_raw(state.pid), signal).map_err(|source| RuntimeError::Signal {
                    id: id.clone(),
                    signal,
                    source,
                })
            }
        }
    }

    fn delete(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let state = match self.state(id) {
            Ok(state) => state,
            Err(RuntimeError::State(err)) => return self.delete_unreadable(id, &err),
            Err(err) => return Err(err),
        };
        if state.status != Status::Stopped {
            return Err(RuntimeError::WrongStatus {
                id: id.clone(),
                status: state.status,
                wanted: "stopped",
            });
        }
        // The shim exits right after recording "stopped"; let it finish before its dir goes.
        self.reap_shim(&state);
        // Normally the shim removed the cgroup; if it was lost, do it here.
        ContainerCgroup::from_paths(state.cgroup_version, &state.cgroup_paths).remove()?;
        let dir = self.dir(id);
        fs::remove_dir_all(&dir).map_err(|source| RuntimeError::RemoveDir { path: dir, source })?;
        tracing::info!(container = %id, exit_code = ?state.exit_code, oom = state.oom_killed, "container deleted");
        Ok(())
    }

    fn exec(&self, id: &ContainerId, spec: &ExecSpec) -> Result<ExecOutcome, RuntimeError> {
        self.ensure_running(id)?;
        super::exec::run(&self.config.shim_binary, id, &self.dir(id), spec)
    }

    fn exec_interactive(
        &self,
        id: &ContainerId,
        spec: &ExecSpec,
    ) -> Result<super::exec_interactive::InteractiveExec, RuntimeError> {
        self.ensure_running(id)?;
        super::exec_interactive::spawn(&self.config.shim_binary, id, &self.dir(id), spec)
    }

    fn list(&self) -> Result<Vec<ContainerId>, RuntimeError> {
        let dir = &self.config.state_dir;
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RuntimeError::PrepareDir {
                    path: dir.clone(),
                    source,
                })
            }
        };
        let mut ids: Vec<ContainerId> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// A zombie shim is one we spawned that exited and awaits our `waitpid`.
fn shim_is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rfind(')').map(|i| stat[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}
