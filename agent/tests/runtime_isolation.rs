//! Isolation and privilege, checked from inside real containers (root only).

mod runtime_support;

use std::collections::HashSet;

use caps::Capability;
use coracle_agent::runtime::spec::{Device, DeviceAccess, DEFAULT_CAPABILITIES};
use runtime_support::Harness;

fn run(h: &Harness, id: &str, script: &str) -> (i32, String) {
    let (state, log) = h.run(id, &h.spec(script));
    (state.exit_code.expect("exit code recorded"), log)
}

#[test]
#[ignore = "needs root"]
fn container_is_pid_1_and_sees_no_host_processes() {
    let h = Harness::new();
    // The loop runs inside sh itself, so the only process there is sh.
    let (code, log) = run(
        &h,
        "pid",
        "echo pid=$$; for p in /proc/[0-9]*; do echo $p; done",
    );
    assert_eq!((code, log.as_str()), (0, "pid=1\n/proc/1\n"));
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn hostname_is_the_containers_own() {
    let h = Harness::new();
    let mut spec = h.spec("hostname");
    spec.hostname = Some("sensor-7".into());
    let (_, log) = h.run("host", &spec);
    assert_eq!(log, "sensor-7\n");
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_string_lossy(),
        "sensor-7"
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn mount_fails_inside_the_container() {
    let h = Harness::new();
    let (code, log) = run(
        &h,
        "mnt",
        "mount -t tmpfs none /mnt && echo mounted; echo rc=$?",
    );
    assert_eq!(code, 0);
    assert!(!log.contains("mounted") && log.contains("rc=1"), "{log}");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn writes_to_proc_sys_and_sys_fail_read_only() {
    let h = Harness::new();
    // kernel.hostname is per-uts-namespace: the write would succeed if /proc/sys were writable.
    let (_, log) = run(
        &h,
        "ro",
        "echo x > /proc/sys/kernel/hostname; echo x > /sys/kernel/uevent_helper; hostname",
    );
    assert_eq!(log.matches("Read-only file system").count(), 2, "{log}");
    assert!(!log.ends_with("x\n"), "{log}");
    h.assert_clean();
}

fn cap_mask(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| n.parse::<Capability>().expect("known capability").bitmask())
        .fold(0, |a, b| a | b)
}

fn status_field(log: &str, field: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in {log}"));
    let value = line.split_whitespace().nth(1).expect("field value");
    u64::from_str_radix(value, 16).expect("hex field")
}

#[test]
#[ignore = "needs root"]
fn dropped_capabilities_are_absent_from_proc_self_status() {
    let h = Harness::new();
    let (_, log) = run(&h, "caps", "cat /proc/self/status");
    let want = cap_mask(DEFAULT_CAPABILITIES);
    assert_eq!(status_field(&log, "CapEff:"), want);
    assert_eq!(status_field(&log, "CapBnd:"), want);
    assert_eq!(status_field(&log, "CapInh:"), 0);
    assert_eq!(status_field(&log, "NoNewPrivs:"), 1);
    assert_eq!(status_field(&log, "Seccomp:"), 2);
    assert_eq!(
        status_field(&log, "CapEff:") & Capability::CAP_SYS_ADMIN.bitmask(),
        0
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn spec_can_drop_more_capabilities() {
    let h = Harness::new();
    let mut spec = h.spec("cat /proc/self/status");
    spec.process.capabilities = Some(vec!["CAP_KILL".into()]);
    let (_, log) = h.run("fewer", &spec);
    assert_eq!(status_field(&log, "CapEff:"), cap_mask(&["CAP_KILL"]));
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn a_non_root_user_keeps_its_ambient_capabilities_across_exec_and_no_others() {
    use coracle_agent::runtime::spec::User;
    let h = Harness::new();
    let non_root = User::Id {
        uid: 1000,
        gid: 1000,
        additional_gids: Vec::new(),
    };
    let mut spec = h.spec("cat /proc/self/status");
    spec.process.user = non_root.clone();
    spec.process.capability_sets.ambient = vec!["CAP_NET_BIND_SERVICE".into()];
    let (_, log) = h.run("ambient", &spec);
    let bind = cap_mask(&["CAP_NET_BIND_SERVICE"]);
    for field in ["CapEff:", "CapPrm:", "CapAmb:", "CapInh:"] {
        assert_eq!(status_field(&log, field), bind, "{field} in {log}");
    }
    assert_eq!(
        status_field(&log, "CapBnd:"),
        cap_mask(DEFAULT_CAPABILITIES)
    );

    // Without an ambient set the non-root user has nothing after exec (Docker's behaviour).
    let mut plain = h.spec("cat /proc/self/status");
    plain.process.user = non_root;
    let (_, log) = h.run("no-ambient", &plain);
    assert_eq!(status_field(&log, "CapEff:"), 0, "{log}");
    assert_eq!(status_field(&log, "CapAmb:"), 0, "{log}");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn namespaced_sysctls_and_the_oom_score_are_the_containers_own() {
    let h = Harness::new();
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let flipped = if host_forward.trim() == "1" { "0" } else { "1" };
    let mut spec = h
        .spec("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni /proc/self/oom_score_adj");
    spec.sysctl = [
        ("net.ipv4.ip_forward".to_string(), flipped.to_string()),
        ("kernel.shmmni".to_string(), "1234".to_string()),
    ]
    .into();
    spec.process.oom_score_adj = Some(500);
    let (state, log) = h.run("sysctl", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines, [flipped, "1234", "500"], "{log}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward,
        "the host's value changed"
    );

    // One that is not namespaced would change the host: refused before any process.
    let id: coracle_agent::runtime::ContainerId = "sysctl-host".parse().unwrap();
    let mut host_wide = h.spec("true");
    host_wide.sysctl = [("kernel.panic".to_string(), "1".to_string())].into();
    let err = coracle_agent::runtime::Runtime::create(&h.runtime, &id, &host_wide).unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("NotNamespaced") && text.contains("kernel.panic"),
        "{text}"
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn cap_sys_admin_unlocks_mount_and_unshare_as_in_docker() {
    let h = Harness::new();
    // Docker's profile ties mount, unshare, setns, ... to CAP_SYS_ADMIN: granting the
    // capability lets them through seccomp too (without it, see mount_fails_inside_the_container).
    let mut spec =
        h.spec("mount -t tmpfs none /mnt && echo mounted; unshare -u true && echo unshared");
    let mut caps: HashSet<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    caps.insert("CAP_SYS_ADMIN".into());
    spec.process.capabilities = Some(caps.into_iter().collect());
    let (_, log) = h.run("admin", &spec);
    assert!(log.contains("mounted") && log.contains("unshared"), "{log}");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn passed_through_device_works_and_unlisted_one_is_absent() {
    let h = Harness::new();
    // A device node made for this test (a /dev/null twin) stands in for /dev/i2c-1.
    let node = h.dir.path().join("i2c-fake");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let mut spec = h.spec("echo hello > /dev/i2c-1 && echo written; test -e /dev/loop-control || echo no-loop; ls /dev");
    spec.devices = vec![Device {
        host_path: node,
        container_path: Some("/dev/i2c-1".into()),
        access: DeviceAccess::ALL,
        node: None,
    }];
    let (code, log) = {
        let (s, l) = h.run("dev", &spec);
        (s.exit_code, l)
    };
    assert_eq!(code, Some(0));
    assert!(log.contains("written") && log.contains("no-loop"), "{log}");
    assert!(
        std::path::Path::new("/dev/loop-control").exists(),
        "the host has the unlisted device"
    );
    h.assert_clean();
}

/// Opens the passed device for reading, then for writing, then tries to mknod its twin;
/// prints each outcome.
const ACCESS_SCRIPT: &str = "(exec 3</dev/lc) && echo read=ok; \
     (exec 3>/dev/lc) 2>&1 && echo write=ok; \
     mknod /tmp/lc2 c 10 237 && echo mknod=ok; echo done";

#[test]
#[ignore = "needs root"]
fn device_permissions_are_honoured_read_only_and_without_mknod() {
    let h = Harness::new();
    // A loop-control twin (char 10:237, not one of the standard devices).
    let node = h.dir.path().join("lc-twin");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(10, 237),
    )
    .unwrap();
    for (access, want, refused) in [
        ("r", &["read=ok"][..], &["write=ok", "mknod=ok"][..]),
        ("rw", &["read=ok", "write=ok"][..], &["mknod=ok"][..]),
        ("rwm", &["read=ok", "write=ok", "mknod=ok"][..], &[][..]),
    ] {
        let mut spec = h.spec(ACCESS_SCRIPT);
        spec.devices = vec![Device {
            host_path: node.clone(),
            container_path: Some("/dev/lc".into()),
            access: DeviceAccess::parse(access).unwrap(),
            node: None,
        }];
        let (state, log) = h.run(&format!("perm-{access}"), &spec);
        assert_eq!(state.exit_code, Some(0), "{access}: {log}");
        assert!(log.contains("done"), "{access}: {log}");
        for line in want {
            assert!(log.contains(line), "{access}: {line} missing: {log}");
        }
        for line in refused {
            assert!(!log.contains(line), "{access}: {line} allowed: {log}");
        }
        if !refused.is_empty() {
            assert!(
                log.contains("Operation not permitted"),
                "{access}: refused with EPERM: {log}"
            );
        }
    }
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn writes_land_in_the_upper_dir_not_the_lower() {
    let h = Harness::new();
    let spec = h.spec("echo data > /new.txt; rm /bin/true");
    let (state, _) = h.run("upper", &spec);
    assert_eq!(state.exit_code, Some(0));
    let upper = Harness::upper_of(&spec);
    assert_eq!(
        std::fs::read_to_string(upper.join("new.txt")).unwrap(),
        "data\n"
    );
    assert!(!h.lower.join("new.txt").exists());
    assert!(
        h.lower.join("bin/true").symlink_metadata().is_ok(),
        "delete must not reach the lower dir"
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn network_none_has_only_loopback_up() {
    let h = Harness::new();
    let (_, log) = run(
        &h,
        "net",
        "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
    );
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "lo", "{log}");
    let flags = u32::from_str_radix(lines.last().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is up: {log}");
    h.assert_clean();
}

/// What the privilege test looks at from inside: /proc/self/status, host device nodes
/// (opened: the device cgroup says EPERM to a device it does not allow), a node made with
/// mknod, masked paths (/proc/timer_list, a /dev/null bind when masked — this kernel has no
/// /proc/kcore —, /sys/firmware, an empty tmpfs), /proc/sys and /sys mount modes.
const PRIVILEGE_PROBE: &str = "cat /proc/self/status; \
    [ -c /dev/loop-control ] && : < /dev/loop-control && echo opened-loop-control; \
    [ -c /dev/kmsg ] && echo has-kmsg; \
    mknod /tmp/mem c 1 1 && echo made-mem; \
    [ -f /proc/timer_list ] && echo timer-list-visible; \
    [ -c /proc/timer_list ] && echo timer-list-masked; \
    ls /sys/firmware | grep -q . && echo firmware-visible; \
    echo priv > /proc/sys/kernel/hostname && echo proc-sys-writable; \
    awk '$2 == \"/sys\" { split($4, o, \",\"); print \"sys-\" o[1] }' /proc/mounts";

#[test]
#[ignore = "needs root"]
fn all_capabilities_less_a_dropped_one() {
    let h = Harness::new();
    let mut spec = h.spec("cat /proc/self/status");
    spec.process.capabilities = Some(vec!["ALL".into(), "-CAP_NET_RAW".into()]);
    let (_, log) = h.run("all-but", &spec);
    let every = caps::read(None, caps::CapSet::Bounding)
        .unwrap()
        .iter()
        .fold(0, |mask, c| mask | c.bitmask());
    let want = every & !Capability::CAP_NET_RAW.bitmask();
    assert_eq!(status_field(&log, "CapEff:"), want, "{log}");
    assert_eq!(status_field(&log, "CapBnd:"), want, "{log}");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn a_privileged_container_has_every_capability_device_and_path_and_no_seccomp() {
    let h = Harness::new();
    let mut spec = h.spec(PRIVILEGE_PROBE);
    coracle_agent::engine::tuning::privileged(&mut spec, false);
    let (state, log) = h.run("privileged", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    // Every capability this runtime holds (the host's bounding set may lack some).
    let every = caps::read(None, caps::CapSet::Bounding)
        .unwrap()
        .iter()
        .fold(0, |mask, c| mask | c.bitmask());
    for field in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:"] {
        assert_eq!(status_field(&log, field), every, "{field} in {log}");
    }
    assert_eq!(status_field(&log, "CapAmb:"), 0, "root: {log}");
    assert_eq!(status_field(&log, "Seccomp:"), 0, "{log}");
    assert_eq!(status_field(&log, "NoNewPrivs:"), 0, "{log}");
    for line in [
        "opened-loop-control",
        "has-kmsg",
        "made-mem",
        "timer-list-visible",
        "firmware-visible",
        "proc-sys-writable",
        "sys-rw",
    ] {
        assert!(log.lines().any(|l| l == line), "{line} missing: {log}");
    }
    assert!(!log.contains("timer-list-masked"), "{log}");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn an_unprivileged_container_keeps_masks_read_only_paths_and_device_limits() {
    let h = Harness::new();
    let (_, log) = h.run("unprivileged", &h.spec(PRIVILEGE_PROBE));
    assert_eq!(status_field(&log, "Seccomp:"), 2, "{log}");
    for line in ["timer-list-masked", "sys-ro"] {
        assert!(log.lines().any(|l| l == line), "{line} missing: {log}");
    }
    for line in [
        "opened-loop-control",
        "has-kmsg",
        "made-mem",
        "timer-list-visible",
        "firmware-visible",
        "proc-sys-writable",
    ] {
        assert!(!log.lines().any(|l| l == line), "{line}: {log}");
    }
    h.assert_clean();
}
