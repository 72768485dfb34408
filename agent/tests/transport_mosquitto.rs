//! The transport against a real Mosquitto over TLS: connect, presence, admitted and
//! rejected desired states, broker restart, oversized packets and floods.

// Test helpers outside #[test] fns are still test code.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use coracle_agent::config::AgentConfig;
use coracle_agent::transport::{self, Inbox, Link, TransportHandle, TransportSettings};
use coracle_proto::{
    decode, encode, samples, Bootstrap, BrokerAuth, DesiredState, Event, EventKind, Generation,
    Presence, RejectReason, Signed, SigningKey, TopicKind,
};
use support::{bootstrap_mtls, Controller, Mosquitto, Pki};

const WAIT: Duration = Duration::from_secs(20);

fn settings(bootstrap: &Bootstrap) -> TransportSettings {
    let mut config = AgentConfig::default();
    config.mqtt.reconnect_min_ms = 50;
    config.mqtt.reconnect_max_ms = 500;
    TransportSettings::from_bootstrap(bootstrap, &config).unwrap()
}

fn start(bootstrap: &Bootstrap) -> (TransportHandle, Inbox) {
    let (handle, driver, inbox) = transport::transport(settings(bootstrap));
    tokio::spawn(driver.run());
    (handle, inbox)
}

async fn wait_link(inbox: &mut Inbox, want: impl Fn(Link) -> bool) -> Link {
    *tokio::time::timeout(WAIT, inbox.link.wait_for(|l| want(*l)))
        .await
        .expect("link state reached in time")
        .expect("driver alive")
}

async fn next_desired(inbox: &mut Inbox) -> DesiredState {
    tokio::time::timeout(WAIT, inbox.desired.changed())
        .await
        .expect("desired state admitted in time")
        .unwrap();
    inbox.desired.borrow_and_update().clone().unwrap()
}

fn topic(kind: TopicKind) -> String {
    kind.for_device(&samples::device())
}

fn signed(state: &DesiredState, key: &SigningKey) -> Vec<u8> {
    encode(&Signed::sign(state, key))
}

