//! The fleet simulator against Debian's Mosquitto: devices come online, apply signed desired
//! states (or roll back the ones they are meant to fail), refuse a forgery, and their last
//! wills mark them offline when they go away.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::HashMap;
use std::time::Duration;

use coracle_proto::*;
use coracle_tests::mosquitto::Mosquitto;
use coracle_tests::sim::{fails, Credentials, DeviceSpec, Fleet, FleetConfig};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

const DEVICES: usize = 30;
const FAIL_PERMILLE: u16 = 300;

#[derive(Default, Debug)]
struct Seen {
    online: HashMap<String, Presence>,
    reported: HashMap<String, ReportedState>,
    rejected: HashMap<String, RejectReason>,
}

impl Seen {
    fn record(&mut self, topic: &str, body: &[u8]) {
        let Ok((device, kind)) = topic::parse(topic) else {
            return;
        };
        let device = device.to_string();
        match kind {
            TopicKind::Online => {
                if let Ok(p) = decode(body) {
                    self.online.insert(device, p);
                }
            }
            TopicKind::Reported => {
                if let Ok(r) = decode(body) {
                    self.reported.insert(device, r);
                }
            }
            TopicKind::Events => {
                if let Ok(Event {
                    kind: EventKind::Rejected { reason, .. },
                    ..
                }) = decode(body)
                {
                    self.rejected.insert(device, reason);
                }
            }
            _ => {}
        }
    }
}

async fn observe_until(
    events: &mut rumqttc::EventLoop,
    seen: &mut Seen,
    done: impl Fn(&Seen) -> bool,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(seen) {
        let Ok(polled) = tokio::time::timeout_at(deadline, events.poll()).await else {
            panic!("timed out waiting for {what}; seen {seen:?}");
        };
        if let Ok(MqttEvent::Incoming(Packet::Publish(p))) = polled {
            seen.record(&p.topic, &p.payload);
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn simulated_fleet_applies_rolls_back_and_refuses_forgeries_over_mosquitto() {
    let broker = Mosquitto::start("allow_anonymous true").unwrap();
    let key = SigningKey::from_bytes(&[11; 32]);
    let ids: Vec<DeviceId> = (0..DEVICES)
        .map(|i| format!("sim-{i}").parse().unwrap())
        .collect();

    let mut opts = MqttOptions::new("controller", "127.0.0.1", broker.port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (controller, mut events) = AsyncClient::new(opts, 256);
    for kind in [TopicKind::Online, TopicKind::Reported, TopicKind::Events] {
        controller
            .subscribe(kind.for_all_devices(), QoS::AtLeastOnce)
            .await
            .unwrap();
    }

    let fleet = Fleet::start(FleetConfig {
        broker_host: "127.0.0.1".into(),
        broker_port: broker.port,
        devices: ids
            .iter()
            .map(|id| DeviceSpec {
                id: id.clone(),
                credentials: Credentials::Anonymous,
            })
            .collect(),
        trusted: key.verifying_key(),
        health_interval: Duration::from_secs(30),
        fail_permille: FAIL_PERMILLE,
        connect_spread: Duration::from_millis(300),
        tls_ca_pem: None,
    });

    let mut seen = Seen::default();
    observe_until(
        &mut events,
        &mut seen,
        |s| {
            s.online
                .values()
                .filter(|p| **p == Presence::Online)
                .count()
                == DEVICES
        },
        "every device online",
    )
    .await;

    let generation = Generation(7);
    for id in &ids {
        let mut state = samples::desired_with_services(2);
        state.device = id.clone();
        state.generation = generation;
        let body = encode(&Signed::sign(&state, &key));
        controller
            .publish(
                TopicKind::Desired.for_device(id),
                QoS::AtLeastOnce,
                true,
                body,
            )
            .await
            .unwrap();
    }
    let decided = |s: &Seen| {
        s.reported
            .values()
            .filter(|r| {
                r.applied == generation
                    || matches!(&r.update, UpdateStatus::RolledBack { generation: g, .. } if *g == generation)
            })
            .count()
            == DEVICES
    };
    observe_until(
        &mut events,
        &mut seen,
        decided,
        "every device to apply or roll back",
    )
    .await;

    let expected_failures = ids
        .iter()
        .filter(|id| fails(id, generation, FAIL_PERMILLE))
        .count();
    let rolled_back = seen
        .reported
        .values()
        .filter(|r| matches!(r.update, UpdateStatus::RolledBack { .. }))
        .count();
    assert_eq!(rolled_back, expected_failures);
    assert!(expected_failures > 0 && expected_failures < DEVICES);
    for r in seen.reported.values().filter(|r| r.applied == generation) {
        assert_eq!(r.services.len(), 2);
        assert!(r.services.iter().all(|s| s.health == Health::Healthy));
    }

    // A forgery (other key) for device 0 is refused and reported.
    let mut forged_state = samples::desired_with_services(1);
    forged_state.device = ids[0].clone();
    forged_state.generation = Generation(99);
    let forged = encode(&Signed::sign(
        &forged_state,
        &SigningKey::from_bytes(&[12; 32]),
    ));
    controller
        .publish(
            TopicKind::Desired.for_device(&ids[0]),
            QoS::AtLeastOnce,
            false,
            forged,
        )
        .await
        .unwrap();
    observe_until(
        &mut events,
        &mut seen,
        |s| s.rejected.contains_key(ids[0].as_str()),
        "the forgery to be rejected",
    )
    .await;
    assert_eq!(seen.rejected[ids[0].as_str()], RejectReason::UnknownKey);

    // Going away without DISCONNECT fires every device's last will.
    fleet.stop().await;
    observe_until(
        &mut events,
        &mut seen,
        |s| {
            s.online
                .values()
                .filter(|p| **p == Presence::Offline)
                .count()
                == DEVICES
        },
        "every last will",
    )
    .await;
}
