//! The container's init: what runs in the cloned child, in its new namespaces, between
//! clone and exec. It reads as the list of steps below; each step has its own error variant
//! so a failed create says exactly where it stopped. The child reports to the shim over a
//! pipe: `R` when ready to exec, `E<message>` on failure (and, for an OCI create with
//! create-time hooks, `H` just before pivot_root); the shim answers on the go socket
//! `C` (cgroup ready — on v1 the init then joins it itself; with a user namespace the
//! message carries the rootfs mount), `H` (hooks done) and `S` (start). The report pipe
//! closes on exec, which tells the shim exec succeeded.

pub mod capabilities;
pub mod console;
pub mod dev;
pub mod kernel_params;
pub mod mount_options;
pub mod mounts;
pub mod pid1;
pub mod propagation;
pub mod rlimits;
pub mod seccomp;
pub mod user;

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::process;
use super::spec::{ContainerSpec, Mount, MountKind, NamespaceKind, Network};
use super::userns;

/// Failures of the init steps, named after the step.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("the spec has no process arguments")]
    NoArgs,
    #[error("argument or environment entry holds a NUL byte: {value:?}")]
    NulByte { value: String },
    #[error("wait for the shim")]
    AwaitShim(#[source] std::io::Error),
    #[error("join the container's cgroup")]
    JoinCgroup(#[from] crate::runtime::cgroups::CgroupError),
    #[error("enter a new cgroup namespace")]
    UnshareCgroup(#[source] nix::Error),
    #[error("join network namespace")]
    JoinNetwork(#[source] nix::Error),
    #[error("join the {kind:?} namespace")]
    JoinNamespace {
        kind: NamespaceKind,
        #[source]
        source: nix::Error,
    },
    #[error("bring up loopback")]
    Loopback(#[source] nix::Error),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Propagation(#[from] propagation::PropagationError),
    #[error(transparent)]
    UserNs(#[from] crate::runtime::userns::UserNsError),
    #[error(transparent)]
    Dev(#[from] dev::DevError),
    #[error("set hostname {hostname:?}")]
    Hostname {
        hostname: String,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Rlimit(#[from] rlimits::RlimitError),
    #[error(transparent)]
    KernelParam(#[from] kernel_params::KernelParamError),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(transparent)]
    Capability(#[from] capabilities::CapabilityError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("redirect stdio")]
    Stdio(#[source] nix::Error),
    #[error("terminal: {step}")]
    Terminal {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("change to working directory {cwd:?}")]
    Cwd {
        cwd: String,
        #[source]
        source: nix::Error,
    },
    #[error("executable {name:?} not found in the container (PATH searched: {path})")]
    NotFound { name: String, path: String },
    #[error("set no_new_privs or keepcaps")]
    Prctl(#[source] nix::Error),
    #[error("reset signal handling")]
    Signals(#[source] nix::Error),
    #[error("wait for start on the exec fifo")]
    AwaitStart(#[source] std::io::Error),
    #[error(transparent)]
    Hook(#[from] crate::runtime::hook::HookError),
    #[error("fork the service's process under the container's init")]
    Fork(#[source] nix::Error),
    #[error("exec {path}")]
    Exec {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error(
        "exec {path}: the program is built for {program_platform} and this device is \
         {device_platform}: the image is for another architecture"
    )]
    WrongArchitecture {
        path: String,
        program_platform: &'static str,
        device_platform: String,
        #[source]
        source: nix::Error,
    },
}

/// What the child needs, prepared by the shim before clone.
#[derive(Debug)]
pub struct InitContext<'a> {
    pub spec: &'a ContainerSpec,
    /// Host path where the rootfs is mounted (inside the new mount namespace).
    pub rootfs: &'a Path,
    pub nodes: &'a [dev::Node],
    /// Network namespace to join, opened on the host.
    pub netns: Option<&'a OwnedFd>,
    /// v1 `tasks` files to join by itself after `C`; `None` when the shim moves it.
    pub join_cgroup: Option<&'a [PathBuf]>,
    /// Log pipes for stdout and stderr; `None` keeps the inherited stdio.
    pub stdout: Option<&'a OwnedFd>,
    pub stderr: Option<&'a OwnedFd>,
    /// Namespaces to enter, opened on the host, mount first; never the pid one (entered
    /// by the shim before clone).
    pub joined_namespaces: &'a [(NamespaceKind, OwnedFd)],
    /// The OCI `create` (no shim stays behind): once ready, wait for `start` on this exec
    /// fifo instead of the shim's `S` (see `oci::fifo`).
    pub exec_fifo: Option<&'a OwnedFd>,
    /// The OCI `create`'s terminal: stdio is a pty whose master goes to the console socket.
    pub console: Option<&'a console::Console>,
    /// The OCI `create` has hooks to run before pivot_root (prestart, createRuntime,
    /// createContainer): report `H` there and wait for the shim's `H`.
    pub pause_before_pivot: bool,
}

/// Namespaces created at clone; the cgroup namespace comes later, once the child is in its
/// cgroup, so the container sees that cgroup as its root.
pub fn clone_flags(spec: &ContainerSpec) -> CloneFlags {
    let host = spec.host_namespaces;
    let mut flags = CloneFlags::empty();
    for (shared, flag) in [
        (false, CloneFlags::CLONE_NEWNS),
        (host.pid, CloneFlags::CLONE_NEWPID),
        (host.uts, CloneFlags::CLONE_NEWUTS),
        (host.ipc, CloneFlags::CLONE_NEWIPC),
    ] {
        let joined = spec
            .joined_namespaces
            .iter()
            .any(|j| j.kind.clone_flag() == flag);
        if !shared && !joined {
            flags |= flag;
        }
    }
    if spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

/// Checks everything that can be checked before any process exists.
pub fn check(spec: &ContainerSpec) -> Result<(), InitError> {
    if spec.process.args.is_empty() {
        return Err(InitError::NoArgs);
    }
    cstrings(&spec.process.args)?;
    cstrings(&spec.process.env)?;
    let caps = capabilities::plan(&spec.process)?.bounding;
    // An operator's profile that cannot become a filter (too long for the kernel) fails
    // here, before any process exists; the default one is known to compile (unit tests).
    if spec.seccomp_profile.is_some() {
        seccomp::filters(spec, &caps)?;
    }
    for limit in &spec.process.rlimits {
        rlimits::parse(limit)?;
    }
    kernel_params::check(&spec.sysctl, &spec.network, spec.process.oom_score_adj)?;
    propagation::root_flags(spec.rootfs_propagation.as_deref())?;
    if let Some(mapping) = &spec.user_namespace {
        userns::check(mapping)?;
    }
    Ok(())
}

/// The child's main: sets the container up, reports, waits for start, execs. Returns only
/// the error that stopped it; the caller reports it to the shim and exits.
pub fn run(ctx: &InitContext<'_>, report: &mut File, go: &mut File) -> InitError {
    match setup_and_exec(ctx, report, go) {
        Ok(never) => match never {},
        Err(err) => err,
    }
}

/// The init's steps, in order; each says what it does and why in its own function below.
fn setup_and_exec(
    ctx: &InitContext<'_>,
    report: &mut File,
    go: &mut File,
) -> Result<std::convert::Infallible, InitError> {
    let spec = ctx.spec;
    // 1. Into the container's cgroup, then into the joined and own namespaces.
    let rootfs_tree = await_cgroup(ctx, go)?;
    let own_cgroupns = enter_namespaces(ctx)?;
    // 2. Network.
    enter_network(ctx)?;
    // 3. Root filesystem and mounts.
    let propagation = build_rootfs(ctx, rootfs_tree.as_ref(), own_cgroupns)?;
    // 4. Minimal /dev.
    populate_dev(ctx)?;
    // 5. Switch root; the host's tree is gone from here on.
    switch_root(ctx, report, go, propagation)?;
    // 6. Kernel parameters, masked and read-only paths.
    protect_kernel_and_paths(spec)?;
    // 7. Identity and limits.
    let privileges = set_identity_and_limits(spec)?;
    // 8. Stdio, umask and working directory, and the program to run.
    let program = prepare_process(ctx)?;
    // 9. Drop privileges.
    drop_privileges(spec, &privileges)?;
    // 10. Ready; exec when told to start (with `init`: fork, exec in the child, and stay
    //     as its init).
    await_start(ctx, report, go)?;
    let exec = || {
        exec_program(
            &program.path,
            &program.args,
            &program.env,
            &spec.process.args[0],
        )
    };
    if spec.init {
        pid1::run(report, exec);
    }
    Err(exec())
}

/// Step 1: waits until the shim has put us in the container's cgroup (and, with a user
/// namespace, written our id maps and built the rootfs, whose mount comes back), then makes
/// it our root; on v1 joins the cgroup itself.
fn await_cgroup(ctx: &InitContext<'_>, go: &mut File) -> Result<Option<OwnedFd>, InitError> {
    let rootfs_tree = if ctx.spec.user_namespace.is_some() {
        let (byte, tree) = userns::receive_go(go.as_fd())?;
        expect_byte(byte, b'C')?;
        userns::become_root()?;
        tree
    } else {
        await_byte(go, b'C')?;
        None
    };
    if let Some(tasks) = ctx.join_cgroup {
        crate::runtime::cgroups::join_self(tasks)?;
    }
    Ok(rootfs_tree)
}

/// Step 1, on: enters the joined namespaces (opened on the host by the shim, mount first, so
/// that everything below happens in it), then a cgroup namespace of its own unless the host's
/// is shared or one is joined. Returns whether it made its own cgroup namespace.
fn enter_namespaces(ctx: &InitContext<'_>) -> Result<bool, InitError> {
    for (kind, fd) in ctx.joined_namespaces {
        nix::sched::setns(fd, kind.clone_flag()).map_err(|source| InitError::JoinNamespace {
            kind: *kind,
            source,
        })?;
    }
    let cgroup_joined = ctx
        .joined_namespaces
        .iter()
        .any(|(kind, _)| *kind == NamespaceKind::Cgroup);
    let own_cgroupns = !ctx.spec.host_namespaces.cgroup && !cgroup_joined;
    if own_cgroupns {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(InitError::UnshareCgroup)?;
    }
    Ok(own_cgroupns)
}

/// Step 2: joins the given network namespace, or brings up loopback in the fresh one.
fn enter_network(ctx: &InitContext<'_>) -> Result<(), InitError> {
    match (&ctx.spec.network, ctx.netns) {
        (Network::Join(_), Some(fd)) => {
            nix::sched::setns(fd, CloneFlags::CLONE_NEWNET).map_err(InitError::JoinNetwork)?
        }
        (Network::None, _) => process::bring_up_loopback().map_err(InitError::Loopback)?,
        _ => {}
    }
    Ok(())
}

/// Step 3: the root filesystem and mounts, in our own mount namespace: private unless the
/// spec gives another propagation, and then still sending nothing to the host. Returns the
/// root's propagation, which `switch_root` finishes.
fn build_rootfs(
    ctx: &InitContext<'_>,
    rootfs_tree: Option<&OwnedFd>,
    own_cgroupns: bool,
) -> Result<MsFlags, InitError> {
    let spec = ctx.spec;
    let propagation = propagation::root_flags(spec.rootfs_propagation.as_deref())?;
    propagation::prepare(propagation, ctx.rootfs)?;
    match rootfs_tree {
        Some(tree) => userns::attach_rootfs(tree, ctx.rootfs)?,
        None => mounts::mount_rootfs(&spec.rootfs, ctx.rootfs)?,
    }
    propagation::isolate_rootfs(propagation, ctx.rootfs)?;
    for m in &spec.mounts {
        mount_in_rootfs(ctx, m, own_cgroupns)?;
    }
    Ok(propagation)
}

/// One of the spec's mounts, under the rootfs.
fn mount_in_rootfs(ctx: &InitContext<'_>, m: &Mount, own_cgroupns: bool) -> Result<(), InitError> {
    // Sharing the host's cgroup namespace, a `cgroup` mount shows what the host's
    // cgroup2 mount shows: bind that one. A new cgroup2 superblock in the host's
    // namespace costs the kernel 14-24 ms here, against 2 ms in a namespace of its own.
    let host_cgroup2 = (m.kind == MountKind::Cgroup && !own_cgroupns)
        .then(mounts::host_cgroup2_mount)
        .flatten();
    if let Some(host) = host_cgroup2 {
        mounts::bind_host_cgroup2(ctx.rootfs, m, &host)?;
        return Ok(());
    }
    match mounts::mount_one(ctx.rootfs, m) {
        // A user namespace cannot mount sysfs for a network namespace it does not own
        // (host or joined network): show the host's, read-only, like runc.
        Err(mounts::MountError::Mount { kind, .. })
            if ctx.spec.user_namespace.is_some() && kind == MountKind::Sysfs =>
        {
            mounts::bind_host_sysfs(ctx.rootfs, m)?
        }
        other => other?,
    }
    Ok(())
}

/// Step 4: a minimal /dev: standard nodes plus passed-through devices, nothing else. A user
/// namespace may not create device nodes: the host's are bind-mounted instead.
fn populate_dev(ctx: &InitContext<'_>) -> Result<(), InitError> {
    let creation = if ctx.spec.user_namespace.is_some() {
        dev::Creation::BindHost
    } else {
        dev::Creation::Mknod
    };
    dev::populate(ctx.rootfs, ctx.nodes, creation)?;
    Ok(())
}

/// Step 5: pivot_root into the rootfs. The OCI create-time hooks run just before, with the
/// container's namespaces and mounts made (runtime-spec): report `H` and wait for the shim.
fn switch_root(
    ctx: &InitContext<'_>,
    report: &mut File,
    go: &mut File,
    propagation: MsFlags,
) -> Result<(), InitError> {
    if ctx.pause_before_pivot {
        report.write_all(b"H").map_err(InitError::AwaitShim)?;
        await_byte(go, b'H')?;
    }
    mounts::pivot_into(ctx.rootfs)?;
    propagation::finish(propagation)?;
    Ok(())
}

/// Step 6: the container's own kernel parameters (through its /proc, before /proc/sys is
/// made read-only), then hide and freeze what containers must not touch.
fn protect_kernel_and_paths(spec: &ContainerSpec) -> Result<(), InitError> {
    kernel_params::apply_sysctls(&spec.sysctl)?;
    for path in &spec.masked_paths {
        mounts::mask(path)?;
    }
    for path in &spec.readonly_paths {
        mounts::make_readonly(path)?;
    }
    if spec.readonly_rootfs {
        mounts::readonly_root()?;
    }
    Ok(())
}

/// Who the process becomes and what it keeps, resolved while /etc is still readable by us.
struct Privileges {
    ids: user::Ids,
    caps: capabilities::CapabilityPlan,
    filters: Vec<seccompiler::BpfProgram>,
}

/// Step 7: hostname, rlimits and OOM score; resolves the user, capabilities and seccomp
/// filters that step 9 applies.
fn set_identity_and_limits(spec: &ContainerSpec) -> Result<Privileges, InitError> {
    if let Some(hostname) = &spec.hostname {
        nix::unistd::sethostname(hostname).map_err(|source| InitError::Hostname {
            hostname: hostname.clone(),
            source,
        })?;
    }
    rlimits::apply(&spec.process.rlimits)?;
    kernel_params::apply_oom_score_adj(spec.process.oom_score_adj)?;
    let ids = user::resolve_in_container(&spec.process.user, &spec.process.group_add)?;
    let caps = capabilities::plan(&spec.process)?;
    let filters = seccomp::filters(spec, &caps.bounding)?;
    Ok(Privileges { ids, caps, filters })
}

/// The program to exec, with its arguments and environment.
struct Program {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

/// Step 8: stdio (the console or the log pipes), umask and working directory, and the
/// program found on the container's PATH.
fn prepare_process(ctx: &InitContext<'_>) -> Result<Program, InitError> {
    let process = &ctx.spec.process;
    match ctx.console {
        Some(terminal) => console::attach(terminal)?,
        None => redirect_stdio(ctx)?,
    }
    if let Some(mask) = process.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let cwd = &process.cwd;
    nix::unistd::chdir(cwd.as_str()).map_err(|source| InitError::Cwd {
        cwd: cwd.clone(),
        source,
    })?;
    let args = cstrings(&process.args)?;
    let env = cstrings(&process.env)?;
    let path = find_program(&process.args[0], &process.env, |p| p.is_file())?;
    let path = CString::new(path.into_os_string().into_encoded_bytes()).map_err(|e| {
        InitError::NulByte {
            value: String::from_utf8_lossy(&e.into_vec()).into_owned(),
        }
    })?;
    Ok(Program { path, args, env })
}

/// Step 9: drops privileges: bounding set, user (keeping caps across setuid), final caps,
/// no_new_privs, seccomp last (it forbids the calls above), and resets signal handling.
/// Without no_new_privs the kernel takes a filter only from a CAP_SYS_ADMIN holder: then it
/// goes in first, while we still have every capability (the filter allows the setuid,
/// capset and exec calls that follow), as runc does.
fn drop_privileges(spec: &ContainerSpec, privileges: &Privileges) -> Result<(), InitError> {
    let Privileges { ids, caps, filters } = privileges;
    let no_new_privileges = spec.process.no_new_privileges;
    if !no_new_privileges {
        seccomp::install_keeping_privileges(filters)?;
    }
    capabilities::limit_bounding(&caps.bounding)?;
    nix::sys::prctl::set_keepcaps(true).map_err(InitError::Prctl)?;
    user::switch(ids)?;
    nix::sys::prctl::set_keepcaps(false).map_err(InitError::Prctl)?;
    capabilities::apply(caps)?;
    if no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(InitError::Prctl)?;
        seccomp::install(filters)?;
    }
    process::reset_signals().map_err(InitError::Signals)?;
    Ok(())
}

/// Step 10: reports ready (`R`) and waits for start: the shim's `S`, or for an OCI `create`
/// the state `start` writes into the exec fifo, which the startContainer hooks read on stdin.
fn await_start(ctx: &InitContext<'_>, report: &mut File, go: &mut File) -> Result<(), InitError> {
    report.write_all(b"R").map_err(InitError::AwaitShim)?;
    match ctx.exec_fifo {
        Some(fifo) => {
            let state = await_start_on_fifo(fifo)?;
            for hook in &ctx.spec.start_container_hooks {
                crate::runtime::hook::run(hook, &state)?;
            }
        }
        None => await_byte(go, b'S')?,
    }
    Ok(())
}

/// Execs `program`; returns only the error, saying "exec format error" and, for an ELF
/// program of another architecture, which one.
fn exec_program(program: &CString, args: &[CString], env: &[CString], name: &str) -> InitError {
    let source = match process::exec(program, args, env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    if source == nix::errno::Errno::ENOEXEC {
        if let Some(program_platform) = program_platform(program) {
            return InitError::WrongArchitecture {
                path: name.to_owned(),
                program_platform,
                device_platform: crate::platform::this_device().to_string(),
                source,
            };
        }
    }
    InitError::Exec {
        path: name.to_owned(),
        source,
    }
}

/// The platform a program that failed with ENOEXEC was built for, when it is an ELF file.
fn program_platform(program: &std::ffi::CStr) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(program.to_bytes()));
    let mut header = [0u8; 20];
    File::open(path).ok()?.read_exact(&mut header).ok()?;
    crate::platform::elf_platform(&header)
}

/// Blocks until `start` writes the container's state (one JSON line) into the exec fifo.
fn await_start_on_fifo(fifo: &OwnedFd) -> Result<Vec<u8>, InitError> {
    let mut reader = File::from(fifo.try_clone().map_err(InitError::AwaitStart)?);
    let mut state = Vec::new();
    let mut byte = [0u8];
    loop {
        match reader.read(&mut byte).map_err(InitError::AwaitStart)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => state.push(byte[0]),
        }
    }
    Ok(state)
}

fn await_byte(go: &mut File, want: u8) -> Result<(), InitError> {
    let mut byte = [0u8];
    go.read_exact(&mut byte).map_err(InitError::AwaitShim)?;
    expect_byte(byte[0], want)
}

fn expect_byte(got: u8, want: u8) -> Result<(), InitError> {
    if got == want {
        Ok(())
    } else {
        Err(InitError::AwaitShim(std::io::Error::other(
            "shim sent an unexpected byte",
        )))
    }
}

fn redirect_stdio(ctx: &InitContext<'_>) -> Result<(), InitError> {
    let (Some(out), Some(err)) = (ctx.stdout, ctx.stderr) else {
        return Ok(());
    };
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(InitError::Stdio)?;
    nix::unistd::dup2(null, 0).map_err(InitError::Stdio)?;
    nix::unistd::close(null).map_err(InitError::Stdio)?;
    nix::unistd::dup2(out.as_raw_fd(), 1).map_err(InitError::Stdio)?;
    nix::unistd::dup2(err.as_raw_fd(), 2).map_err(InitError::Stdio)?;
    Ok(())
}

fn cstrings(values: &[String]) -> Result<Vec<CString>, InitError> {
    values
        .iter()
        .map(|v| CString::new(v.as_bytes()).map_err(|_| InitError::NulByte { value: v.clone() }))
        .collect()
}

/// `name` as given when it has a '/', else the first `PATH` entry (from the container's
/// environment, not ours) where `exists` holds.
pub fn find_program(
    name: &str,
    env: &[String],
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, InitError> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| exists(candidate))
        .ok_or_else(|| InitError::NotFound {
            name: name.into(),
            path: path.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_program_searches_the_container_path() {
        let env = vec!["PATH=/sbin:/bin".to_string()];
        let got = find_program("sh", &env, |p| p == Path::new("/bin/sh")).unwrap();
        assert_eq!(got, PathBuf::from("/bin/sh"));
        assert_eq!(
            find_program("/x/y", &env, |_| false).unwrap(),
            PathBuf::from("/x/y")
        );
        let err = find_program("nope", &env, |_| false).unwrap_err();
        assert!(err.to_string().contains("/sbin:/bin"));
    }

    #[test]
    fn check_rejects_empty_args_unknown_capabilities_and_propagation() {
        let mut spec =
            ContainerSpec::new(crate::runtime::spec::Rootfs::Directory("/".into()), vec![]);
        assert!(matches!(check(&spec), Err(InitError::NoArgs)));
        spec.process.args = vec!["true".into()];
        spec.process.capabilities = Some(vec!["CAP_NOPE".into()]);
        assert!(matches!(check(&spec), Err(InitError::Capability(_))));
        spec.process.capabilities = None;
        spec.rootfs_propagation = Some("bind".into());
        assert!(matches!(check(&spec), Err(InitError::Propagation(_))));
    }
}
