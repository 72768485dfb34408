//! cgroup limits enforced on real containers (root only, cgroup v1 on the build machine,
//! whatever the host has elsewhere).

mod runtime_support;

use std::time::{Duration, Instant};

use coracle_agent::runtime::spec::Rlimit;
use coracle_agent::runtime::{ContainerId, Runtime, RuntimeError, Status};
use runtime_support::Harness;

#[test]
#[ignore = "needs root"]
fn memory_limit_oom_kills_and_is_reported_with_137() {
    let h = Harness::new();
    let mut spec = h.spec("cat /dev/zero | tail");
    spec.resources.memory_max = Some(32 << 20);
    let (state, _) = h.run("oom", &spec);
    assert_eq!(state.exit_code, Some(137));
    assert!(state.oom_killed, "OOM not reported: {state:?}");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn exit_without_oom_is_not_reported_as_oom() {
    let h = Harness::new();
    let mut spec = h.spec("sleep 100 & kill -9 $!; wait $!");
    spec.resources.memory_max = Some(32 << 20);
    let (state, _) = h.run("kill9", &spec);
    assert_eq!(
        (state.exit_code, state.oom_killed),
        (Some(137), false),
        "{state:?}"
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn pids_limit_stops_the_fork_beyond_it() {
    let h = Harness::new();
    let mut spec =
        h.spec("i=0; while [ $i -lt 8 ]; do sleep 100 & i=$((i+1)); done; echo started=$i");
    spec.resources.pids_max = Some(4);
    let (_, log) = h.run("pids", &spec);
    assert!(log.contains("can't fork"), "{log}");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn cpu_quota_holds_a_busy_loop_to_its_share() {
    let h = Harness::new();
    let mut spec = h.spec("while :; do :; done");
    spec.resources.cpu_millicores = Some(200);
    let id: ContainerId = "cpu".parse().unwrap();
    h.runtime.create(&id, &spec).unwrap();
    h.runtime.start(&id).unwrap();
    let cgroup = h.runtime.cgroup(&id).unwrap();
    let (start, used_before) = (Instant::now(), cgroup.cpu_usage_ns().unwrap());
    while start.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let used = cgroup.cpu_usage_ns().unwrap() - used_before;
    let share = used as f64 / start.elapsed().as_nanos() as f64;
    h.runtime.stop(&id, Duration::from_secs(1)).unwrap();
    h.runtime.delete(&id).unwrap();
    // 0.2 of a core asked; an unlimited loop would take ~1.0.
    assert!(
        (0.1..0.3).contains(&share),
        "busy loop used {share:.2} of a core"
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn limits_land_in_the_cgroup_files() {
    let h = Harness::new();
    let mut spec = h.spec("sleep 100");
    spec.resources.memory_max = Some(48 << 20);
    spec.resources.memory_reservation = Some(16 << 20);
    spec.resources.pids_max = Some(9);
    spec.resources.cpu_millicores = Some(1500);
    spec.resources.io_weight = Some(500);
    let id: ContainerId = "files".parse().unwrap();
    let created = h.runtime.create(&id, &spec).unwrap();
    let read = |controller: &str, file: &str| {
        let dir = created
            .cgroup_paths
            .iter()
            .find(|p| p.iter().any(|c| c == controller) || created.cgroup_paths.len() == 1)
            .unwrap();
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    if created.cgroup_paths.len() == 1 {
        assert_eq!(read("", "memory.max"), (48u64 << 20).to_string());
        assert_eq!(read("", "memory.low"), (16u64 << 20).to_string());
        assert_eq!(read("", "pids.max"), "9");
        assert_eq!(read("", "cpu.max"), "150000 100000");
    } else {
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (48u64 << 20).to_string()
        );
        assert_eq!(
            read("memory", "memory.soft_limit_in_bytes"),
            (16u64 << 20).to_string()
        );
        assert_eq!(read("pids", "pids.max"), "9");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "150000");
        // No BFQ here: the io weight cannot be enforced, and that is reported, not dropped.
        if !std::path::Path::new("/sys/fs/cgroup/blkio/blkio.weight").exists() {
            assert!(
                created
                    .conditions
                    .iter()
                    .any(|c| format!("{c:?}").contains("blkio.weight")),
                "{:?}",
                created.conditions
            );
        }
    }
    h.kill_and_delete(&id);
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn oci_cpu_period_quota_and_shares_land_unrounded() {
    let h = Harness::new();
    let mut spec = h.spec("sleep 100");
    spec.resources.cpu_quota_us = Some(33_333);
    spec.resources.cpu_period_us = Some(50_000);
    spec.resources.cpu_shares = Some(512);
    let id: ContainerId = "oci-cpu".parse().unwrap();
    let created = h.runtime.create(&id, &spec).unwrap();
    let dir = if created.cgroup_paths.len() == 1 {
        created.cgroup_paths[0].clone()
    } else {
        created
            .cgroup_paths
            .iter()
            .find(|p| p.iter().any(|c| c == "cpu" || c == "cpu,cpuacct"))
            .expect("a cpu hierarchy")
            .clone()
    };
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("read {file}: {e}"))
            .trim()
            .to_string()
    };
    if created.cgroup_paths.len() == 1 {
        assert_eq!(read("cpu.max"), "33333 50000");
        assert_eq!(read("cpu.weight"), "59");
    } else {
        assert_eq!(read("cpu.cfs_period_us"), "50000");
        assert_eq!(read("cpu.cfs_quota_us"), "33333");
        assert_eq!(read("cpu.shares"), "512");
    }
    h.kill_and_delete(&id);
    h.assert_clean();
}

fn has_cap_sys_resource() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .expect("read own capabilities")
}

#[test]
#[ignore = "needs root"]
fn raising_a_hard_rlimit_without_cap_sys_resource_is_a_clear_error() {
    let h = Harness::new();
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    #[allow(clippy::useless_conversion)] // rlim_t is u32 on armv7, u64 here
    let hard = u64::from(hard);
    let mut spec = h.spec("ulimit -Hn");
    spec.process.rlimits = vec![Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 1024,
        hard: hard + 1,
    }];
    let id: ContainerId = "rlimit".parse().unwrap();
    match h.runtime.create(&id, &spec) {
        Err(RuntimeError::CreateFailed { reason, .. }) => {
            assert!(!has_cap_sys_resource());
            assert!(
                reason.contains("RLIMIT_NOFILE") && reason.contains("CAP_SYS_RESOURCE"),
                "{reason}"
            );
        }
        Ok(_) => {
            assert!(
                has_cap_sys_resource(),
                "raising the hard limit worked without the capability"
            );
            h.runtime
                .kill(&id, nix::sys::signal::Signal::SIGKILL)
                .unwrap();
            h.runtime.wait(&id, Duration::from_secs(10)).unwrap();
            h.runtime.delete(&id).unwrap();
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
    h.assert_clean();
    // Lowering works everywhere.
    let mut spec = h.spec("ulimit -n; ulimit -Hn");
    spec.process.rlimits = vec![Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 100,
        hard: 200,
    }];
    let (state, log) = h.run("rlimit-low", &spec);
    assert_eq!(
        (state.status, log.as_str()),
        (Status::Stopped, "100\n200\n")
    );
    h.assert_clean();
}