async fn next_rejection(controller: &mut Controller) -> (RejectReason, String) {
    loop {
        let r = controller.next_on("/events").await;
        let event: Event = decode(&r.payload).unwrap();
        if let EventKind::Rejected { reason, detail } = event.kind {
            return (reason, detail);
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn connects_announces_presence_and_admits_a_signed_desired_state() {
    let pki = Pki::new();
    let broker = Mosquitto::start(&pki);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut controller =
        Controller::connect(&pki, broker.mtls_port, &["coracle/v1/+/online"]).await;
    let bootstrap = bootstrap_mtls(&pki, &broker, samples::device().as_str(), &key);
    let (_handle, mut inbox) = start(&bootstrap);
    assert_eq!(
        wait_link(&mut inbox, |l| l != Link::Down).await,
        Link::Up { connects: 1 }
    );
    let online = controller.next_on("/online").await;
    assert_eq!(
        decode::<Presence>(&online.payload).unwrap(),
        Presence::Online
    );

    let state = samples::desired_with_services(3);
    controller
        .publish(topic(TopicKind::Desired), true, signed(&state, &key))
        .await;
    assert_eq!(next_desired(&mut inbox).await, state);
    drop(broker);
}

/// Starts the transport against Mosquitto's password listener as `pw-device` (whose
/// password there is `s3cret`) with `password`; the link it settles on.
async fn password_link(password: &str) -> Link {
    let pki = Pki::new();
    let broker = Mosquitto::start(&pki);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut bootstrap = bootstrap_mtls(&pki, &broker, "pw-device", &key);
    bootstrap.broker_url = format!("mqtts://127.0.0.1:{}", broker.password_port);
    bootstrap.auth = BrokerAuth::Password {
        username: "pw-device".into(),
        password: password.into(),
    };
    let (_handle, mut inbox) = start(&bootstrap);
    wait_link(&mut inbox, |l| l != Link::Down).await
}

#[tokio::test(flavor = "current_thread")]
async fn password_auth_over_tls_connects() {
    assert!(matches!(password_link("s3cret").await, Link::Up { .. }));
}

/// A device whose password the broker no longer accepts (removed with `coracle device rm`,
/// or its password changed) says so: the link reports `CredentialsRefused`, not just down.
#[tokio::test(flavor = "current_thread")]
async fn refused_credentials_are_reported_as_such() {
    assert_eq!(
        password_link("not-the-password").await,
        Link::CredentialsRefused
    );
}

/// `switch_credentials` (a password rotation): on a live link a clean reconnect with the
/// new password, one more connect; a refused password is reported as such; and switching
/// back reconnects at once, not at the slowest backoff (here ten minutes).
#[tokio::test(flavor = "current_thread")]
async fn switched_credentials_reconnect_at_once_and_a_refused_one_is_reported() {
    let pki = Pki::new();
    let broker = Mosquitto::start(&pki);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut bootstrap = bootstrap_mtls(&pki, &broker, "pw-device", &key);
    bootstrap.broker_url = format!("mqtts://127.0.0.1:{}", broker.password_port);
    bootstrap.auth = BrokerAuth::Password {
        username: "pw-device".into(),
        password: "s3cret".into(),
    };
    let mut slow = settings(&bootstrap);
    slow.reconnect_max_ms = 600_000;
    let (handle, driver, mut inbox) = transport::transport(slow);
    tokio::spawn(driver.run());
    wait_link(&mut inbox, |l| l == Link::Up { connects: 1 }).await;

    handle.switch_credentials("pw-device".into(), "s3cret".into());
    wait_link(&mut inbox, |l| l == Link::Up { connects: 2 }).await;
    handle.switch_credentials("pw-device".into(), "not-the-password".into());
    wait_link(&mut inbox, |l| l == Link::CredentialsRefused).await;
    handle.switch_credentials("pw-device".into(), "s3cret".into());
    wait_link(&mut inbox, |l| l == Link::Up { connects: 3 }).await;
    drop(broker);
}

#[tokio::test(flavor = "current_thread")]
async fn garbage_forged_replayed_wrong_device_and_invalid_states_are_rejected() {
    let pki = Pki::new();
    let broker = Mosquitto::start(&pki);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut controller =
        Controller::connect(&pki, broker.mtls_port, &["coracle/v1/+/events"]).await;
    let bootstrap = bootstrap_mtls(&pki, &broker, samples::device().as_str(), &key);
    let (handle, mut inbox) = start(&bootstrap);
    wait_link(&mut inbox, |l| l != Link::Down).await;
    handle.set_replay_floor(Generation(50));

    let good = samples::desired_with_services(2); // generation 42 < floor 50
    let mut other_device = good.clone();
    other_device.device = "other-device".parse().unwrap();
    other_device.generation = Generation(60);
    let mut invalid = good.clone();
    invalid.generation = Generation(61);
    invalid.services[0].resources.cpu_millicores = Some(0);
    let mut newer = good.clone();
    newer.generation = Generation(62);
    let forger = SigningKey::from_bytes(&[9; 32]);
    let cases = [
        (b"\x01\xff\xff\xff".to_vec(), RejectReason::Malformed),
        (signed(&newer, &forger), RejectReason::UnknownKey),
        (signed(&other_device, &key), RejectReason::WrongDevice),
        (signed(&good, &key), RejectReason::Replay),
        (signed(&invalid, &key), RejectReason::Invalid),
    ];
    for (body, want) in cases {
        controller
            .publish(topic(TopicKind::Desired), false, body)
            .await;
        let (reason, detail) = next_rejection(&mut controller).await;
        assert_eq!(reason, want, "{detail}");
    }
    assert!(inbox.desired.borrow().is_none(), "nothing was admitted");
    // A good one still gets through afterwards.
    controller
        .publish(topic(TopicKind::Desired), false, signed(&newer, &key))
        .await;
    assert_eq!(next_desired(&mut inbox).await.generation, Generation(62));
}

#[tokio::test(flavor = "current_thread")]
async fn broker_restart_reconnects_resubscribes_and_delivers_offline_events() {
    let pki = Pki::new();
    let mut broker = Mosquitto::start(&pki);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut controller =
        Controller::connect(&pki, broker.mtls_port, &["coracle/v1/+/events"]).await;
    let bootstrap = bootstrap_mtls(&pki, &broker, samples::device().as_str(), &key);
    // A slow first reconnect (1.5-3 s) so the test controller is back first.
    let mut settings = settings(&bootstrap);
    settings.reconnect_min_ms = 3_000;
    settings.reconnect_max_ms = 3_000;
    let (handle, driver, mut inbox) = transport::transport(settings);
    tokio::spawn(driver.run());
    wait_link(&mut inbox, |l| l != Link::Down).await;

    broker.kill();
    wait_link(&mut inbox, |l| l == Link::Down).await;
    let offline_event = samples::events()[0].clone();
    handle.publish_event(offline_event.clone());
    assert_eq!(handle.queued_events().0, 1);
    broker.restart();
    controller.wait_subscribed("coracle/v1/probe/events").await;

    assert_eq!(
        wait_link(&mut inbox, |l| l != Link::Down).await,
        Link::Up { connects: 2 }
    );
    let got: Event = decode(&controller.next_on("/events").await.payload).unwrap();
    assert_eq!(
        got, offline_event,
        "the event made while offline arrives after reconnect"
    );
    tokio::time::timeout(WAIT, async {
        while handle.queued_events().0 > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("offline event acknowledged and dropped from the outbox");

    // Clean session: only a renewed subscription lets this through.
    let state = samples::desired_with_services(1);
    controller
        .publish(topic(TopicKind::Desired), true, signed(&state, &key))
        .await;
    assert_eq!(next_desired(&mut inbox).await, state);
}

#[tokio::test(flavor = "current_thread")]
async fn oversized_packets_and_floods_do_not_wedge_the_agent() {
    let pki = Pki::new();
    let broker = Mosquitto::start(&pki);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut controller =
        Controller::connect(&pki, broker.mtls_port, &["coracle/v1/+/events"]).await;
    let bootstrap = bootstrap_mtls(&pki, &broker, samples::device().as_str(), &key);
    let (_handle, mut inbox) = start(&bootstrap);
    wait_link(&mut inbox, |l| l != Link::Down).await;

    // Above the protocol's body limit but within the packet limit: refused by the codec.
    let big_body = vec![1u8; coracle_proto::codec::MAX_BODY_BYTES + 1];
    controller
        .publish(topic(TopicKind::Cmd), false, big_body)
        .await;
    let (reason, detail) = next_rejection(&mut controller).await;
    assert_eq!(reason, RejectReason::TooLarge, "{detail}");

    // Above the packet limit: rumqttc drops the connection; the agent reports and reconnects.
    let huge = vec![1u8; transport::MAX_PACKET_BYTES + 1024];
    controller.publish(topic(TopicKind::Cmd), false, huge).await;
    // The first rejection may arrive twice: its PUBACK can be lost with the dropped link,
    // and events are at-least-once.
    loop {
        let (reason, detail) = next_rejection(&mut controller).await;
        assert_eq!(reason, RejectReason::TooLarge, "{detail}");
        if detail.contains("MQTT packet") {
            break;
        }
    }
    wait_link(
        &mut inbox,
        |l| matches!(l, Link::Up { connects } if connects >= 2),
    )
    .await;

    // A flood of garbage: rate-limited rejections, and the agent still works afterwards.
    for i in 0..2_000u32 {
        controller
            .client
            .publish(
                topic(TopicKind::Cmd),
                rumqttc::QoS::AtMostOnce,
                false,
                i.to_be_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
    let state = samples::desired_with_services(2);
    controller
        .publish(topic(TopicKind::Desired), true, signed(&state, &key))
        .await;
    assert_eq!(next_desired(&mut inbox).await, state);
    let mut rejections = 0;
    while let Ok(r) = controller.received.try_recv() {
        if r.topic.ends_with("/events") {
            rejections += 1;
        }
    }
    assert!(
        rejections <= 5,
        "{rejections} rejection events for a flood of 2000"
    );
}
