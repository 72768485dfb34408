//! The OCI command line end to end (root only): `coracle-agent oci` and a `coracle-runc`
//! link driven as separate processes on a busybox bundle, as runtime-tools and podman do.

mod runtime_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use runtime_support::{eventually, Harness};

static NEXT_OUTPUT: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One test's OCI runtime: the agent binary with its own `--root` and cgroup parent.
struct Oci<'a> {
    h: &'a Harness,
    root: PathBuf,
    program: PathBuf,
}

impl<'a> Oci<'a> {
    fn new(h: &'a Harness) -> Self {
        Self {
            h,
            root: h.dir.path().join("oci-root"),
            program: PathBuf::from(env!("CARGO_BIN_EXE_coracle-agent")),
        }
    }

    /// The same binary through a `coracle-runc` link, which takes the verbs directly.
    fn via_runc_link(h: &'a Harness) -> Self {
        let link = h.dir.path().join("coracle-runc");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_coracle-agent"), &link).expect("link");
        Self {
            program: link,
            ..Self::new(h)
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        if !self.program.ends_with("coracle-runc") {
            command.arg("oci");
        }
        command
            .arg("--root")
            .arg(&self.root)
            .args(["--cgroup-parent", &self.h.parent])
            .args(args);
        command
    }

    /// Runs a verb to its end. Its stdout and stderr are files, not pipes: a created
    /// container's init keeps the caller's stdio, so a pipe would see EOF only when the
    /// container exits (runtime-tools does the same).
    fn run(&self, args: &[&str]) -> Output {
        let n = NEXT_OUTPUT.fetch_add(1, Ordering::SeqCst);
        let out_path = self.h.dir.path().join(format!("stdout-{n}"));
        let err_path = self.h.dir.path().join(format!("stderr-{n}"));
        let status = self
            .command(args)
            .stdout(fs::File::create(&out_path).expect("stdout file"))
            .stderr(fs::File::create(&err_path).expect("stderr file"))
            .status()
            .expect("run the runtime");
        Output {
            status,
            stdout: fs::read(&out_path).expect("read stdout"),
            stderr: fs::read(&err_path).expect("read stderr"),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn state(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state is JSON")
    }

    fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap_or("").to_owned()
    }
}

/// A bundle running `script` over the harness's busybox rootfs, with `extra` merged into
/// config.json's top level.
fn write_bundle(h: &Harness, name: &str, script: &str, extra: serde_json::Value) -> PathBuf {
    let bundle = h.dir.path().join(name);
    fs::create_dir_all(&bundle).expect("bundle dir");
    let mut config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/sh", "-c", script], "cwd": "/",
                    "env": ["PATH=/bin"]},
        "root": {"path": h.lower.to_str().expect("utf-8 temp path")},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"},
                                 {"type": "ipc"}, {"type": "uts"}]}
    });
    if let (Some(base), Some(more)) = (config.as_object_mut(), extra.as_object()) {
        for (key, value) in more {
            base.insert(key.clone(), value.clone());
        }
    }
    fs::write(bundle.join("config.json"), config.to_string()).expect("write config.json");
    bundle
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
#[ignore = "needs root"]
fn oci_create_start_kill_delete_moves_through_every_status() {
    assert!(is_root(), "run as root");
    let h = Harness::new();
    let oci = Oci::new(&h);
    let bundle = write_bundle(
        &h,
        "bundle",
        "echo started > /tmp/started; exec sleep 1000",
        serde_json::json!({}),
    );
    let pid_file = h.dir.path().join("pid");
    oci.ok(&[
        "create",
        "--bundle",
        path_str(&bundle),
        "--pid-file",
        path_str(&pid_file),
        "life",
    ]);
    let state = oci.state("life");
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], "life");
    assert_eq!(state["ociVersion"], "1.0.2");
    assert_eq!(state["bundle"], path_str(&bundle));
    let pid = fs::read_to_string(&pid_file).expect("pid file");
    assert_eq!(state["pid"].to_string(), pid);
    // Created means not exec'd: the process has not written anything yet.
    assert!(!h.lower.join("tmp/started").exists());
    assert!(oci.run(&["start", "nope"]).status.code() == Some(1));

    oci.ok(&["start", "life"]);
    assert_eq!(oci.status("life"), "running");
    assert!(eventually(Duration::from_secs(10), || h
        .lower
        .join("tmp/started")
        .exists()));
    assert!(
        !oci.run(&["delete", "life"]).status.success(),
        "delete of a running container"
    );
    assert_eq!(oci.ok(&["list"]).trim(), "life");

    oci.ok(&["kill", "--all", "life", "SIGKILL"]);
    assert!(eventually(Duration::from_secs(10), || oci.status("life") == "stopped"));
    assert!(oci.state("life").get("pid").is_none());
    oci.ok(&["delete", "life"]);
    assert!(!oci.run(&["state", "life"]).status.success());
    // Gone: a plain delete fails, a forced one succeeds (runc's answers; podman relies on it).
    assert!(!oci.run(&["delete", "life"]).status.success());
    oci.ok(&["delete", "--force", "life"]);
    assert!(oci.ok(&["list"]).trim().is_empty());
    fs::remove_file(h.lower.join("tmp/started")).expect("clean the shared rootfs");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn oci_run_through_the_runc_link_exits_with_the_container_s_code() {
    assert!(is_root(), "run as root");
    let h = Harness::new();
    let oci = Oci::via_runc_link(&h);
    let bundle = write_bundle(&h, "bundle", "echo out; exit 7", serde_json::json!({}));
    let out = oci.run(&["run", "--bundle", path_str(&bundle), "short"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out\n",
        "stdio passes through"
    );
    assert!(
        oci.ok(&["list"]).trim().is_empty(),
        "run deletes the container"
    );
    let features: serde_json::Value =
        serde_json::from_str(&oci.ok(&["features"])).expect("features JSON");
    assert_eq!(features["hooks"].as_array().map(Vec::len), Some(6));
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn oci_hooks_run_at_their_points_with_the_state_on_stdin() {
    assert!(is_root(), "run as root");
    let h = Harness::new();
    let oci = Oci::new(&h);
    let out = h.dir.path().join("hooks-out");
    fs::create_dir_all(&out).expect("hook output dir");
    // Host hooks write to the host dir. The createContainer hook runs in the container's
    // mount namespace before pivot_root: host paths resolve, and the container's /out bind
    // mount is still at <rootfs>/out. The startContainer hook runs inside the container
    // and writes through that bind mount of the same dir at /out.
    let host_hook = |name: &str| {
        serde_json::json!({"path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}/{name}", out.display())], "timeout": 10})
    };
    let extra = serde_json::json!({
        "hooks": {
            "prestart": [host_hook("prestart")],
            "createRuntime": [host_hook("createRuntime")],
            "createContainer": [{"path": "/bin/sh", "args": ["sh", "-c",
                format!("cat > {}/createContainer; grep -q '/rootfs/out ' /proc/self/mountinfo && echo seen > {}/before-pivot", out.display(), out.display())]}],
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /out/startContainer"]}],
            "poststart": [host_hook("poststart")],
            "poststop": [host_hook("poststop")],
        },
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/out", "type": "bind", "source": path_str(&out),
                    "options": ["rbind"]}],
        "annotations": {"org.example.note": "hooked"},
    });
    let bundle = write_bundle(&h, "bundle", "exec sleep 1000", extra);
    oci.ok(&["create", "--bundle", path_str(&bundle), "hooked"]);
    let read = |name: &str| -> serde_json::Value {
        let text = fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} read {text:?}: {e}"))
    };
    let pid = oci.state("hooked")["pid"].clone();
    for name in ["prestart", "createRuntime", "createContainer"] {
        let state = read(name);
        assert_eq!(
            (&state["id"], &state["pid"], &state["bundle"]),
            (&"hooked".into(), &pid, &path_str(&bundle).into()),
            "{name}"
        );
        assert_eq!(state["annotations"]["org.example.note"], "hooked");
    }
    assert!(
        out.join("before-pivot").exists(),
        "createContainer ran in the container's mount namespace before pivot_root"
    );
    assert!(
        !out.join("startContainer").exists(),
        "startContainer ran before start"
    );
    oci.ok(&["start", "hooked"]);
    assert_eq!(read("poststart")["status"], "running");
    assert!(eventually(Duration::from_secs(10), || out
        .join("startContainer")
        .exists()
        && fs::read_to_string(out.join("startContainer"))
            .is_ok_and(|t| t.contains('}'))));
    assert_eq!(read("startContainer")["id"], "hooked");
    oci.ok(&["delete", "--force", "hooked"]);
    let stopped = read("poststop");
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["id"], "hooked");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn oci_failing_prestart_hook_fails_create_and_leaves_nothing() {
    assert!(is_root(), "run as root");
    let h = Harness::new();
    let oci = Oci::new(&h);
    let extra = serde_json::json!({"hooks": {"prestart": [{"path": "/bin/false"}]}});
    let bundle = write_bundle(&h, "bundle", "exec sleep 1000", extra);
    let log = h.dir.path().join("log.json");
    let out = oci.run(&[
        "--log",
        path_str(&log),
        "--log-format",
        "json",
        "create",
        "--bundle",
        path_str(&bundle),
        "failing",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/bin/false"), "{stderr}");
    let line: serde_json::Value =
        serde_json::from_str(fs::read_to_string(&log).expect("log file").trim()).expect("json");
    assert_eq!(line["level"], "error");
    assert!(oci.ok(&["list"]).trim().is_empty());
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn oci_refuses_an_unsupported_field_naming_it() {
    assert!(is_root(), "run as root");
    let h = Harness::new();
    let oci = Oci::new(&h);
    let terminal = serde_json::json!({"process": {"terminal": true, "user": {"uid": 0, "gid": 0},
        "args": ["/bin/true"], "cwd": "/"}});
    let bundle = write_bundle(&h, "terminal", "", terminal);
    let out = oci.run(&["create", "--bundle", path_str(&bundle), "tty"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("process.terminal"), "{stderr}");
    let apparmor = serde_json::json!({"process": {"apparmorProfile": "confined",
        "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "cwd": "/"}});
    let bundle = write_bundle(&h, "apparmor", "", apparmor);
    let out = oci.run(&["create", "--bundle", path_str(&bundle), "armored"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("process.apparmorProfile"),
        "{stderr}"
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn oci_joins_a_namespace_given_by_path_and_shares_one_left_out() {
    assert!(is_root(), "run as root");
    let h = Harness::new();
    let oci = Oci::new(&h);
    // A process in a uts namespace of its own, whose namespace the container joins.
    let mut holder = Command::new("unshare")
        .args(["--uts", "sleep", "1000"])
        .spawn()
        .expect("unshare (util-linux)");
    let ns_of = |pid: u32, ns: &str| fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
    let ours = |ns: &str| ns_of(std::process::id(), ns);
    assert!(eventually(Duration::from_secs(10), || ns_of(
        holder.id(),
        "uts"
    )
    .is_some_and(|ns| Some(ns) != ours("uts"))));
    let target = format!("/proc/{}/ns/uts", holder.id());
    let extra = serde_json::json!({"linux": {"namespaces": [
        {"type": "pid"}, {"type": "mount"}, {"type": "uts", "path": target}]}});
    let bundle = write_bundle(&h, "bundle", "exec sleep 1000", extra);
    oci.ok(&["create", "--bundle", path_str(&bundle), "joiner"]);
    let pid = oci.state("joiner")["pid"].as_u64().expect("pid") as u32;
    assert_eq!(ns_of(pid, "uts"), ns_of(holder.id(), "uts"), "joined uts");
    // ipc and network are left out of the bundle: the host's.
    assert_eq!(ns_of(pid, "ipc"), ours("ipc"));
    assert_eq!(ns_of(pid, "net"), ours("net"));
    assert_ne!(ns_of(pid, "pid"), ours("pid"));
    oci.ok(&["delete", "--force", "joiner"]);
    holder.kill().expect("kill the namespace holder");
    holder.wait().expect("reap the namespace holder");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn oci_installs_the_bundle_s_seccomp_filter_without_forcing_no_new_privs() {
    assert!(is_root(), "run as root");
    let h = Harness::new();
    let oci = Oci::new(&h);
    let extra = serde_json::json!({
        "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "env": ["PATH=/bin"],
            "noNewPrivileges": false,
            "args": ["/bin/sh", "-c",
                "grep NoNewPrivs /proc/self/status; mkdir /tmp/blocked 2>/dev/null || echo refused"]},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}],
            "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}},
    });
    let bundle = write_bundle(&h, "bundle", "", extra);
    let out = oci.run(&["run", "--bundle", path_str(&bundle), "filtered"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("NoNewPrivs:\t0"), "{stdout}");
    assert!(stdout.contains("refused"), "{stdout}");
    assert!(!h.lower.join("tmp/blocked").exists());
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn oci_terminal_s_master_goes_to_the_console_socket() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    assert!(is_root(), "run as root");
    let h = Harness::new();
    let oci = Oci::new(&h);
    let socket_path = h.dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket_path).expect("bind");
    let extra = serde_json::json!({
        "process": {"terminal": true, "consoleSize": {"height": 30, "width": 100},
                    "user": {"uid": 0, "gid": 0}, "cwd": "/", "env": ["PATH=/bin"],
                    "args": ["/bin/sh", "-c", "tty; echo $(stty size) > /dev/tty"]},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                    "options": ["newinstance", "ptmxmode=0666", "mode=0620"]}],
    });
    let bundle = write_bundle(&h, "tty", "", extra);
    let out = oci.run(&[
        "create",
        "--bundle",
        path_str(&bundle),
        "--console-socket",
        path_str(&socket_path),
        "tty",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (stream, _) = listener.accept().expect("the runtime connected");
    let master = coracle_agent::runtime::pty::receive_fd(stream.as_raw_fd())
        .expect("receive")
        .expect("the pty's master was sent");
    oci.ok(&["start", "tty"]);
    // Read until the container has exited: then the master reads EIO (no slave left).
    let mut output = Vec::new();
    let _ = fs::File::from(master).read_to_end(&mut output);
    assert_eq!(String::from_utf8_lossy(&output), "/dev/pts/0\r\n30 100\r\n");
    assert!(
        out.stdout.is_empty(),
        "the caller's stdio is not the container's"
    );
    assert!(eventually(Duration::from_secs(10), || oci.status("tty") == "stopped"));
    oci.ok(&["delete", "tty"]);
    h.assert_clean();
}
