//! The real `coracle-agent` binary as a device: mutual TLS to Debian's Mosquitto, images from a
//! real registry, real containers. A signed deployment comes up healthy, an update switches,
//! and a broken update fails its health gate and is rolled back by the agent on its own.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use std::process::Command;
use std::time::Duration;

use coracle_agent::engine::{EngineConfig, LinuxEngine};
use coracle_agent::pull::RegistryEndpoint;
use coracle_agent::reconcile::Role;
use coracle_agent::runtime::cgroups::CgroupConfig;
use coracle_agent::runtime::RuntimeConfig;
use coracle_agent::supervisor::{ContainerEngine, StopRule};
use coracle_proto::*;
use coracle_tests::fixtures;
use coracle_tests::process::TestProcess;
use coracle_tests::registry::TestRegistry;
use support::{bootstrap_mtls, free_port, Controller, Mosquitto, Pki};

/// Stops and deletes whatever containers the agent left (they outlive it by design), and
/// removes the test's cgroup parent, also when the test failed.
struct Cleanup {
    engine: EngineConfig,
    services: Vec<ServiceName>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(engine) = LinuxEngine::open(self.engine.clone()) {
            for s in &self.services {
                let _ = engine.stop(s, Role::Current, StopRule::term(Duration::from_secs(1)));
                let _ = engine.delete(s, Role::Current);
            }
        }
        coracle_tests::cgroups::remove_parent(&self.engine.runtime.cgroup.parent);
    }
}

fn web(image: &ImageRef, port: u16) -> ServiceSpec {
    let mut spec = ServiceSpec::new("web".parse().unwrap(), image.clone());
    spec.command = vec![
        "/bin/busybox".into(),
        "httpd".into(),
        "-f".into(),
        "-p".into(),
        format!("127.0.0.1:{port}"),
    ];
    spec.restart = RestartPolicy::Always;
    spec.health = Some(HealthCheck {
        probe: HealthProbe::Tcp { port },
        interval_ms: 300,
        timeout_ms: 500,
        retries: 2,
        start_period_ms: 0,
    });
    spec.update.health_gate_ms = Some(2_000);
    spec
}

async fn deploy(controller: &Controller, key: &SigningKey, generation: u64, spec: ServiceSpec) {
    let state = DesiredState {
        registries: Vec::new(),
        device: samples::device(),
        generation: Generation(generation),
        services: vec![spec],
    };
    let topic = TopicKind::Desired.for_device(&samples::device());
    controller
        .publish(topic, true, encode(&Signed::sign(&state, key)))
        .await;
}

/// Waits for a reported state that satisfies `done`.
async fn reported_until(
    controller: &mut Controller,
    what: &str,
    done: impl Fn(&ReportedState) -> bool,
) -> ReportedState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        let r = controller.next_on("/reported").await;
        if let Ok(state) = decode::<ReportedState>(&r.payload) {
            if done(&state) {
                return state;
            }
        }
    }
}

