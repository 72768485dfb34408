//! The production engine end to end on this machine, as root: pull a real image from a real
//! registry into the store, run a service from it on the overlay of its layers under real
//! cgroups, read its logs and stats, stop it, delete it, and collect the image — leaving no
//! container, cgroup or layer behind.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::time::{Duration, Instant};

use coracle_agent::engine::{EngineConfig, LinuxEngine};
use coracle_agent::health::CheckState;
use coracle_agent::pull::RegistryEndpoint;
use coracle_agent::reconcile::{fingerprint, Role};
use coracle_agent::runtime::cgroups::CgroupConfig;
use coracle_agent::runtime::RuntimeConfig;
use coracle_agent::supervisor::{run_check, ContainerEngine, EngineStatus, StopRule};
use coracle_images::store::StoreConfig;
use coracle_proto::{Health, HealthCheck, HealthProbe, ImageRef, ServiceSpec};
use coracle_tests::fixtures;
use coracle_tests::registry::TestRegistry;

/// Where a container's cgroups can be: each v1 hierarchy, and ("") the root itself, as
/// the cgroup2 mount on a pure v2 machine.
const CONTROLLERS: &[&str] = &[
    "",
    "memory",
    "cpu,cpuacct",
    "pids",
    "blkio",
    "cpuset",
    "devices",
];

/// Removes the test's cgroup parent in every hierarchy, also when the test failed.
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        coracle_tests::cgroups::remove_parent(&self.0);
    }
}

/// Stops and deletes the services, also when the test failed (before the cgroup parent,
/// declared earlier, goes).
struct Services(std::sync::Arc<dyn ContainerEngine>, Vec<&'static str>);

impl Drop for Services {
    fn drop(&mut self) {
        for name in &self.1 {
            let name = name.parse().unwrap();
            let _ = self
                .0
                .stop(&name, Role::Current, StopRule::term(Duration::from_secs(1)));
            let _ = self.0.delete(&name, Role::Current);
        }
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An engine on `dir` with busybox pushed to `registry`; returns it and the image digest.
fn busybox_engine(
    registry: &TestRegistry,
    dir: &std::path::Path,
    parent: &CgroupParent,
) -> (LinuxEngine, String) {
    let source = format!(
        "oci-archive:{}",
        fixtures::path("busybox-oci.tar").display()
    );
    let digest = registry.push(&source, "busybox:1").unwrap();
    let engine = LinuxEngine::open(EngineConfig {
        data_dir: dir.join("data"),
        registry: RegistryEndpoint {
            base_url: registry.base_url(),
            ca_pem: None,
            token: Default::default(),
        },
        runtime: RuntimeConfig {
            state_dir: dir.join("run"),
            cgroup: CgroupConfig {
                root: "/sys/fs/cgroup".into(),
                parent: parent.0.clone(),
                allow_missing_controllers: false,
            },
            shim_binary: env!("CARGO_BIN_EXE_coracle-agent").into(),
        },
        store: StoreConfig {
            reserve_bytes: 0,
            ..StoreConfig::default()
        },
        delta_budget: 64 << 20,
        log_max_bytes: 1 << 20,
        log_keep: 2,
        network: coracle_agent::network::NetworkConfig {
            netns_dir: dir.join("netns"),
            ..coracle_agent::network::NetworkConfig::device(&dir.join("data"))
        },
    })
    .unwrap();
    (engine, digest)
}

#[test]
#[ignore = "needs root"]
fn engine_pulls_runs_stops_and_cleans_up_a_service() {
    let registry = TestRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parent = CgroupParent(format!("coracle-test-engine-{}", std::process::id()));
    let (engine, digest) = busybox_engine(&registry, dir.path(), &parent);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&dir.path().join("data")),
        0o711,
        "nobody else lists the data dir"
    );
    let image: ImageRef = format!("busybox@{digest}").parse().unwrap();
    engine.pull(&image, None, &mut |_| {}).unwrap();
    assert!(engine.images().unwrap().contains(&image.digest));
    assert_eq!(engine.layers().unwrap().len(), 1);

    let mut spec = ServiceSpec::new("web".parse().unwrap(), image.clone());
    spec.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo hello from $GREETING; exec sleep 30".into(),
    ];
    spec.env = vec![("GREETING".into(), "coracle".into())];
    spec.resources.memory_max_bytes = Some(32 << 20);
    let fp = fingerprint(&spec);
    engine.create(&spec, fp, Role::Current).unwrap();
    let listed = engine.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fingerprint, fp);
    assert_eq!(listed[0].status, EngineStatus::Created);

    engine.start(&spec.name, Role::Current).unwrap();
    wait_for("the container to run", || {
        engine.list().unwrap()[0].status == EngineStatus::Running
    });
    wait_for("its greeting in the log", || {
        engine
            .logs_tail(&spec.name, 10, 4096)
            .unwrap()
            .lines
            .iter()
            .any(|l| l.contains("hello from coracle"))
    });
    let stats = engine.stats().unwrap();
    assert_eq!(stats.len(), 1);
    assert!(stats[0].memory_bytes > 0, "{stats:?}");

    engine
        .stop(
            &spec.name,
            Role::Current,
            StopRule::term(Duration::from_secs(2)),
        )
        .unwrap();
    match engine.list().unwrap()[0].status {
        EngineStatus::Stopped {
            exit_code,
            oom_killed,
        } => {
            assert!(!oom_killed);
            assert!(exit_code.is_some());
        }
        other => panic!("{other:?}"),
    }
    // Started again after it stopped (a restart policy, a `restart` command): it runs again
    // from its own spec, and the previous run's log is kept as the newest rotated file.
    engine.start(&spec.name, Role::Current).unwrap();
    wait_for("the container to run again", || {
        engine.list().unwrap()[0].status == EngineStatus::Running
    });
    wait_for("its greeting in the new log", || {
        engine
            .logs_tail(&spec.name, 10, 4096)
            .unwrap()
            .lines
            .iter()
            .any(|l| l.contains("hello from coracle"))
    });
    let previous = std::fs::read_to_string(dir.path().join("run/web/container.log.1")).unwrap();
    assert!(previous.contains("hello from coracle"), "{previous}");
    assert_eq!(engine.list().unwrap()[0].fingerprint, fp);
    engine
        .stop(
            &spec.name,
            Role::Current,
            StopRule::term(Duration::from_secs(2)),
        )
        .unwrap();

    engine.delete(&spec.name, Role::Current).unwrap();
    assert!(engine.list().unwrap().is_empty());
    assert!(!dir.path().join("data/containers/web").exists());
    for c in CONTROLLERS {
        let leftover = PathBuf::from("/sys/fs/cgroup")
            .join(c)
            .join(&parent.0)
            .join("web");
        assert!(!leftover.exists(), "{} left behind", leftover.display());
    }

    engine.remove_images(&[image.digest]).unwrap();
    assert!(engine.images().unwrap().is_empty());
    assert!(engine.layers().unwrap().is_empty());
}

