//! The optional user namespace, for real (root only): container root is root inside and an
//! unprivileged id outside, and cannot do what host root can. (Module loading is not tried:
//! this build machine's kernel has no module support, so it would fail for any caller.)

mod runtime_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use coracle_agent::runtime::spec::{IdMapping, Mount, MountKind};
use runtime_support::Harness;

const HOST_START: u32 = 300_000;
const COUNT: u32 = 65_536;

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
#[ignore = "needs root"]
fn userns_root_is_root_inside_and_host_start_on_the_host() {
    let h = Harness::new();
    let mut spec = h.spec(
        "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; \
         stat -c lower=%u:%g /bin/busybox; echo data > /created; mkdir /made; \
         echo more >> /etc/passwd; stat -c root=%u /",
    );
    spec.user_namespace = Some(IdMapping::root_at(HOST_START, COUNT));
    let upper = Harness::upper_of(&spec);
    let (state, log) = h.run("userns", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    assert_eq!(
        squeeze(&log),
        format!("0 0 0 {HOST_START} {COUNT} 0 {HOST_START} {COUNT} lower=0:0 root=0",),
        "{log}"
    );
    // What the container wrote, new or copied up, belongs on the host to the mapped root.
    for path in ["created", "made", "etc/passwd", ""] {
        let meta = fs::metadata(upper.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (HOST_START, HOST_START), "{path}");
    }
    // The lower dir is untouched and still host root's.
    let lower_passwd = fs::metadata(h.lower.join("etc/passwd")).unwrap();
    assert_eq!(lower_passwd.uid(), 0);
    assert!(!fs::read_to_string(h.lower.join("etc/passwd"))
        .unwrap()
        .contains("more"));
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn userns_root_cannot_do_host_root_things_even_with_every_capability() {
    let h = Harness::new();
    let host_file = h.dir.path().join("host-owned");
    fs::write(&host_file, "host\n").unwrap();
    fs::set_permissions(&host_file, fs::Permissions::from_mode(0o644)).unwrap();
    let mut spec = h.spec(
        "cat /host-owned; echo x >> /host-owned; echo write=$?; \
         chown 0:0 /host-owned; echo chown=$?; \
         mknod /tmp/mem c 1 1; echo mknod=$?; \
         v=$(cat /proc/sys/vm/swappiness); echo $v > /proc/sys/vm/swappiness; echo sysctl=$?; \
         nice -n -5 true; echo nice=$?; \
         grep CapEff /proc/self/status",
    );
    spec.user_namespace = Some(IdMapping::root_at(HOST_START, COUNT));
    // No seccomp filter and every capability: only the user namespace stands in the way.
    spec.seccomp = false;
    spec.readonly_paths.clear();
    spec.process.capabilities = Some(caps::all().iter().map(|c| c.to_string()).collect());
    spec.mounts.push(Mount {
        destination: "/host-owned".into(),
        kind: MountKind::Bind,
        source: Some(host_file.clone()),
        options: vec!["rw".into()],
    });
    let (state, log) = h.run("userns-caps", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    assert!(log.starts_with("host\n"), "the file is readable: {log}");
    for (step, want) in [
        ("write=", "write=1"),
        ("chown=", "chown=1"),
        ("mknod=", "mknod=1"),
        ("sysctl=", "sysctl=1"),
        ("nice=", "nice=1"),
    ] {
        assert!(log.contains(want), "{step} should fail: {log}");
    }
    assert!(
        log.contains("Permission denied") && log.contains("Operation not permitted"),
        "{log}"
    );
    let cap_eff = log.lines().find(|l| l.starts_with("CapEff")).unwrap();
    assert!(
        !cap_eff.ends_with("0000000000000000"),
        "caps were granted: {log}"
    );
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "host\n");
    h.assert_clean();
}

/// A bundle whose config asks for a user namespace with the given mappings.
fn userns_bundle(dir: &Path, rootfs: &Path, script: &str) {
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/sh", "-c", script],
                    "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": rootfs},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"},
                           {"type": "ipc"}, {"type": "uts"}, {"type": "user"}],
            "uidMappings": [{"containerID": 0, "hostID": HOST_START, "size": COUNT}],
            "gidMappings": [{"containerID": 0, "hostID": HOST_START, "size": COUNT}]
        }
    });
    fs::create_dir_all(dir).expect("bundle dir");
    fs::write(dir.join("config.json"), config.to_string()).expect("config.json");
}

fn run_bundle(h: &Harness, bundle: &Path, id: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coracle-agent"))
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg("--root")
        .arg(h.dir.path().join("state"))
        .arg("--cgroup-parent")
        .arg(&h.parent)
        .arg(id)
        .output()
        .expect("run coracle-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root"]
fn bundle_uid_mappings_run_the_container_in_a_user_namespace() {
    let h = Harness::new();
    let script = "id -u; cat /proc/self/uid_map; stat -c %u /bin/busybox; touch /bin/new; stat -c %u /bin/new";
    // A rootfs owned by host root is idmapped: the container sees its files as its own.
    let idmapped = h.dir.path().join("bundle-idmapped");
    userns_bundle(&idmapped, &h.lower, script);
    let (code, out, err) = run_bundle(&h, &idmapped, "oci-userns");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        squeeze(&out),
        format!("0 0 {HOST_START} {COUNT} 0 0"),
        "{out}{err}"
    );
    assert_eq!(fs::metadata(h.lower.join("bin/new")).unwrap().uid(), 0);
    // A rootfs chowned to the range (the OCI convention) is bind-mounted as it is.
    let shifted = h.dir.path().join("shifted-rootfs");
    runtime_support::busybox_rootfs(&shifted);
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{HOST_START}:{HOST_START}"))
        .arg(&shifted)
        .status()
        .unwrap();
    assert!(chown.success());
    let plain = h.dir.path().join("bundle-shifted");
    userns_bundle(&plain, &shifted, script);
    let (code, out, err) = run_bundle(&h, &plain, "oci-userns-shifted");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        squeeze(&out),
        format!("0 0 {HOST_START} {COUNT} 0 0"),
        "{out}{err}"
    );
    assert_eq!(
        fs::metadata(shifted.join("bin/new")).unwrap().uid(),
        HOST_START
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn userns_with_host_network_gets_the_hosts_sysfs_read_only() {
    let h = Harness::new();
    // sysfs belongs to the network namespace, which here is the host's: the runtime binds
    // the host's /sys and makes the whole tree read-only.
    let mut spec = h.spec(
        "test -d /sys/kernel && echo sys=yes; \
         mkdir /sys/fs/cgroup/x 2>/dev/null; echo mkdir=$?; \
         grep ' /sys' /proc/self/mountinfo | grep -vc ' ro,'",
    );
    spec.user_namespace = Some(IdMapping::root_at(HOST_START, COUNT));
    spec.network = coracle_agent::runtime::spec::Network::Host;
    let (state, log) = h.run("userns-hostnet", &spec);
    assert_eq!(
        state.exit_code,
        Some(1),
        "grep -c found no writable /sys mount: {log}"
    );
    assert_eq!(squeeze(&log), "sys=yes mkdir=1 0", "{log}");
    h.assert_clean();
}