fn healthy_on(state: &ReportedState, generation: u64) -> bool {
    state.applied == Generation(generation)
        && state.update == UpdateStatus::Idle
        && state
            .services
            .iter()
            .any(|s| s.state == ContainerState::Running && s.health == Health::Healthy)
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root"]
async fn agent_deploys_updates_and_rolls_back_a_broken_update_by_itself() {
    let pki = Pki::new();
    let broker = Mosquitto::start(&pki);
    let registry = TestRegistry::start().unwrap();
    let source = format!(
        "oci-archive:{}",
        fixtures::path("busybox-oci.tar").display()
    );
    let digest = registry.push(&source, "busybox:1").unwrap();
    let image: ImageRef = format!("busybox@{digest}").parse().unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);
    let mut controller =
        Controller::connect(&pki, broker.mtls_port, &["coracle/v1/+/reported"]).await;

    let dir = tempfile::tempdir().unwrap();
    let mut bootstrap = bootstrap_mtls(&pki, &broker, samples::device().as_str(), &key);
    bootstrap.registry_url = registry.base_url();
    std::fs::write(
        dir.path().join("bootstrap.toml"),
        toml::to_string(&bootstrap).unwrap(),
    )
    .unwrap();
    let parent = format!("coracle-test-agent-{}", std::process::id());
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "data_dir = \"{d}/data\"\nbootstrap = \"{d}/bootstrap.toml\"\ncontrol_socket = \"{d}/agent.sock\"\nhealth_interval_s = 5\n\n[limits]\ndisk_reserve_mib = 0\n\n[runtime]\nstate_dir = \"{d}/run\"\ncgroup_parent = \"{parent}\"\n\n[network]\nnetns_dir = \"{d}/netns\"\n"
        ),
    )
    .unwrap();
    let _cleanup = Cleanup {
        engine: EngineConfig {
            data_dir: dir.path().join("data"),
            registry: RegistryEndpoint {
                base_url: registry.base_url(),
                ca_pem: None,
                token: Default::default(),
            },
            runtime: RuntimeConfig {
                state_dir: dir.path().join("run"),
                cgroup: CgroupConfig {
                    root: "/sys/fs/cgroup".into(),
                    parent: parent.clone(),
                    allow_missing_controllers: false,
                },
                shim_binary: env!("CARGO_BIN_EXE_coracle-agent").into(),
            },
            store: Default::default(),
            delta_budget: 64 << 20,
            log_max_bytes: 1 << 20,
            log_keep: 2,
            network: coracle_agent::network::NetworkConfig {
                netns_dir: dir.path().join("netns"),
                ..coracle_agent::network::NetworkConfig::device(&dir.path().join("data"))
            },
        },
        services: vec!["web".parse().unwrap()],
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coracle-agent"));
    cmd.arg("--config").arg(dir.path().join("agent.toml"));
    cmd.env("RUST_LOG", "info");
    let agent = TestProcess::spawn(cmd).unwrap();

    // 1. Deploy: pulled from the registry, started, healthy, committed.
    let (port1, port2) = (free_port(), free_port());
    deploy(&controller, &key, 1, web(&image, port1)).await;
    let state = reported_until(&mut controller, "generation 1 healthy", |s| {
        healthy_on(s, 1)
    })
    .await;
    assert_eq!(state.layers.len(), 1, "{state:?}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port1)).is_ok());

    // 2. Update: the new spec replaces the container and passes its health gate, checked
    //    this time by a command in the container (compose `test: ["CMD-SHELL", ...]`).
    let mut exec_checked = web(&image, port2);
    exec_checked.health.as_mut().unwrap().probe = HealthProbe::Exec(vec![
        "/bin/sh".into(),
        "-c".into(),
        "read -r cmd < /proc/1/cmdline; test -n \"$cmd\"".into(),
    ]);
    deploy(&controller, &key, 2, exec_checked).await;
    reported_until(&mut controller, "generation 2 healthy", |s| {
        healthy_on(s, 2)
    })
    .await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port2)).is_ok());
    // `coracle-agent exec` runs in the same container: its pid 1 is the web server.
    let out = Command::new(env!("CARGO_BIN_EXE_coracle-agent"))
        .arg("--config")
        .arg(dir.path().join("agent.toml"))
        .args([
            "exec",
            "web",
            "--",
            "/bin/sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/cmdline; exit 4",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("/bin/busybox httpd -f -p 127.0.0.1:{port2} ")
    );

    // 3. A broken update (the server never listens) fails the gate: the agent rolls back.
    let mut broken = web(&image, port2);
    broken.command = vec!["/bin/sh".into(), "-c".into(), "exec sleep 300".into()];
    deploy(&controller, &key, 3, broken).await;
    let rolled = reported_until(&mut controller, "generation 3 rolled back", |s| {
        matches!(&s.update, UpdateStatus::RolledBack { generation, .. } if *generation == Generation(3))
    })
    .await;
    assert_eq!(rolled.applied, Generation(2));
    reported_until(&mut controller, "generation 2 serving again", |s| {
        s.applied == Generation(2)
            && s.services
                .iter()
                .any(|x| x.state == ContainerState::Running && x.health == Health::Healthy)
    })
    .await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port2)).is_ok());
    assert!(
        agent.output().contains("rolled back") || agent.output().contains("rollback"),
        "{}",
        agent.output()
    );

    // 4. Rollback reasons say what happened: an HTTP check answered 404 ...
    let mut missing_page = web(&image, port2);
    missing_page.health.as_mut().unwrap().probe = HealthProbe::Http {
        port: port2,
        path: "/nope".into(),
    };
    let reason = roll_back(&mut controller, &key, 4, missing_page).await;
    assert!(reason.contains("HTTP status 404"), "{reason}");
    // ... and a service without a health check crashed before its minimum uptime, saying why.
    let mut crashing = web(&image, port2);
    crashing.health = None;
    crashing.update.health_gate_ms = None;
    crashing.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo starting; sleep 1; echo 'fatal: no config in /etc/app.toml'; exit 1".into(),
    ];
    let reason = roll_back(&mut controller, &key, 5, crashing).await;
    assert!(reason.contains("exited with code 1"), "{reason}");
    assert!(
        reason.contains("fatal: no config in /etc/app.toml"),
        "{reason}"
    );
}

/// Deploys `spec` as `generation`, waits for the agent to roll it back and to serve
/// generation 2 again; returns the rollback's reason.
async fn roll_back(
    controller: &mut Controller,
    key: &SigningKey,
    generation: u64,
    spec: ServiceSpec,
) -> String {
    deploy(controller, key, generation, spec).await;
    let rolled = reported_until(controller, "the update rolled back", |s| {
        matches!(&s.update, UpdateStatus::RolledBack { generation: g, .. } if *g == Generation(generation))
    })
    .await;
    reported_until(controller, "generation 2 serving again", |s| {
        s.applied == Generation(2)
            && s.services
                .iter()
                .any(|x| x.state == ContainerState::Running && x.health == Health::Healthy)
    })
    .await;
    match rolled.update {
        UpdateStatus::RolledBack { reason, .. } => reason,
        other => panic!("{other:?}"),
    }
}
