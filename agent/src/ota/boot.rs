//! The slot-selection step every daemon start goes through, before the daemon itself: it
//! carries out `SlotState::boot`. The watchdog for a new build is this step in the *old*
//! build: it starts the trial as its child and waits. The trial confirms by saving the
//! record once it has connected (`confirm_trial`); then the old build stops it and executes
//! the confirmed build in its own place, so the service's main process stays the one agent
//! process. A trial that exits first, or is still unconfirmed at the deadline, is stopped
//! and abandoned, and the old build runs the daemon itself in this same process. A crash
//! of everything mid-trial is caught by the next start (a started, unconfirmed trial is
//! abandoned), so no service manager is needed — but with one (`Restart=always`) a dead
//! agent also comes back.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use super::slots::{BootPlan, Role, SlotBinary, SlotFiles, SlotState};

/// Tells a started process its role (see `Role`); never inherited further.
pub const BOOT_ROLE_ENV: &str = "CORACLE_AGENT_BOOT";
/// How often the supervising parent looks for the trial's confirmation.
const POLL: Duration = Duration::from_millis(200);
/// How long a trial asked to stop may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How the daemon should go on after the boot step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// Run the daemon here; `trial`: this process is a trial and confirms once connected.
    RunDaemon { trial: bool },
    /// A stop was asked while a build was on trial, and the trial has ended: exit with its
    /// code.
    Exit(i32),
}

/// This process's role, read from (and removed from) the environment.
pub fn take_role() -> Role {
    let role = match std::env::var(BOOT_ROLE_ENV).as_deref() {
        Ok("trial") => Role::Trial,
        Ok("selected") => Role::Selected,
        _ => Role::Start,
    };
    // Edition 2021: safe; the daemon's threads do not exist yet.
    std::env::remove_var(BOOT_ROLE_ENV);
    role
}

/// Runs the boot step. Errors of the slot record never stop the agent: the build that is
/// running now runs the daemon.
pub fn boot(files: &SlotFiles, confirm_timeout: Duration) -> Boot {
    let role = take_role();
    if role == Role::Trial {
        follow_parent();
    }
    let state = match files.load() {
        Ok(state) => state,
        Err(err) => {
            tracing::error!(error = %crate::runtime::error_chain(&err), "agent slot record unreadable; running this build");
            return Boot::RunDaemon { trial: false };
        }
    };
    let state_before = state.clone();
    let state = match (role, installed_file(files)) {
        (Role::Start, Some(file)) => state.started_installed(file),
        _ => state,
    };
    let (plan, next) = state.boot(role);
    if next != state_before {
        if let Err(err) = files.save(&next) {
            // Without a saved `started` a trial could be retried forever: run this build.
            tracing::error!(error = %crate::runtime::error_chain(&err), "agent slot record not saved; running this build");
            return Boot::RunDaemon { trial: false };
        }
    }
    match plan {
        BootPlan::RunHere => Boot::RunDaemon {
            trial: role == Role::Trial,
        },
        BootPlan::ExecActive(active) => {
            let err = exec_build(files, &active);
            tracing::error!(version = %active.version, error = %err, "cannot run the active agent build; running this one");
            Boot::RunDaemon { trial: false }
        }
        BootPlan::Supervise(target) => supervise(files, &target, confirm_timeout),
    }
}

/// This program's file when it is the installed binary (not a slot file), else `None`.
fn installed_file(files: &SlotFiles) -> Option<super::slots::InstalledFile> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::env::current_exe().ok()?;
    if exe.starts_with(files.dir()) {
        return None;
    }
    let meta = std::fs::metadata(&exe).ok()?;
    Some(super::slots::InstalledFile {
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        inode: meta.ino(),
    })
}

/// A trial ends with its supervising parent: otherwise a service manager that restarts a
/// dead parent (with `KillMode=process`, which keeps the containers) would start a second
/// agent beside the orphaned one.
fn follow_parent() {
    if let Err(err) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        tracing::warn!(%err, "cannot tie the agent build on trial to its parent");
    }
    // The parent may have died before the request: then this process was reparented.
    if nix::unistd::getppid() == nix::unistd::Pid::from_raw(1) {
        tracing::warn!("the supervising agent is gone; stopping the build on trial");
        std::process::exit(1);
    }
}

/// Replaces this process with `build`; returns only on failure.
fn exec_build(files: &SlotFiles, build: &SlotBinary) -> std::io::Error {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    Command::new(files.path(build.slot))
        .arg0(arg0)
        .args(args)
        .env(BOOT_ROLE_ENV, "selected")
        .exec()
}

