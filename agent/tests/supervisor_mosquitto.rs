//! The supervisor end to end over a real Mosquitto (TLS), with an in-memory engine:
//! deploy, a failed update that rolls back by itself, commands, persisted state.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use coracle_agent::config::AgentConfig;
use coracle_agent::health::VitalsReader;
use coracle_agent::state::StateStore;
use coracle_agent::supervisor::{Supervisor, SupervisorOptions};
use coracle_agent::transport::{self, TransportSettings};
use coracle_proto::{
    decode, encode, samples, Command, CommandOutcome, CommandReply, CommandRequest, ContainerState,
    Dependency, DependencyCondition, DesiredState, Digest, Event, EventKind, Generation,
    HealthSample, ImageRef, ReportedState, RestartPolicy, ServiceSpec, Signed, SigningKey,
    TopicKind, UpdateStatus,
};
use support::fake_engine::FakeEngine;
use support::{bootstrap_mtls, Controller, Mosquitto, Pki};

fn spec(name: &str, seed: u8) -> ServiceSpec {
    let mut s = ServiceSpec::new(
        name.parse().unwrap(),
        ImageRef {
            registry: "controller.local".into(),
            repository: format!("app/{name}"),
            digest: Digest::from_bytes([seed; 32]),
        },
    );
    s.restart = RestartPolicy::Always;
    // Commit as soon as the fake containers run (the gate's uptime rule has table tests).
    s.lifecycle.min_uptime_ms = Some(0);
    s
}

fn desired(generation: u64, app_seed: u8) -> DesiredState {
    let mut app = spec("app", app_seed);
    app.depends_on = vec![Dependency {
        service: "db".parse().unwrap(),
        condition: DependencyCondition::Started,
    }];
    DesiredState {
        registries: Vec::new(),
        device: samples::device(),
        generation: Generation(generation),
        services: vec![spec("db", 1), app],
    }
}

async fn reported_until(
    controller: &mut Controller,
    done: impl Fn(&ReportedState) -> bool,
) -> ReportedState {
    loop {
        let r: ReportedState = decode(&controller.next_on("/reported").await.payload).unwrap();
        if done(&r) {
            return r;
        }
    }
}

/// A broker, a test controller, and an agent (transport + supervisor + control socket)
/// over an in-memory engine.
struct Agent {
    pki: Pki,
    broker: Mosquitto,
    key: SigningKey,
    controller: Controller,
    engine: Arc<FakeEngine>,
    store: StateStore,
    data: tempfile::TempDir,
    socket: std::path::PathBuf,
    /// First reconnect delay of the agent (tests of broker outages slow it down so the
    /// test controller is back first).
    reconnect_min_ms: u32,
    transport: Option<coracle_agent::transport::TransportHandle>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    async fn start() -> Self {
        let pki = Pki::new();
        let broker = Mosquitto::start(&pki);
        let key = SigningKey::from_bytes(&[7; 32]);
        let controller = Controller::connect(
            &pki,
            broker.mtls_port,
            &[
                "coracle/v1/+/reported",
                "coracle/v1/+/events",
                "coracle/v1/+/cmd/reply",
                "coracle/v1/+/health",
                "coracle/v1/+/progress",
            ],
        )
        .await;
        let data = tempfile::tempdir().unwrap();
        let engine = Arc::new(FakeEngine::default());
        let store = StateStore::new(data.path());
        let socket = data.path().join("agent.sock");
        let (stop_tx, _) = tokio::sync::watch::channel(false);
        let mut agent = Self {
            pki,
            broker,
            key,
            controller,
            engine,
            store,
            data,
            socket,
            reconnect_min_ms: 50,
            transport: None,
            stop_tx,
            task: tokio::spawn(async {}),
        };
        agent.spawn_supervisor();
        agent
    }

