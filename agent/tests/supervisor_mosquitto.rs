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
            digest: Digest::from_sha256([seed; 32]),
        },
    );
    s.restart = RestartPolicy::Always;
    s
}

fn desired(generation: u64, app_seed: u8) -> DesiredState {
    let mut app = spec("app", app_seed);
    app.depends_on = vec![Dependency {
        service: "db".parse().unwrap(),
        condition: DependencyCondition::Started,
    }];
    DesiredState {
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

#[tokio::test(flavor = "current_thread")]
async fn deploys_rolls_back_a_failed_update_and_answers_commands() {
    let pki = Pki::new();
    let broker = Mosquitto::start(&pki);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut controller = Controller::connect(
        &pki,
        broker.mtls_port,
        &[
            "coracle/v1/+/reported",
            "coracle/v1/+/events",
            "coracle/v1/+/cmd/reply",
            "coracle/v1/+/health",
        ],
    )
    .await;
    let bootstrap = bootstrap_mtls(&pki, &broker, samples::device().as_str(), &key);
    let mut config = AgentConfig::default();
    config.mqtt.reconnect_min_ms = 50;
    let (handle, driver, inbox) =
        transport::transport(TransportSettings::from_bootstrap(&bootstrap, &config).unwrap());
    tokio::spawn(driver.run());

    let data = tempfile::tempdir().unwrap();
    let store = StateStore::new(data.path());
    let engine = Arc::new(FakeEngine::default());
    engine
        .inner
        .lock()
        .unwrap()
        .crashing
        .insert(Digest::from_sha256([3; 32]));
    let supervisor = Supervisor::new(
        samples::device(),
        store.load().unwrap().0,
        store.clone(),
        engine.clone(),
        handle.clone(),
        VitalsReader::new(data.path()),
        SupervisorOptions {
            tick: Duration::from_millis(20),
            health_interval: Duration::from_millis(300),
            stop_grace: Duration::from_secs(1),
            log_tail_max_bytes: 4096,
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let socket = data.path().join("agent.sock");
    let listener = coracle_agent::control::server::bind(&socket).unwrap();
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(coracle_agent::control::server::serve(listener, control_tx));
    let task = tokio::spawn(supervisor.run(inbox, control_rx, stop_rx));
    let desired_topic = TopicKind::Desired.for_device(&samples::device());

    // Deploy generation 1.
    controller
        .publish(
            desired_topic.clone(),
            true,
            encode(&Signed::sign(&desired(1, 2), &key)),
        )
        .await;
    let r = reported_until(&mut controller, |r| {
        r.applied == Generation(1)
            && r.services
                .iter()
                .all(|s| s.state == ContainerState::Running)
    })
    .await;
    assert_eq!(r.update, UpdateStatus::Idle);
    assert_eq!(r.services.len(), 2);

    // Generation 2 ships an app that exits 1 at once: the agent rolls back by itself.
    controller
        .publish(
            desired_topic.clone(),
            true,
            encode(&Signed::sign(&desired(2, 3), &key)),
        )
        .await;
    let r = reported_until(&mut controller, |r| {
        matches!(r.update, UpdateStatus::RolledBack { .. })
    })
    .await;
    assert_eq!(r.applied, Generation(1));
    let UpdateStatus::RolledBack { generation, reason } = &r.update else {
        unreachable!()
    };
    assert_eq!(*generation, Generation(2));
    assert!(reason.contains("exited with code 1"), "{reason}");
    let r = reported_until(&mut controller, |r| {
        r.services
            .iter()
            .all(|s| s.state == ContainerState::Running)
    })
    .await;
    assert!(
        r.services
            .iter()
            .any(|s| s.image == Digest::from_sha256([2; 32])),
        "old app back"
    );
    loop {
        let e: Event = decode(&controller.next_on("/events").await.payload).unwrap();
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
    let persisted = store.peek().unwrap().unwrap();
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
    controller
        .publish(cmd_topic.clone(), false, encode(&logs))
        .await;
    let reply: CommandReply = decode(&controller.next_on("/cmd/reply").await.payload).unwrap();
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
    controller.publish(cmd_topic, false, encode(&restart)).await;
    let reply: CommandReply = decode(&controller.next_on("/cmd/reply").await.payload).unwrap();
    assert!(
        matches!(reply.outcome, CommandOutcome::Failed { ref reason } if reason.contains("ghost"))
    );

    // Health samples flow at the configured interval and are small.
    let health = controller.next_on("/health").await;
    let sample: HealthSample = decode(&health.payload).unwrap();
    assert!(sample.mem_total_kib > 0);
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
    assert_eq!(logs, ["db line 0", "db line 1", "db line 2"]);
    let path = socket.clone();
    let err = tokio::task::spawn_blocking(move || {
        coracle_agent::control::client::logs(&path, "ghost".parse().unwrap(), 3, false, |_| true)
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");

    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}
