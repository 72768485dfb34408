//! Shared set-up for the runtime's root tests: a busybox rootfs built from Debian's
//! busybox-static, a runtime on a temp state dir and its own parent cgroup
//! (`coracle-test-<pid>-<n>`), and a guard that removes everything on drop — also when the
//! test failed — plus `assert_clean` to prove nothing of a container remained.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coracle_agent::runtime::cgroups::layout::CgroupMounts;
use coracle_agent::runtime::cgroups::CgroupConfig;
use coracle_agent::runtime::spec::{Rootfs, Stdio};
use coracle_agent::runtime::{
    ContainerId, ContainerSpec, ContainerState, LinuxRuntime, Runtime, RuntimeConfig, Status,
};
use nix::sys::signal::Signal;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
pub const BUSYBOX: &str = "/bin/busybox";

/// One test's world.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub runtime: LinuxRuntime,
    pub parent: String,
    pub lower: PathBuf,
    pub cgroup_root: PathBuf,
}

/// This machine's cgroup2 mount, wherever the layout puts it: `/sys/fs/cgroup` on pure v2,
/// `/sys/fs/cgroup/unified` on a hybrid host.
pub fn cgroup2_mount() -> PathBuf {
    CgroupMounts::read()
        .expect("read mountinfo")
        .v2
        .expect("a cgroup2 mount (pure v2 or hybrid layout)")
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Harness {
    pub fn new() -> Self {
        Self::with_cgroup_root(CGROUP_ROOT)
    }

    /// A harness whose containers get their cgroups under `root` (e.g. the cgroup2 mount,
    /// [`cgroup2_mount`], to run the v2 code on a hybrid host).
    pub fn with_cgroup_root(root: impl Into<PathBuf>) -> Self {
        Self::with_cgroup_config(root, false)
    }

    /// As [`Self::with_cgroup_root`], with `allow_missing_controllers` as given.
    pub fn with_cgroup_config(root: impl Into<PathBuf>, allow_missing_controllers: bool) -> Self {
        let root = root.into();
        let dir = tempfile::tempdir().expect("temp dir");
        let parent = format!(
            "coracle-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let lower = dir.path().join("lower");
        busybox_rootfs(&lower);
        let runtime = LinuxRuntime::new(RuntimeConfig {
            state_dir: dir.path().join("state"),
            cgroup: CgroupConfig {
                root: root.clone(),
                parent: parent.clone(),
                allow_missing_controllers,
            },
            shim_binary: PathBuf::from(env!("CARGO_BIN_EXE_coracle-agent")),
        });
        Self {
            dir,
            runtime,
            parent,
            lower,
            cgroup_root: root,
        }
    }

    /// A spec over an overlay of the busybox rootfs, logging to files.
    pub fn spec(&self, script: &str) -> ContainerSpec {
        let upper = self
            .dir
            .path()
            .join(format!("upper-{}", NEXT.fetch_add(1, Ordering::SeqCst)));
        let work = upper.with_extension("work");
        fs::create_dir_all(&upper).expect("upper dir");
        fs::create_dir_all(&work).expect("work dir");
        let mut spec = ContainerSpec::new(
            Rootfs::Overlay {
                lower: vec![self.lower.clone()],
                upper,
                work,
            },
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        );
        spec.stdio = Stdio::Logs {
            max_bytes: 1 << 20,
            keep: 1,
        };
        spec
    }

    pub fn upper_of(spec: &ContainerSpec) -> PathBuf {
        match &spec.rootfs {
            Rootfs::Overlay { upper, .. } => upper.clone(),
            Rootfs::Directory(d) => d.clone(),
        }
    }

    /// create → start → wait → read log (before delete) → delete.
    pub fn run(&self, id: &str, spec: &ContainerSpec) -> (ContainerState, String) {
        let id: ContainerId = id.parse().expect("valid id");
        self.runtime.create(&id, spec).expect("create");
        self.runtime.start(&id).expect("start");
        let state = self
            .runtime
            .wait(&id, Duration::from_secs(60))
            .expect("container exits");
        let log = coracle_agent::runtime::log_time::text_of(
            &fs::read_to_string(self.runtime.log_path(&id)).unwrap_or_default(),
        );
        self.runtime.delete(&id).expect("delete");
        (state, log)
    }

    /// SIGKILL, wait for the exit to be recorded, delete.
    pub fn kill_and_delete(&self, id: &ContainerId) {
        self.runtime.kill(id, Signal::SIGKILL).expect("kill");
        self.runtime
            .wait(id, Duration::from_secs(10))
            .expect("container stops");
        self.runtime.delete(id).expect("delete");
    }

    /// Cgroup dirs of this test's parent: in the v2 tree, or in every v1 hierarchy.
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        let v2 = self.cgroup_root.join(&self.parent);
        if v2.is_dir() {
            dirs.push(v2);
        }
        for entry in fs::read_dir(&self.cgroup_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = entry.path().join(&self.parent);
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// No mount under the test dir, no container cgroup, no shim of ours.
    pub fn assert_clean(&self) {
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(&root), "a mount under {root} remains");
        for dir in self.parent_dirs() {
            let children: Vec<_> = fs::read_dir(&dir)
                .expect("parent cgroup")
                .flatten()
                .filter(|e| e.path().is_dir())
                .collect();
            assert!(
                children.is_empty(),
                "cgroups remain under {}: {children:?}",
                dir.display()
            );
        }
        assert!(
            shim_pids(&root).is_empty(),
            "a shim for {root} is still running"
        );
        assert!(
            self.runtime.list().expect("list").is_empty(),
            "state dirs remain"
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for id in self.runtime.list().unwrap_or_default() {
            if self
                .runtime
                .state(&id)
                .is_ok_and(|s| s.status != Status::Stopped)
            {
                let _ = self.runtime.kill(&id, Signal::SIGKILL);
                let _ = self.runtime.wait(&id, Duration::from_secs(10));
            }
            let _ = self.runtime.delete(&id);
        }
        for pid in shim_pids(&self.dir.path().to_string_lossy()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        for dir in self.parent_dirs() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Pids of shims whose command line names a path under `root`.
pub fn shim_pids(root: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("__shim") && cmdline.contains(root) {
            pids.push(pid);
        }
    }
    pids
}

/// A rootfs of Debian's static busybox with every applet linked, /etc/passwd and group,
/// and a few empty dirs.
pub fn busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).expect("bin dir");
    fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox (install busybox-static)");
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
        }
    }
    for d in ["etc", "mnt", "tmp", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(d)).expect("rootfs dir");
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("passwd");
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
}

/// Polls `cond` every few ms until it holds or `timeout` passes.
pub fn eventually(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cond()
}
