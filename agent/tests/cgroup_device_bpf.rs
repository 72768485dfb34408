//! The cgroup v2 device allow-list (an eBPF program) on this host's real cgroup2 mount,
//! wherever the layout puts it (`/sys/fs/cgroup` on pure v2, `/sys/fs/cgroup/unified` on a
//! hybrid host; root only). The kernel's verifier must accept the program,
//! and a process in the cgroup must get EPERM for every device not on the list.

mod runtime_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use coracle_agent::runtime::cgroups::install_device_filter;
use coracle_agent::runtime::cgroups::limits::DeviceRule;
use coracle_agent::runtime::spec::{Device, DeviceAccess};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use runtime_support::{cgroup2_mount, Harness};

/// A cgroup of this test under the cgroup2 mount, removed on drop (its processes have
/// exited by then).
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(name: &str) -> Self {
        let path = cgroup2_mount().join(format!("coracle-test-{}-{name}", std::process::id()));
        fs::create_dir(&path).expect("create test cgroup");
        Self(path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

fn char_node(path: &Path, major: u64, minor: u64) {
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(major, minor),
    )
    .expect("mknod test node");
}

/// Opens each path for reading in a busybox shell, first moving the shell into `cgroup`
/// when given; prints `ok PATH` or the shell's error.
fn try_opens(cgroup: Option<&Path>, paths: &[&Path]) -> String {
    let mut script = String::new();
    if let Some(cg) = cgroup {
        script.push_str(&format!(
            "echo $$ > {}/cgroup.procs || exit 9\n",
            cg.display()
        ));
    }
    for p in paths {
        script.push_str(&format!("(exec 3<{0}) 2>&1 && echo ok {0}\n", p.display()));
    }
    script.push_str("exit 0\n");
    let out = Command::new("/bin/busybox")
        .args(["sh", "-c", &script])
        .output()
        .expect("run busybox sh");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root"]
fn device_filter_on_real_cgroup2_allows_listed_devices_and_denies_others_with_eperm() {
    let tmp = tempfile::tempdir().unwrap();
    let passed = tmp.path().join("i2c-twin"); // stands in for a passed-through device
    let kmsg = tmp.path().join("kmsg-twin"); // char 1:11, /dev/kmsg: not listed
    char_node(&passed, 89, 1);
    char_node(&kmsg, 1, 11);
    let allowed = [
        Path::new("/dev/null"),
        Path::new("/dev/zero"),
        Path::new("/dev/urandom"),
    ];
    let denied = [kmsg.as_path(), Path::new("/dev/loop-control")];
    let cgroup = TestCgroup::new("bpf");

    // The kernel's verifier accepts the program and it attaches.
    let rule = DeviceRule::new('c', 89, 1, DeviceAccess::ALL);
    assert!(install_device_filter(&cgroup.0, &[rule]).unwrap());

    // Outside the cgroup everything opens; inside only what the list names.
    let all: Vec<&Path> = allowed.iter().copied().chain(denied).collect();
    let outside = try_opens(None, &all);
    for p in &all {
        assert!(
            outside.contains(&format!("ok {}", p.display())),
            "{outside}"
        );
    }
    let inside = try_opens(Some(&cgroup.0), &[&allowed[..], &denied[..]].concat());
    for p in allowed {
        assert!(inside.contains(&format!("ok {}", p.display())), "{inside}");
    }
    for p in denied {
        let line = inside
            .lines()
            .find(|l| l.contains(&*p.to_string_lossy()))
            .unwrap_or_default();
        assert!(
            line.contains("Operation not permitted"),
            "{}: {inside}",
            p.display()
        );
    }
    // i2c 89:1 has no driver here: the open passes the filter and fails in the kernel
    // with ENXIO/ENODEV, not EPERM.
    let passed_out = try_opens(Some(&cgroup.0), &[&passed]);
    assert!(
        !passed_out.contains("Operation not permitted"),
        "{passed_out}"
    );
}

#[test]
#[ignore = "needs root"]
fn every_device_rule_on_real_cgroup2_lets_a_privileged_container_open_any_device() {
    let tmp = tempfile::tempdir().unwrap();
    let kmsg = tmp.path().join("kmsg-twin"); // char 1:11: denied by any narrower list
    char_node(&kmsg, 1, 11);
    let cgroup = TestCgroup::new("every");
    assert!(install_device_filter(&cgroup.0, &[DeviceRule::EVERY]).unwrap());
    let paths = [
        kmsg.as_path(),
        Path::new("/dev/loop-control"),
        Path::new("/dev/null"),
    ];
    let inside = try_opens(Some(&cgroup.0), &paths);
    for p in paths {
        assert!(inside.contains(&format!("ok {}", p.display())), "{inside}");
    }
}

#[test]
#[ignore = "needs root"]
fn v2_container_cannot_create_or_open_an_unlisted_device_but_uses_a_passed_one() {
    let h = Harness::with_cgroup_root(cgroup2_mount());
    // A loop-control twin passed through as the container's /dev/loop-control.
    let node = h.dir.path().join("loop-twin");
    char_node(&node, 10, 237);
    let mut spec = h.spec(
        "(exec 3</dev/loop-control) && echo passed=ok; \
         mknod /tmp/null2 c 1 3 && echo x > /tmp/null2 && echo listed=ok; \
         mknod /tmp/kmsg c 1 11; echo unlisted=$?",
    );
    spec.devices = vec![Device {
        host_path: node,
        container_path: Some("/dev/loop-control".into()),
        access: DeviceAccess::ALL,
        node: None,
    }];
    let (state, log) = h.run("bpf-dev", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    assert!(
        state.cgroup_paths.is_empty()
            && !state
                .conditions
                .iter()
                .any(|c| format!("{c:?}").contains("devices")),
        "{state:?}"
    );
    assert!(
        log.contains("passed=ok") && log.contains("listed=ok"),
        "{log}"
    );
    assert!(
        log.contains("unlisted=1") && log.contains("Operation not permitted"),
        "{log}"
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn v2_container_honours_read_only_device_permission() {
    let h = Harness::with_cgroup_root(cgroup2_mount());
    let node = h.dir.path().join("loop-twin");
    char_node(&node, 10, 237);
    let mut spec = h.spec(
        "(exec 3</dev/lc) && echo read=ok; \
         (exec 3>/dev/lc) 2>&1 && echo write=ok; \
         mknod /tmp/lc2 c 10 237 && echo mknod=ok; echo done",
    );
    spec.devices = vec![Device {
        host_path: node,
        container_path: Some("/dev/lc".into()),
        access: DeviceAccess::parse("r").unwrap(),
        node: None,
    }];
    let (state, log) = h.run("bpf-ro", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    assert!(log.contains("read=ok") && log.contains("done"), "{log}");
    assert!(
        !log.contains("write=ok") && !log.contains("mknod=ok"),
        "{log}"
    );
    assert!(log.contains("Operation not permitted"), "{log}");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn v2_init_is_born_in_its_cgroup_with_and_without_a_user_namespace() {
    use coracle_agent::runtime::spec::IdMapping;
    use coracle_agent::runtime::{ContainerId, Runtime};
    let h = Harness::with_cgroup_root(cgroup2_mount());
    for (name, userns) in [
        ("v2-plain", None),
        ("v2-userns", Some(IdMapping::root_at(300_000, 65_536))),
    ] {
        let mut spec = h.spec("sleep 30");
        spec.user_namespace = userns;
        let id: ContainerId = name.parse().unwrap();
        let state = h.runtime.create(&id, &spec).unwrap();
        h.runtime.start(&id).unwrap();
        let procs = fs::read_to_string(state.cgroup_paths[0].join("cgroup.procs")).unwrap();
        assert_eq!(procs.trim(), state.pid.to_string(), "{name}");
        h.kill_and_delete(&id);
    }
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn pattern_rules_on_real_cgroup2_match_any_number_and_grant_only_their_access() {
    let tmp = tempfile::tempdir().unwrap();
    let kmsg = tmp.path().join("kmsg-twin"); // char 1:11: allowed by `c 1:* r`
    char_node(&kmsg, 1, 11);
    let cgroup = TestCgroup::new("patterns");
    let access = |text: &str| DeviceAccess::parse(text).unwrap();
    let rules = [
        DeviceRule::pattern('c', Some(1), None, access("r")),
        DeviceRule::pattern('a', None, None, access("m")),
    ];
    assert!(install_device_filter(&cgroup.0, &rules).unwrap());
    let inside = try_opens(Some(&cgroup.0), &[&kmsg, Path::new("/dev/loop-control")]);
    assert!(
        inside.contains(&format!("ok {}", kmsg.display())),
        "{inside}"
    );
    let loop_control = inside
        .lines()
        .find(|l| l.contains("/dev/loop-control"))
        .unwrap_or_default();
    assert!(
        loop_control.contains("Operation not permitted"),
        "`a *:* m` grants mknod only: {inside}"
    );
    // Any device may be created (`a *:* m`), block or char.
    let script = format!(
        "echo $$ > {}/cgroup.procs || exit 9\n\
         mknod {dir}/c c 10 229 && mknod {dir}/b b 7 1 && echo made",
        cgroup.0.display(),
        dir = tmp.path().display()
    );
    let out = Command::new("/bin/busybox")
        .args(["sh", "-c", &script])
        .output()
        .expect("run busybox sh");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "made\n", "{out:?}");
}
