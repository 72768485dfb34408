//! Debian's podman driving the agent as its OCI runtime (root only): `podman --runtime
//! <dir>/coracle-runc run …` on an image imported from a busybox rootfs. Podman's conmon
//! calls `create --bundle --pid-file`, `start`, `kill` and `delete --force`; podman's
//! own exit code and output are checked. Skipped, saying so, when podman is not installed
//! (`.ci/packages.txt` lists it).
//!
//! Each test has its own podman storage, run and tmp dirs, no network (`--network none`:
//! podman's default bridge would change the host's firewall) and its own cgroup parent under
//! `coracle/`. The runtime's state is in its default root, `/run/coracle-runc`: podman 4.3's
//! cleanup process drops `--runtime-flag root=…`, so a private root would leave its
//! containers undeleted. Container ids are podman's random 64 hex digits.

mod runtime_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use runtime_support::{busybox_rootfs, eventually, CGROUP_ROOT};

const IMAGE: &str = "localhost/coracle-busybox:test";
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One test's podman: private dirs, the agent as its runtime through a `coracle-runc` link,
/// and the busybox image imported. Dropping it removes containers, mounts and cgroups.
struct Podman {
    dir: tempfile::TempDir,
    runtime: PathBuf,
    cgroup_parent: String,
}

impl Podman {
    /// `None` when podman is not installed.
    fn new() -> Option<Self> {
        let installed = Command::new("podman")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("SKIPPED: podman is not installed (apt-get install podman)");
            return None;
        }
        assert!(nix::unistd::geteuid().is_root(), "run as root");
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = dir.path().join("coracle-runc");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_coracle-agent"), &runtime).expect("link");
        let cgroup_parent = format!(
            "coracle/podman-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let podman = Self {
            dir,
            runtime,
            cgroup_parent,
        };
        podman.import_busybox();
        Some(podman)
    }

    /// `podman` with this test's global flags.
    fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(["--storage-driver", "overlay"])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs podman to its end; stdout and stderr go to files (conmon may outlive it).
    fn run(&self, args: &[&str]) -> Output {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let out_path = self.dir.path().join(format!("stdout-{n}"));
        let err_path = self.dir.path().join(format!("stderr-{n}"));
        let status = self
            .command(args)
            .stdout(fs::File::create(&out_path).expect("stdout file"))
            .stderr(fs::File::create(&err_path).expect("stderr file"))
            .status()
            .expect("run podman");
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
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run` flags every test passes: this test's cgroup parent, no network, and
    /// rlimits no higher than this host's hard ones (podman's defaults, 1048576 open files
    /// and processes, need CAP_SYS_RESOURCE, which this CI machine lacks).
    fn run_flags(&self) -> Vec<String> {
        [
            "--network",
            "none",
            "--cgroup-parent",
            &format!("/{}", self.cgroup_parent),
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=32768:32768",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// `podman run <run_flags> <args>`.
    fn podman_run(&self, args: &[&str]) -> Output {
        let flags = self.run_flags();
        let mut all: Vec<&str> = vec!["run"];
        all.extend(flags.iter().map(String::as_str));
        all.extend(args);
        self.run(&all)
    }

    /// The image: a busybox rootfs tarred and `podman import`ed (no registry).
    fn import_busybox(&self) {
        let rootfs = self.dir.path().join("image-rootfs");
        busybox_rootfs(&rootfs);
        let tar = self.dir.path().join("image.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(status.success(), "tar the busybox rootfs");
        self.ok(&["import", tar.to_str().expect("utf-8 temp path"), IMAGE]);
    }

    /// The container cgroup dirs podman asked for (`<parent>/libpod-<id>`) and conmon's.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for hierarchy in fs::read_dir(CGROUP_ROOT).into_iter().flatten().flatten() {
            let parent = hierarchy.path().join(&self.cgroup_parent);
            for child in fs::read_dir(&parent).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    dirs.push(child.path());
                }
            }
        }
        dirs
    }

    /// Container cgroups left (conmon's own is podman's business, removed on drop).
    fn container_cgroups(&self) -> Vec<PathBuf> {
        self.cgroup_dirs()
            .into_iter()
            .filter(|d| !d.ends_with("conmon"))
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force"]);
        // containers/storage bind-mounts its overlay dir on itself; unmount what is ours.
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| Path::new(p).starts_with(self.dir.path()))
            .collect();
        ours.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for mount in ours {
            let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
        }
        let mut dirs = self.cgroup_dirs();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for dir in dirs {
            let _ = fs::remove_dir(dir);
        }
        for hierarchy in fs::read_dir(CGROUP_ROOT).into_iter().flatten().flatten() {
            let _ = fs::remove_dir(hierarchy.path().join(&self.cgroup_parent));
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
#[ignore = "needs root"]
fn podman_run_rm_through_the_agent_prints_and_exits_with_the_container_s_code() {
    let Some(podman) = Podman::new() else { return };
    let out = podman.podman_run(&[
        "--rm",
        IMAGE,
        "/bin/sh",
        "-c",
        "echo hello; grep -q libpod- /proc/self/cgroup && echo in-its-cgroup; exit 3",
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(3), "hello\nin-its-cgroup\n".to_owned()),
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(
        podman.ok(&["ps", "--all", "--quiet"]),
        "",
        "--rm removed it"
    );
    assert_eq!(
        podman.container_cgroups(),
        Vec::<PathBuf>::new(),
        "delete removed the container's cgroups"
    );
}

#[test]
#[ignore = "needs root"]
fn podman_run_detached_then_stop_and_rm_through_the_agent() {
    let Some(podman) = Podman::new() else { return };
    let script = "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done";
    let out = podman.podman_run(&["--detach", IMAGE, "/bin/sh", "-c", script]);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 64, "podman printed the container id: {id:?}");
    assert!(
        eventually(Duration::from_secs(20), || podman
            .ok(&["logs", &id])
            .contains("up")),
        "the container started"
    );
    let running = podman.ok(&["inspect", "--format", "{{.State.Status}}", &id]);
    assert_eq!(running.trim(), "running");

    podman.ok(&["stop", "--time", "10", &id]);
    let state = podman.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &id,
    ]);
    assert_eq!(state.trim(), "exited 0", "SIGTERM reached the trap");
    assert_eq!(podman.ok(&["logs", &id]), "up\nbye\n");
    podman.ok(&["rm", &id]);
    assert_eq!(podman.ok(&["ps", "--all", "--quiet"]), "");
    assert_eq!(podman.container_cgroups(), Vec::<PathBuf>::new());
}

#[test]
#[ignore = "needs root"]
fn podman_run_with_a_terminal_gets_the_container_s_own_pty() {
    let Some(podman) = Podman::new() else { return };
    let out = podman.podman_run(&[
        "--rm",
        "--tty",
        IMAGE,
        "/bin/sh",
        "-c",
        "tty; echo hello; exit 4",
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(4), "/dev/pts/0\r\nhello\r\n".to_owned()),
        "stderr: {}",
        text(&out.stderr)
    );
}

#[test]
#[ignore = "needs root"]
fn podman_device_cgroup_rules_with_wildcards_are_enforced() {
    let Some(podman) = Podman::new() else { return };
    // `c 10:* m` lets the container create any misc device node; `a *:* r` grants reads
    // only (on cgroup v1 an `a` line would allow everything: written as `c` and `b`).
    let out = podman.podman_run(&[
        "--rm",
        "--cap-add",
        "MKNOD",
        "--device-cgroup-rule",
        "c 10:* m",
        "--device-cgroup-rule",
        "a *:* r",
        IMAGE,
        "/bin/sh",
        "-c",
        "mknod /tmp/fuse c 10 229 && echo made; mknod /tmp/other c 11 1 2>/dev/null || echo refused",
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "made\nrefused\n".to_owned()),
        "stderr: {}",
        text(&out.stderr)
    );
    // --privileged lists the host's devices, /dev/null and the other standard ones too.
    let out = podman.podman_run(&["--rm", "--privileged", IMAGE, "/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