    /// Starts (or, after `stop`, restarts) the agent on the same data dir and engine.
    fn spawn_supervisor(&mut self) {
        let bootstrap = bootstrap_mtls(
            &self.pki,
            &self.broker,
            samples::device().as_str(),
            &self.key,
        );
        let mut config = AgentConfig::default();
        config.mqtt.reconnect_min_ms = self.reconnect_min_ms;
        config.mqtt.reconnect_max_ms = self.reconnect_min_ms;
        let (handle, driver, inbox) =
            transport::transport(TransportSettings::from_bootstrap(&bootstrap, &config).unwrap());
        tokio::spawn(driver.run());
        let supervisor = Supervisor::new(
            samples::device(),
            self.store.load().unwrap().0,
            self.store.clone(),
            self.engine.clone(),
            handle.clone(),
            VitalsReader::new(self.data.path()),
            SupervisorOptions {
                tick: Duration::from_millis(20),
                health_interval: Duration::from_millis(300),
                stop_grace: Duration::from_secs(1),
                log_tail_max_bytes: 4096,
                disk_reserve_mib: 0,
            },
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let listener = coracle_agent::control::server::bind(&self.socket).unwrap();
        let (control_tx, control_rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(coracle_agent::control::server::serve(listener, control_tx));
        self.stop_tx = stop_tx;
        self.transport = Some(handle);
        self.task = tokio::spawn(async move {
            supervisor.run(inbox, control_rx, stop_rx).await;
        });
    }

    /// Stops the supervisor and says goodbye to the broker (a second agent with the same
    /// client id would otherwise take the session over back and forth).
    async fn stop(&mut self) {
        self.stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .unwrap()
            .unwrap();
        if let Some(handle) = self.transport.take() {
            handle.shutdown();
        }
    }

    async fn deploy(&self, state: &DesiredState) {
        let topic = TopicKind::Desired.for_device(&samples::device());
        self.controller
            .publish(topic, true, encode(&Signed::sign(state, &self.key)))
            .await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn deploys_rolls_back_a_failed_update_and_answers_commands() {
    let mut agent = Agent::start().await;
    agent
        .engine
        .inner
        .lock()
        .unwrap()
        .crashing
        .insert(Digest::from_bytes([3; 32]));
    let missing_memory = coracle_proto::Condition::CgroupControllerMissing {
        controller: "memory".into(),
    };
    agent.engine.inner.lock().unwrap().conditions = vec![missing_memory.clone()];
    let socket = agent.socket.clone();

    // Deploy generation 1.
    agent.deploy(&desired(1, 2)).await;
    let r = reported_until(&mut agent.controller, |r| {
        r.applied == Generation(1)
            && r.services
                .iter()
                .all(|s| s.state == ContainerState::Running)
    })
    .await;
    assert_eq!(r.update, UpdateStatus::Idle);
    assert_eq!(r.services.len(), 2);
    assert_eq!(
        r.conditions,
        [missing_memory],
        "runtime conditions reported once"
    );

    // Generation 2 ships an app that exits 1 at once: the agent rolls back by itself.
    agent.deploy(&desired(2, 3)).await;
    let r = reported_until(&mut agent.controller, |r| {
        matches!(r.update, UpdateStatus::RolledBack { .. })
    })
    .await;
    assert_eq!(r.applied, Generation(1));
    let UpdateStatus::RolledBack { generation, reason } = &r.update else {
        unreachable!()
    };
    assert_eq!(*generation, Generation(2));
    assert!(reason.contains("exited with code 1"), "{reason}");
    let r = reported_until(&mut agent.controller, |r| {
        r.services
            .iter()
            .all(|s| s.state == ContainerState::Running)
    })
    .await;
    assert!(
        r.services
            .iter()
            .any(|s| s.image == Digest::from_bytes([2; 32])),
        "old app back"
    );
    loop {
        let e: Event = decode(&agent.controller.next_on("/events").await.payload).unwrap();
        if let EventKind::RolledBack {
            generation,
            service,
            ..
        } = e.kind
        {
            assert_eq!((generation, service.as_str()), (Generation(2), "app"));
            break;
        }
    }
    let persisted = agent.store.peek().unwrap().unwrap();
    assert_eq!(persisted.committed_generation(), Generation(1));
    assert!(persisted.was_rolled_back(Generation(2)) && persisted.pending.is_none());

    // Commands: logs tail and restart.
    let cmd_topic = TopicKind::Cmd.for_device(&samples::device());
    let logs = CommandRequest {
        id: 9,
        command: Command::LogsTail {
            service: "db".parse().unwrap(),
            lines: 2,
            max_bytes: 1 << 20,
        },
    };
    agent
        .controller
        .publish(cmd_topic.clone(), false, encode(&logs))
        .await;
    let reply: CommandReply =
        decode(&agent.controller.next_on("/cmd/reply").await.payload).unwrap();
    assert_eq!(reply.id, 9);
    assert!(
        matches!(reply.outcome, CommandOutcome::Logs { ref lines, .. } if lines.len() == 2),
        "{reply:?}"
    );
    let restart = CommandRequest {
        id: 10,
        command: Command::Restart {
            service: "ghost".parse().unwrap(),
        },
    };
    agent
        .controller
        .publish(cmd_topic, false, encode(&restart))
        .await;
    let reply: CommandReply =
        decode(&agent.controller.next_on("/cmd/reply").await.payload).unwrap();
    assert!(
        matches!(reply.outcome, CommandOutcome::Failed { ref reason } if reason.contains("ghost"))
    );

    // Health samples flow at the configured interval and are small.
    let health = agent.controller.next_on("/health").await;
    let sample: HealthSample = decode(&health.payload).unwrap();
    assert!(sample.mem_total_kib > 0);
    assert_eq!(sample.containers.len(), 2, "{sample:?}");
    assert!(
        sample.containers.iter().all(|c| c.mem_kib == 12 * 1024),
        "per-container memory from the engine: {sample:?}"
    );
    assert!(health.payload.len() < 100, "{} bytes", health.payload.len());

    // The local control socket answers status, ps and logs (blocking client off the loop).
    let path = socket.clone();
    let status = tokio::task::spawn_blocking(move || coracle_agent::control::client::status(&path))
        .await
        .unwrap()
        .unwrap();
    assert!(status.broker_connected);
    assert_eq!(status.reported.applied, Generation(1));
    let ps = coracle_agent::control::client::format_ps(&status);
    assert!(ps.contains("app") && ps.contains("Running"), "{ps}");
    let path = socket.clone();
    let logs = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        coracle_agent::control::client::logs(&path, "db".parse().unwrap(), 3, false, |l| {
            got.extend_from_slice(l);
            true
        })
        .map(|()| got)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(logs.len(), 3);
    assert!(logs.iter().all(|l| l.starts_with("db line ")), "{logs:?}");
    let path = socket.clone();
    let err = tokio::task::spawn_blocking(move || {
        coracle_agent::control::client::logs(&path, "ghost".parse().unwrap(), 3, false, |_| true)
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");

    agent.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn restarted_agent_adopts_its_containers_and_keeps_its_state() {
    let mut agent = Agent::start().await;
    agent.deploy(&desired(1, 2)).await;
    reported_until(&mut agent.controller, |r| {
        r.applied == Generation(1)
            && r.services
                .iter()
                .all(|s| s.state == ContainerState::Running)
    })
    .await;
    agent.stop().await;
    let starts = agent.engine.inner.lock().unwrap().starts;

    agent.spawn_supervisor();
    let path = agent.socket.clone();
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let p = path.clone();
            if let Ok(Ok(s)) =
                tokio::task::spawn_blocking(move || coracle_agent::control::client::status(&p))
                    .await
            {
                if s.reported
                    .services
                    .iter()
                    .all(|s| s.state == ContainerState::Running)
                {
                    return s;
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        status.reported.applied,
        Generation(1),
        "state survived the restart"
    );
    assert_eq!(
        agent.engine.inner.lock().unwrap().starts,
        starts,
        "running containers were adopted, not restarted"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn failed_pull_is_reported_retried_with_backoff_and_then_completes() {
    let mut agent = Agent::start().await;
    let app_image = Digest::from_bytes([2; 32]);
    agent
        .engine
        .inner
        .lock()
        .unwrap()
        .failing_pulls
        .insert(app_image);
    agent.deploy(&desired(1, 2)).await;
    loop {
        let e: Event = decode(&agent.controller.next_on("/events").await.payload).unwrap();
        if let EventKind::PullFailed { image, reason } = e.kind {
            assert_eq!(image, app_image);
            assert!(reason.contains("registry unreachable"), "{reason}");
            break;
        }
    }
    // The app's pull keeps failing: the update is reported as failing, retried; db's image
    // is here but nothing starts before every image of the generation is.
    let r = reported_until(&mut agent.controller, |r| {
        matches!(r.update, UpdateStatus::Failed { .. })
    })
    .await;
    assert!(agent.engine.inner.lock().unwrap().containers.is_empty());
    let UpdateStatus::Failed { generation, reason } = &r.update else {
        unreachable!()
    };
    assert_eq!(*generation, Generation(1));
    assert!(
        reason.contains("registry unreachable") && reason.contains("retrying"),
        "{reason}"
    );
    agent.engine.inner.lock().unwrap().failing_pulls.clear();
    reported_until(&mut agent.controller, |r| r.applied == Generation(1)).await;
    let attempts = agent.engine.inner.lock().unwrap().pull_attempts;
    assert!(
        attempts < 10,
        "{attempts} pull attempts: backoff, not one per 20 ms tick"
    );
    agent.stop().await;
}

/// Issue 15: an update whose image cannot be pulled, and one the agent could not run (an
/// unknown capability), leave the running generation alone — no stop, no restart — and are
/// reported failed with the reason; a later good state still applies.
#[tokio::test(flavor = "current_thread")]
async fn updates_that_cannot_be_pulled_or_run_leave_the_running_version_alone() {
    let mut agent = Agent::start().await;
    agent.deploy(&desired(1, 2)).await;
    reported_until(&mut agent.controller, |r| {
        r.applied == Generation(1)
            && r.services
                .iter()
                .all(|s| s.state == ContainerState::Running)
    })
    .await;
    let before = agent.engine.inner.lock().unwrap().containers.clone();
    let starts = agent.engine.inner.lock().unwrap().starts;

    // Generation 2: a new app image that cannot be pulled, and db with a new command (same
    // image, so it could be replaced at once: it must not be).
    let new_app = Digest::from_bytes([3; 32]);
    agent
        .engine
        .inner
        .lock()
        .unwrap()
        .failing_pulls
        .insert(new_app);
    let mut two = desired(2, 3);
    two.services[0].command = vec!["--v2".into()];
    agent.deploy(&two).await;
    for _ in 0..2 {
        loop {
            let e: Event = decode(&agent.controller.next_on("/events").await.payload).unwrap();
            if matches!(e.kind, EventKind::PullFailed { image, .. } if image == new_app) {
                break;
            }
        }
    }
    let r = reported_until(&mut agent.controller, |r| {
        matches!(
            r.update,
            UpdateStatus::Failed {
                generation: Generation(2),
                ..
            }
        )
    })
    .await;
    assert_eq!(r.applied, Generation(1));
    {
        let inner = agent.engine.inner.lock().unwrap();
        assert_eq!(inner.containers, before, "generation 1 untouched");
        assert_eq!((inner.stops, inner.starts), (0, starts));
    }

    // Generation 3 names a capability Linux does not have: refused, reported, nothing moves.
    let mut three = desired(3, 2);
    three.services[1].cap_add = vec!["NOT_A_CAP".into()];
    agent.deploy(&three).await;
    let r = reported_until(&mut agent.controller, |r| {
        matches!(
            r.update,
            UpdateStatus::Failed {
                generation: Generation(3),
                ..
            }
        )
    })
    .await;
    let UpdateStatus::Failed { reason, .. } = &r.update else {
        unreachable!()
    };
    assert!(
        reason.contains("service app: cap_add: unknown capability \"NOT_A_CAP\""),
        "{reason}"
    );
    assert_eq!(agent.engine.inner.lock().unwrap().stops, 0);

    // Generation 4 needs what the device lacks (the engine's preflight: nftables for
    // bridged services): refused when it arrives, before anything is pulled or stopped.
    agent.engine.inner.lock().unwrap().preflight_error = Some("nft: not found".into());
    let pulls = agent.engine.inner.lock().unwrap().pull_attempts;
    agent.deploy(&desired(4, 3)).await;
    let r = reported_until(&mut agent.controller, |r| {
        matches!(
            r.update,
            UpdateStatus::Failed {
                generation: Generation(4),
                ..
            }
        )
    })
    .await;
    let UpdateStatus::Failed { reason, .. } = &r.update else {
        unreachable!()
    };
    assert!(
        reason.contains("refused, nothing was changed") && reason.contains("nft: not found"),
        "{reason}"
    );
    {
        let inner = agent.engine.inner.lock().unwrap();
        assert_eq!((inner.stops, inner.pull_attempts), (0, pulls));
    }

    // A good generation 5 (and an image that arrives) applies as usual.
    agent.engine.inner.lock().unwrap().preflight_error = None;
    agent.engine.inner.lock().unwrap().failing_pulls.clear();
    agent.deploy(&desired(5, 3)).await;
    reported_until(&mut agent.controller, |r| {
        r.applied == Generation(5) && r.update == UpdateStatus::Idle
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn pulls_get_their_registry_access_and_the_sealing_key_is_reported() {
    let mut agent = Agent::start().await;
    let key = "ab".repeat(32);
    agent.engine.inner.lock().unwrap().sealing_key = key.clone();
    let mut state = desired(1, 2);
    state.registries = vec![coracle_proto::RegistryAccess {
        host: "controller.local".into(),
        url: "https://controller.local".into(),
        ca_pem: None,
        sealed_credentials: None,
    }];
    agent.deploy(&state).await;
    let r = reported_until(&mut agent.controller, |r| r.applied == Generation(1)).await;
    assert_eq!(r.sealing_key, key);
    let pulls = agent.engine.inner.lock().unwrap().direct_pulls.clone();
    assert!(!pulls.is_empty());
    for (registry, access) in pulls {
        assert_eq!(access.as_deref(), Some(registry.as_str()));
    }
    agent.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn pulls_report_progress_per_layer_at_a_bounded_rate() {
    let mut agent = Agent::start().await;
    let state = desired(1, 2);
    agent.deploy(&state).await;
    // Each image's pull ticks six times within a millisecond or so: the first tick and the
    // two layer ends go out, the chunks between them are held back by the 1/s gate.
    let mut received = Vec::new();
    while received
        .iter()
        .filter(|p: &&coracle_proto::PullProgress| p.stored)
        .count()
        < 4
    {
        let msg = agent.controller.next_on("/progress").await;
        let progress: coracle_proto::PullProgress = decode(&msg.payload).unwrap();
        assert_eq!(progress.generation, Generation(1));
        received.push(progress);
    }
    let mut ends: Vec<_> = received
        .iter()
        .filter(|p| p.stored)
        .map(|p| {
            (
                p.service.to_string(),
                p.layer,
                p.layers,
                p.delta,
                p.percent(),
            )
        })
        .collect();
    // The two services may pull in either order; each one's layers end in order (a stable
    // sort by service keeps that order).
    ends.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        ends,
        [
            ("app".to_string(), 0, 2, false, 100),
            ("app".to_string(), 1, 2, true, 100),
            ("db".to_string(), 0, 2, false, 100),
            ("db".to_string(), 1, 2, true, 100),
        ]
    );
    assert!(
        received.len() < 12,
        "12 ticks, at most one a second besides the 4 ends: {received:?}"
    );
    let r = reported_until(&mut agent.controller, |r| r.applied == Generation(1)).await;
    assert_eq!(r.update, UpdateStatus::Idle);
    agent.stop().await;
}

/// An HTTP server on a free port that answers 200 to everything, until dropped.
async fn healthy_http_server() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    (port, task)
}

fn http_checked(mut spec: ServiceSpec, port: u16, gate_ms: u32) -> ServiceSpec {
    spec.health = Some(coracle_proto::HealthCheck {
        probe: coracle_proto::HealthProbe::Http {
            port,
            path: "/healthz".into(),
        },
        interval_ms: 50,
        timeout_ms: 500,
        retries: 2,
        start_period_ms: 0,
    });
    spec.update.health_gate_ms = Some(gate_ms);
    spec
}

#[tokio::test(flavor = "current_thread")]
async fn health_gated_update_commits_when_healthy_and_rolls_back_when_not() {
    let mut agent = Agent::start().await;
    let (port, _server) = healthy_http_server().await;
    let closed_port = support::free_port();
    let state = |generation, seed, port| DesiredState {
        registries: Vec::new(),
        device: samples::device(),
        generation: Generation(generation),
        services: vec![http_checked(spec("web", seed), port, 300)],
    };

    // Generation 1 answers its HTTP check: verified, then committed after the gate.
    agent.deploy(&state(1, 2, port)).await;
    let r = reported_until(&mut agent.controller, |r| {
        r.applied == Generation(1) && r.update == UpdateStatus::Idle
    })
    .await;
    assert_eq!(r.services[0].health, coracle_proto::Health::Healthy);

    // Generation 2 checks a port nobody listens on: unhealthy, rolled back to 1.
    agent.deploy(&state(2, 3, closed_port)).await;
    let r = reported_until(&mut agent.controller, |r| {
        matches!(r.update, UpdateStatus::RolledBack { .. })
    })
    .await;
    let UpdateStatus::RolledBack { generation, reason } = &r.update else {
        unreachable!()
    };
    assert_eq!(*generation, Generation(2));
    // The reason says what the failing check was and what happened, as `docker inspect`
    // shows a health log.
    let last_check = format!(
        "unhealthy before commit; last check: HTTP GET /healthz on port {closed_port}: connection refused"
    );
    assert_eq!(reason, &last_check);
    let r = reported_until(&mut agent.controller, |r| {
        r.services.first().is_some_and(|s| {
            s.image == Digest::from_bytes([2; 32]) && s.health == coracle_proto::Health::Healthy
        })
    })
    .await;
    assert_eq!(r.applied, Generation(1));
    agent.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_unhealthy_container_is_restarted_per_its_policy() {
    let mut agent = Agent::start().await;
    let (port, server) = healthy_http_server().await;
    let state = DesiredState {
        registries: Vec::new(),
        device: samples::device(),
        generation: Generation(1),
        services: vec![http_checked(spec("web", 2), port, 0)],
    };
    agent.deploy(&state).await;
    reported_until(&mut agent.controller, |r| r.applied == Generation(1)).await;
    server.abort(); // the app stops answering
    loop {
        let e: Event = decode(&agent.controller.next_on("/events").await.payload).unwrap();
        if let EventKind::HealthChanged {
            health: coracle_proto::Health::Unhealthy,
            ..
        } = e.kind
        {
            break;
        }
    }
    let r = reported_until(&mut agent.controller, |r| {
        r.services.first().is_some_and(|s| s.restart_count >= 1)
    })
    .await;
    assert_eq!(
        r.applied,
        Generation(1),
        "a committed generation is never rolled back"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn offline_agent_keeps_restarting_and_reports_what_happened_on_reconnect() {
    let mut agent = Agent::start().await;
    agent.stop().await;
    agent.reconnect_min_ms = 3_000; // 1.5-3 s: the test controller reconnects first
    agent.spawn_supervisor();
    agent.deploy(&desired(1, 2)).await;
    reported_until(&mut agent.controller, |r| {
        r.applied == Generation(1)
            && r.services
                .iter()
                .all(|s| s.state == ContainerState::Running)
    })
    .await;

    agent.broker.kill();
    // The app crashes while the device is offline; policy `always` restarts it.
    let starts = {
        let mut inner = agent.engine.inner.lock().unwrap();
        let app = inner.containers.get_mut(&"app".parse().unwrap()).unwrap();
        app.status = coracle_agent::supervisor::EngineStatus::Stopped {
            exit_code: Some(2),
            oom_killed: false,
        };
        inner.starts
    };
    // Polled, not spun: the supervisor shares this thread and its restart waits on a timer.
    tokio::time::timeout(Duration::from_secs(60), async {
        while agent.engine.inner.lock().unwrap().starts == starts {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("restarted while offline");

    agent.broker.restart();
    agent
        .controller
        .wait_subscribed("coracle/v1/probe/events")
        .await;
    let (mut exited, mut restarted) = (false, false);
    while !(exited && restarted) {
        let e: Event = decode(&agent.controller.next_on("/events").await.payload).unwrap();
        match e.kind {
            EventKind::ContainerExited { exit_code: 2, .. } => exited = true,
            EventKind::ContainerRestarted {
                restart_count: 1, ..
            } => restarted = true,
            _ => {}
        }
    }
    agent.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn logs_follow_streams_new_lines_over_the_control_socket() {
    let mut agent = Agent::start().await;
    agent.deploy(&desired(1, 2)).await;
    reported_until(&mut agent.controller, |r| r.applied == Generation(1)).await;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<String>>();
    let path = agent.socket.clone();
    let follower = tokio::task::spawn_blocking(move || {
        coracle_agent::control::client::logs(&path, "db".parse().unwrap(), 2, true, |lines| {
            tx.send(lines.to_vec()).is_ok()
        })
    });
    let first = tokio::task::spawn_blocking({
        let rx_wait = Duration::from_secs(20);
        move || {
            let first = rx.recv_timeout(rx_wait).unwrap();
            (first, rx)
        }
    })
    .await
    .unwrap();
    let (first, rx) = first;
    assert_eq!(first.len(), 2);
    // A restart makes the (fake) log grow; the follower gets only the new line.
    let restart = CommandRequest {
        id: 1,
        command: Command::Restart {
            service: "db".parse().unwrap(),
        },
    };
    agent
        .controller
        .publish(
            TopicKind::Cmd.for_device(&samples::device()),
            false,
            encode(&restart),
        )
        .await;
    let next =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)).unwrap())
            .await
            .unwrap();
    assert_eq!(next.len(), 1, "{next:?} after {first:?}");
    assert_ne!(next[0], first[1]);
    agent.stop().await;
    // The follower ends once the agent is gone or the receiver hung up.
    let _ = tokio::time::timeout(Duration::from_secs(20), follower).await;
}