/// Starts this program again (same path, arguments and environment): the boot step then
/// picks up a trial that was just staged.
pub fn restart_self() -> std::io::Error {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => return err,
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    Command::new(exe).arg0(arg0).args(args).exec()
}

/// Starts the trial as a child and waits for its confirmation; then stops it and becomes
/// that build itself (`hand_over`), so a device runs one agent process whatever the number
/// of updates it went through.
fn supervise(files: &SlotFiles, target: &SlotBinary, confirm_timeout: Duration) -> Boot {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let spawned = Command::new(files.path(target.slot))
        .arg0(arg0)
        .args(args)
        .env(BOOT_ROLE_ENV, "trial")
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(err) => {
            return give_up(files, target, format!("it could not be started: {err}"));
        }
    };
    tracing::info!(version = %target.version, pid = child.id(), "agent build on trial started");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot watch the trial (no tokio runtime)");
            return Boot::Exit(wait_plain(child));
        }
    };
    runtime.block_on(watch(files, target, child, confirm_timeout))
}

fn wait_plain(mut child: Child) -> i32 {
    child.wait().ok().and_then(|s| s.code()).unwrap_or(1)
}

async fn watch(
    files: &SlotFiles,
    target: &SlotBinary,
    mut child: Child,
    confirm_timeout: Duration,
) -> Boot {
    use tokio::signal::unix::{signal, SignalKind};
    let deadline = Instant::now() + confirm_timeout;
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    // A stop asked of this process (the service manager's) is passed on, and then the
    // trial's end is this process's end, confirmed or not.
    let mut stop_asked = false;
    loop {
        let forward = tokio::select! {
            Some(()) = async { term.as_mut()?.recv().await } => Some(nix::sys::signal::Signal::SIGTERM),
            Some(()) = async { int.as_mut()?.recv().await } => Some(nix::sys::signal::Signal::SIGINT),
            () = tokio::time::sleep(POLL) => None,
        };
        if let Some(signal) = forward {
            stop_asked = true;
            send(&child, signal);
        }
        match child.try_wait() {
            Ok(Some(status)) if stop_asked => return Boot::Exit(status.code().unwrap_or(1)),
            Ok(Some(_)) if is_confirmed(files, target) => return hand_over(files, target),
            Ok(Some(status)) => {
                return give_up(
                    files,
                    target,
                    format!("it {} before it connected", describe(status)),
                );
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "cannot poll the agent build on trial"),
        }
        if is_confirmed(files, target) {
            tracing::info!(version = %target.version, "agent build on trial confirmed; this process becomes it");
            stop(&mut child).await;
            return hand_over(files, target);
        }
        if Instant::now() >= deadline {
            stop(&mut child).await;
            return give_up(
                files,
                target,
                format!("it did not connect within {} s", confirm_timeout.as_secs()),
            );
        }
    }
}

/// Replaces this process with the confirmed build. The trial is stopped first (its
/// containers stay, as at any agent restart): a supervising parent left behind would idle
/// for good, and one more after every update.
fn hand_over(files: &SlotFiles, target: &SlotBinary) -> Boot {
    let err = exec_build(files, target);
    tracing::error!(version = %target.version, error = %err, "cannot run the confirmed agent build; running this one");
    Boot::RunDaemon { trial: false }
}

fn is_confirmed(files: &SlotFiles, target: &SlotBinary) -> bool {
    files
        .load()
        .is_ok_and(|s| s.trial.is_none() && s.active.as_ref() == Some(target))
}

fn send(child: &Child, signal: nix::sys::signal::Signal) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    if let Err(err) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
        tracing::warn!(%err, ?signal, "cannot signal the agent build on trial");
    }
}

async fn stop(child: &mut Child) {
    send(child, nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + STOP_GRACE;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".into(),
    }
}

/// Abandons the trial and runs the daemon in this process (the build before it).
fn give_up(files: &SlotFiles, target: &SlotBinary, reason: String) -> Boot {
    tracing::warn!(version = %target.version, %reason, "agent build on trial abandoned; going on with this build");
    let state = files.load().unwrap_or_default();
    let next: SlotState = state.abandon(&target.version, target.binary, reason);
    if let Err(err) = files.save(&next) {
        tracing::error!(error = %crate::runtime::error_chain(&err), "agent slot record not saved");
    }
    Boot::RunDaemon { trial: false }
}

/// Called by a trial once it has connected: its build becomes the active one.
pub fn confirm_trial(files: &SlotFiles) -> Result<(), super::slots::SlotError> {
    let state = files.load()?;
    if state.trial.as_ref().is_some_and(|t| t.started) {
        files.save(&state.confirm())?;
    }
    Ok(())
}
