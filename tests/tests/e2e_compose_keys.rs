//! End-to-end, issue 16: compose keys a real agent honours, each checked from inside the
//! container — `sysctls` (IPC and, on the service's own network, `net.*`), `ulimits`,
//! `oom_score_adj`, `hostname`, a `:r` device (loop-control: not one of the nodes every
//! container may use) that opens for reading but not for writing (allowed by the deploy
//! policy), and `cap_add` for a non-root `user:` (its health check sees the capability in
//! its effective set). The probe writes what it sees to a named volume the test reads:
//! also its `tmpfs` mounts (size, mode, owner, noexec unless `exec`), its `/dev/shm` size
//! (`shm_size`) and its groups (`group_add`, one by name from the image's /etc/group), a
//! long-syntax tmpfs and read-only volume; its memory reservation is read from its cgroup.
//! `logging` options rotate a chatty service's log files on the device, and
//! `healthcheck.start_interval` makes a check that fails once pass long before its hour-long
//! interval. A `privileged` service (granted by the policy) has every capability the agent
//! holds, no seccomp filter and the device's /dev/kmsg.
//! Root only (network namespaces, cgroups); takes turns on the test network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::wait_for_probe;
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::image::{build_layout, busybox_files, LayerFile};
use coracle_tests::e2e::wait_until;
use coracle_tests::netns::TestNetwork;

/// The probe's script, for `busybox sh` (the image has no applet links: every tool is
/// called through /bin/busybox).
const PROBE: &str = "ulimit -n > /out/nofile; ulimit -Hn > /out/nofile_hard; \
    /bin/busybox cat /proc/sys/kernel/shmmni > /out/shmmni; \
    /bin/busybox cat /proc/sys/net/core/somaxconn > /out/somaxconn; \
    /bin/busybox cat /proc/self/oom_score_adj > /out/oom; /bin/busybox hostname > /out/hostname; \
    if /bin/busybox true > /dev/loop-control; then echo opened > /out/dev_write; else echo refused > /out/dev_write; fi; \
    if /bin/busybox true < /dev/loop-control; then echo opened > /out/dev_read; else echo refused > /out/dev_read; fi; \
    /bin/busybox grep ' /scratch ' /proc/mounts > /out/scratch_mount; \
    /bin/busybox grep ' /fast ' /proc/mounts > /out/fast_mount; \
    /bin/busybox grep ' /dev/shm ' /proc/mounts > /out/shm_mount; \
    /bin/busybox stat -c '%a %u' /scratch > /out/scratch_stat; \
    /bin/busybox cp /bin/busybox /scratch/true; /bin/busybox cp /bin/busybox /fast/true; \
    if /scratch/true; then echo ran > /out/scratch_exec; else echo refused > /out/scratch_exec; fi; \
    if /fast/true; then echo ran > /out/fast_exec; else echo refused > /out/fast_exec; fi; \
    /bin/busybox id -G > /out/groups; \
    /bin/busybox grep ' /long ' /proc/mounts > /out/long_mount; \
    if /bin/busybox touch /out2/written; then echo wrote > /out/ro_volume; else echo refused > /out/ro_volume; fi; \
    /bin/busybox touch /out/done; exec /bin/busybox sleep 3600";

/// What a privileged service sees: its status (capabilities, seccomp) and a host device
/// node no other container gets.
const PRIVILEGED: &str = "/bin/busybox cat /proc/self/status > /out/status; \
    if /bin/busybox test -c /dev/kmsg; then echo yes > /out/kmsg; else echo no > /out/kmsg; fi; \
    /bin/busybox touch /out/done; exec /bin/busybox sleep 3600";

/// Prints about 15 KB, for 1 KiB log files.
const CHATTY: &str =
    "/bin/busybox seq 1 400 | /bin/busybox sed 's/.*/chatty line & padding padding/'; \
    exec /bin/busybox sleep 3600";

/// Fails its first probe, passes the next.
const ONCE: &str = "/bin/busybox test -e /probed || { /bin/busybox touch /probed; exit 1; }";