/// A running container's exec check, probed the way the supervisor does (`run_check`, then
/// Docker's rules in `CheckState`) until its health is `want` or 15 s pass.
async fn probe_until(
    engine: &std::sync::Arc<dyn ContainerEngine>,
    spec: &ServiceSpec,
    state: &mut CheckState,
    want: Health,
) -> String {
    let check = spec.health.clone().unwrap();
    let started = Instant::now();
    let mut last = String::new();
    while state.health != want {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{} not {want:?} but {:?}; last check: {last}",
            spec.name,
            state.health
        );
        let now = started.elapsed().as_millis() as u64;
        state.probing(now);
        let timeout = Duration::from_millis(u64::from(check.timeout_ms));
        let (ok, detail) = run_check(
            engine.clone(),
            (spec.name.clone(), Role::Current),
            check.probe.clone(),
            timeout,
        )
        .await;
        last = detail;
        state.record(&check, ok, started.elapsed().as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(u64::from(check.interval_ms))).await;
    }
    last
}

/// What compose's `test: ["CMD-SHELL", script]` becomes (see the controller's compose
/// mapping): `/bin/sh -c script`, run in the container.
fn cmd_shell(script: &str, timeout_ms: u32) -> HealthCheck {
    HealthCheck {
        probe: HealthProbe::Exec(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        interval_ms: 100,
        timeout_ms,
        retries: 2,
        start_period_ms: 0,
    }
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root"]
async fn exec_health_checks_make_services_healthy_and_unhealthy() {
    let registry = TestRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parent = CgroupParent(format!("coracle-test-engine-health-{}", std::process::id()));
    let (engine, digest) = busybox_engine(&registry, dir.path(), &parent);
    let engine: std::sync::Arc<dyn ContainerEngine> = std::sync::Arc::new(engine);
    let image: ImageRef = format!("busybox@{digest}").parse().unwrap();
    engine.pull(&image, None, &mut |_| {}).unwrap();
    let _services = Services(engine.clone(), vec!["good", "bad", "slow"]);
    let service = |name: &str, check: HealthCheck| {
        let mut spec = ServiceSpec::new(name.parse().unwrap(), image.clone());
        spec.command = vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo up > /ready; exec sleep 60".into(),
        ];
        spec.health = Some(check);
        engine
            .create(&spec, fingerprint(&spec), Role::Current)
            .unwrap();
        engine.start(&spec.name, Role::Current).unwrap();
        spec
    };
    // Healthy while the file the container wrote is there; unhealthy once it is gone (the
    // image has only the applets sh, true, sleep and echo: shell builtins otherwise).
    let good = service("good", cmd_shell("read v < /ready && echo $v", 2_000));
    // Fails from the start: a non-zero exit.
    let bad = service("bad", cmd_shell("echo no such thing >&2; exit 3", 2_000));
    // Exceeds its timeout: killed, the container keeps running.
    let slow = service("slow", cmd_shell("sleep 30", 300));

    let mut good_state = CheckState::new(0);
    let said = probe_until(&engine, &good, &mut good_state, Health::Healthy).await;
    assert_eq!(said, "exit 0: up");
    let gone = engine
        .exec(
            &good.name,
            Role::Current,
            &["/bin/busybox".into(), "rm".into(), "/ready".into()],
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(gone.exit_code, 0, "{gone:?}");
    let said = probe_until(&engine, &good, &mut good_state, Health::Unhealthy).await;
    assert_eq!(said, "exit 1: /bin/sh: can't open /ready: no such file");

    let said = probe_until(&engine, &bad, &mut CheckState::new(0), Health::Unhealthy).await;
    assert_eq!(said, "exit 3: no such thing");

    let started = Instant::now();
    let said = probe_until(&engine, &slow, &mut CheckState::new(0), Health::Unhealthy).await;
    assert!(said.starts_with("timed out"), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    for spec in [&good, &bad, &slow] {
        let listed = engine.list().unwrap();
        let c = listed.iter().find(|c| c.service == spec.name).unwrap();
        assert_eq!(c.status, EngineStatus::Running, "{}", spec.name);
        engine
            .stop(
                &spec.name,
                Role::Current,
                StopRule::term(Duration::from_secs(2)),
            )
            .unwrap();
        engine.delete(&spec.name, Role::Current).unwrap();
    }
    // The stopped service's exec is a clear error, not a hang.
    let err = engine
        .exec(
            &good.name,
            Role::Current,
            &["true".into()],
            Duration::from_secs(1),
        )
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    assert!(engine.list().unwrap().is_empty());
    for c in CONTROLLERS {
        let p = PathBuf::from("/sys/fs/cgroup").join(c).join(&parent.0);
        let children = std::fs::read_dir(&p)
            .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0);
        assert_eq!(children, 0, "cgroups left under {}", p.display());
    }
    engine.remove_images(&[image.digest]).unwrap();
}

/// A service's `stop_signal` and `init` reach its container: a shell that traps SIGINT
/// stops on it, and a shell that ignores SIGTERM as PID 1 stops at once under `init`, both
/// long before their 30 s grace.
#[test]
#[ignore = "needs root"]
fn a_service_stops_by_its_stop_signal_and_under_its_init() {
    let registry = TestRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parent = CgroupParent(format!("coracle-test-stop-{}", std::process::id()));
    let (engine, digest) = busybox_engine(&registry, dir.path(), &parent);
    let engine: std::sync::Arc<dyn ContainerEngine> = std::sync::Arc::new(engine);
    let image: ImageRef = format!("busybox@{digest}").parse().unwrap();
    engine.pull(&image, None, &mut |_| {}).unwrap();
    let _services = Services(engine.clone(), vec!["web"]);
    let grace = Duration::from_secs(30);
    let cases = [
        // (script, stop signal, init, exit code, log line)
        (
            "trap 'echo stopping on INT; exit 0' INT; echo up; while :; do sleep 0.1; done",
            2,
            false,
            0,
            "stopping on INT",
        ),
        ("echo up; sleep 1000 & wait", 15, true, 128 + 15, "up"),
    ];
    for (script, signal, init, code, said) in cases {
        let mut spec = ServiceSpec::new("web".parse().unwrap(), image.clone());
        spec.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
        spec.lifecycle.init = init;
        spec.lifecycle.stop_signal = Some(signal);
        engine
            .create(&spec, fingerprint(&spec), Role::Current)
            .unwrap();
        engine.start(&spec.name, Role::Current).unwrap();
        let logged = |line: &str| {
            engine
                .logs_tail(&spec.name, 10, 4096)
                .unwrap()
                .lines
                .iter()
                .any(|l| l.contains(line))
        };
        wait_for("the service to be up", || logged("up"));
        let asked = std::time::Instant::now();
        engine
            .stop(&spec.name, Role::Current, StopRule { signal, grace })
            .unwrap();
        assert!(
            asked.elapsed() < grace / 2,
            "{script}: {:?}",
            asked.elapsed()
        );
        let status = engine.list().unwrap()[0].status;
        assert_eq!(
            status,
            EngineStatus::Stopped {
                exit_code: Some(code),
                oom_killed: false
            },
            "{script}"
        );
        assert!(logged(said), "{script}");
        engine.delete(&spec.name, Role::Current).unwrap();
    }
}
