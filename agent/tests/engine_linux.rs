//! The production engine end to end on this machine, as root: pull a real image from a real
//! registry into the store, run a service from it on the overlay of its layers under real
//! cgroups, read its logs and stats, stop it, delete it, and collect the image — leaving no
//! container, cgroup or layer behind.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::time::{Duration, Instant};

use coracle_agent::engine::{EngineConfig, LinuxEngine};
use coracle_agent::pull::RegistryEndpoint;
use coracle_agent::reconcile::fingerprint;
use coracle_agent::runtime::cgroups::CgroupConfig;
use coracle_agent::runtime::RuntimeConfig;
use coracle_agent::supervisor::{ContainerEngine, EngineStatus};
use coracle_images::store::StoreConfig;
use coracle_proto::{ImageRef, ServiceSpec};
use coracle_tests::fixtures;
use coracle_tests::registry::TestRegistry;

const CONTROLLERS: &[&str] = &[
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

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root"]
fn engine_pulls_runs_stops_and_cleans_up_a_service() {
    let registry = TestRegistry::start().unwrap();
    let source = format!(
        "oci-archive:{}",
        fixtures::path("busybox-oci.tar").display()
    );
    let digest = registry.push(&source, "busybox:1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parent = CgroupParent(format!("coracle-test-engine-{}", std::process::id()));
    let engine = LinuxEngine::open(EngineConfig {
        data_dir: dir.path().join("data"),
        registry: RegistryEndpoint {
            base_url: registry.base_url(),
            ca_pem: None,
            token: None,
        },
        runtime: RuntimeConfig {
            state_dir: dir.path().join("run"),
            cgroup: CgroupConfig {
                root: "/sys/fs/cgroup".into(),
                parent: parent.0.clone(),
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
    })
    .unwrap();

    let image: ImageRef = format!("busybox@{digest}").parse().unwrap();
    engine.pull(&image).unwrap();
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
    engine.create(&spec, fp).unwrap();
    let listed = engine.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fingerprint, fp);
    assert_eq!(listed[0].status, EngineStatus::Created);

    engine.start(&spec.name).unwrap();
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

    engine.stop(&spec.name, Duration::from_secs(2)).unwrap();
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
    engine.start(&spec.name).unwrap();
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
    engine.stop(&spec.name, Duration::from_secs(2)).unwrap();

    engine.delete(&spec.name).unwrap();
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