fn app(dir: &Path) -> std::path::PathBuf {
    let compose = format!(
        r#"services:
  probe:
    image: hello:1
    network_mode: none
    command: ["/bin/busybox", "sh", "-c", "{PROBE}"]
    volumes:
      - out:/out
      - type: volume
        source: out
        target: /out2
        read_only: true
        volume: {{nocopy: true}}
      - type: tmpfs
        target: /long
        tmpfs: {{size: 4m, mode: 0o1700}}
    deploy:
      resources:
        limits: {{memory: 64m}}
        reservations: {{memory: 16m, cpus: "0.5"}}
    devices: ["/dev/loop-control:/dev/loop-control:r"]
    sysctls:
      kernel.shmmni: "1234"
      net.core.somaxconn: "777"
    ulimits:
      nofile: {{soft: 1111, hard: 2222}}
    oom_score_adj: 200
    hostname: probe-1
    tmpfs:
      - /scratch:size=8m,mode=1770,uid=1000
      - /fast:exec
    shm_size: 32m
    group_add: [gpio, 44]
  privileged:
    image: hello:1
    network_mode: none
    privileged: true
    command: ["/bin/busybox", "sh", "-c", "{PRIVILEGED}"]
    volumes: ["privileged:/out"]
  chatty:
    image: hello:1
    network_mode: none
    command: ["/bin/busybox", "sh", "-c", "{CHATTY}"]
    logging:
      driver: json-file
      options:
        max-size: 1k
        max-file: "3"
  paced:
    image: hello:1
    network_mode: none
    command: ["/bin/busybox", "sleep", "3600"]
    healthcheck:
      test: ["CMD", "/bin/busybox", "sh", "-c", "{ONCE}"]
      interval: 1h
      start_period: 10m
      start_interval: 1s
  nonroot:
    image: hello:1
    user: "1000"
    cap_add: [NET_BIND_SERVICE]
    command: ["/bin/busybox", "sleep", "3600"]
    healthcheck:
      test: ["CMD", "/bin/busybox", "grep", "-q", "CapEff:.*0000000000000400", "/proc/self/status"]
      interval: 1s
      retries: 3
"#
    );
    let path = dir.join("app.yml");
    std::fs::write(&path, compose).unwrap();
    path
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root"]
fn every_tuning_key_is_seen_from_inside_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let policy = "[policy]\ndevices = [\"/dev/loop-control\"]\nprivileged = true\n";
    let controller =
        Controller::start_with_config(dir.path(), TestNetwork::GATEWAY, policy).unwrap();
    let group = LayerFile::new("etc/group", "root:x:0:\ngpio:x:997:\n", 0o644);
    let files = busybox_files("keys", vec![group]).unwrap();
    let image = build_layout(&dir.path().join("img"), "1", &files).unwrap();
    controller.push(&image.source, "hello:1").unwrap();
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-keys", dir.path()).unwrap();
    let agent = Agent::start("pi-keys", &host, dir.path(), &bootstrap).unwrap();
    controller.deploy(&app(dir.path()), "pi-keys").unwrap();

    let out = agent.data_dir.join("volumes/out");
    wait_for_probe(
        &controller,
        "pi-keys",
        &out.join("done"),
        Duration::from_secs(90),
    )
    .unwrap();
    assert_eq!(read(&out, "nofile"), "1111");
    assert_eq!(read(&out, "nofile_hard"), "2222");
    assert_eq!(read(&out, "shmmni"), "1234");
    assert_eq!(read(&out, "somaxconn"), "777");
    assert_eq!(read(&out, "oom"), "200");
    assert_eq!(read(&out, "hostname"), "probe-1");
    assert_eq!(
        read(&out, "dev_write"),
        "refused",
        "a :r device opened for writing"
    );
    assert_eq!(
        read(&out, "dev_read"),
        "opened",
        "a :r device refused reading"
    );

    // tmpfs: size, mode and owner as given; nosuid, nodev, noexec unless `exec`.
    let scratch = read(&out, "scratch_mount");
    for option in [
        "nosuid",
        "nodev",
        "noexec",
        "size=8192k",
        "mode=1770",
        "uid=1000",
    ] {
        assert!(scratch.contains(option), "{scratch} lacks {option}");
    }
    assert_eq!(read(&out, "scratch_stat"), "1770 1000");
    assert_eq!(read(&out, "scratch_exec"), "refused", "noexec by default");
    let fast = read(&out, "fast_mount");
    assert!(
        !fast.contains("noexec") && fast.contains("nosuid"),
        "{fast}"
    );
    assert_eq!(read(&out, "fast_exec"), "ran", "exec given");
    // The long volume syntax: a tmpfs as the `tmpfs:` key makes it, a read-only volume.
    let long = read(&out, "long_mount");
    for option in ["nosuid", "nodev", "noexec", "size=4096k", "mode=1700"] {
        assert!(long.contains(option), "{long} lacks {option}");
    }
    assert_eq!(read(&out, "ro_volume"), "refused", "read_only: true");
    assert!(!out.join("written").exists());
    // deploy.resources.reservations.memory: the cgroup's soft limit (v1) or memory.low (v2).
    let v1 = Path::new("/sys/fs/cgroup/memory").join(&agent.cgroup_parent);
    let (cgroup, file) = match v1.is_dir() {
        true => (v1.join("probe"), "memory.soft_limit_in_bytes"),
        false => (
            Path::new("/sys/fs/cgroup")
                .join(&agent.cgroup_parent)
                .join("probe"),
            "memory.low",
        ),
    };
    assert_eq!(read(&cgroup, file), (16u64 << 20).to_string());
    let shm = read(&out, "shm_mount");
    assert!(shm.contains("size=32768k"), "shm_size: {shm}");
    let groups = read(&out, "groups");
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(
        groups.contains(&"997") && groups.contains(&"44"),
        "group_add: {groups:?}"
    );

    // privileged: every capability the agent holds (the test's bounding set), no seccomp.
    let privileged = agent.data_dir.join("volumes/privileged");
    wait_for_probe(
        &controller,
        "pi-keys",
        &privileged.join("done"),
        Duration::from_secs(60),
    )
    .unwrap();
    let field = |status: &str, name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let status = read(&privileged, "status");
    for name in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:"] {
        assert_eq!(field(&status, name), field(&own, "CapBnd:"), "{name}");
    }
    assert_eq!(field(&status, "Seccomp:"), "0");
    assert_eq!(field(&status, "NoNewPrivs:"), "0");
    assert_eq!(read(&privileged, "kmsg"), "yes", "the device's /dev/kmsg");

    // logging: 1 KiB files, three in all, on the device.
    let logs = dir.path().join("pi-keys/run/chatty");
    wait_until("chatty's logs rotated", Duration::from_secs(60), || {
        if logs.join("container.log.2").exists() {
            Ok(())
        } else {
            Err(format!("{:?}", std::fs::read_dir(&logs).map(|d| d.count())))
        }
    })
    .unwrap();
    assert!(!logs.join("container.log.3").exists(), "max-file 3");
    for name in ["container.log", "container.log.1", "container.log.2"] {
        let size = std::fs::metadata(logs.join(name)).unwrap().len();
        assert!(size <= 1024, "{name}: {size} bytes over max-size");
    }
    assert!(read(&logs, "container.log.1").contains("chatty line"));

    // start_interval: the check's second probe comes a second after the first, not an hour.
    wait_until("paced healthy", Duration::from_secs(45), || {
        let d = controller.device("pi-keys").map_err(|e| e.to_string())?;
        let healthy = d["reported"]["services"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "paced" && s["health"] == "Healthy")
        });
        if healthy {
            Ok(())
        } else {
            Err(d.to_string())
        }
    })
    .unwrap();

    // The non-root service's health check passes only with NET_BIND_SERVICE effective.
    wait_until("nonroot healthy", Duration::from_secs(60), || {
        let d = controller.device("pi-keys").map_err(|e| e.to_string())?;
        let healthy = d["reported"]["services"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "nonroot" && s["health"] == "Healthy")
        });
        if healthy {
            Ok(())
        } else {
            Err(d.to_string())
        }
    })
    .unwrap();
}
