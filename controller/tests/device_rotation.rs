//! `coracle device rotate` against the real controller and embedded broker, with a test
//! device on MQTT that holds a sealing key (the happy path with a real agent is
//! `tests/tests/e2e_rotation.rs`): a device without a sealing key is refused; the password
//! arrives sealed to the device's key with its label; a device that answers `Failed` keeps
//! its old password, and the new one is refused by the broker.
#![allow(clippy::unwrap_used)]

mod support;

use coracle_proto::command::ROTATED_PASSWORD_LABEL;
use coracle_proto::{
    decode, encode, sealed, Command, CommandOutcome, CommandReply, CommandRequest, Generation,
    Presence, ReportedState, TopicKind, UpdateStatus,
};
use rumqttc::{Event, Incoming, QoS};
use support::{eventually, Controller};

const SECRET: [u8; 32] = [9; 32];

fn reported(device: &coracle_proto::DeviceId, sealing_key: String) -> ReportedState {
    ReportedState {
        sealing_key,
        device: device.clone(),
        applied: Generation(0),
        update: UpdateStatus::Idle,
        services: Vec::new(),
        layers: Vec::new(),
        conditions: Vec::new(),
        agent_version: "test".into(),
        platform: "linux/arm64".into(),
        credentials: Default::default(),
    }
}

fn cli_error(controller: &Controller, args: &[&str]) -> String {
    let out = controller.cli(args);
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rotation_keeps_the_old_password_and_the_box_opens_only_on_the_device() {
    let controller = Controller::start();
    let boot = controller.enrol("pi-rot");
    let id = boot.device.clone();
    let (client, mut el) = support::connect_device(controller.broker_tls, &boot)
        .await
        .unwrap();
    client
        .subscribe(TopicKind::Cmd.for_device(&id), QoS::AtLeastOnce)
        .await
        .unwrap();
    let publish = |kind: TopicKind, body: Vec<u8>| {
        let (client, topic) = (client.clone(), kind.for_device(&id));
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, kind.retained(), body)
                .await
                .unwrap()
        }
    };
    publish(TopicKind::Online, encode(&Presence::Online)).await;
    publish(TopicKind::Reported, encode(&reported(&id, String::new()))).await;

    // The device opens each box it gets, hands the password to the test, and refuses it.
    let (passwords, mut received) = tokio::sync::mpsc::unbounded_channel();
    let (replier, reply_topic, device) = (
        client.clone(),
        TopicKind::CmdReply.for_device(&id),
        id.clone(),
    );
    let task = tokio::spawn(async move {
        while let Ok(event) = el.poll().await {
            let Event::Incoming(Incoming::Publish(p)) = event else {
                continue;
            };
            let request: CommandRequest = decode(&p.payload).unwrap();
            let Command::RotatePassword { sealed: boxed } = request.command else {
                continue;
            };
            let plain = sealed::open(&SECRET, &device, &boxed).unwrap();
            let password = plain.strip_prefix(ROTATED_PASSWORD_LABEL).unwrap().to_vec();
            passwords
                .send(String::from_utf8(password).unwrap())
                .unwrap();
            let reply = CommandReply {
                id: request.id,
                outcome: CommandOutcome::Failed {
                    reason: "bootstrap file is on a read-only disk".into(),
                },
            };
            replier
                .publish(&reply_topic, QoS::AtLeastOnce, false, encode(&reply))
                .await
                .unwrap();
        }
    });

    eventually("the device online", || {
        let out = controller.cli(&["device", "show", "pi-rot"]);
        String::from_utf8_lossy(&out.stdout)
            .contains(r#""online": true"#)
            .then_some(())
    })
    .await;
    let err = cli_error(&controller, &["device", "rotate", "pi-rot"]);
    assert!(err.contains("has not reported a sealing key"), "{err}");

    let public = hex::encode(sealed::public_key(&SECRET));
    publish(TopicKind::Reported, encode(&reported(&id, public.clone()))).await;
    eventually("the sealing key stored", || {
        let out = controller.cli(&["device", "show", "pi-rot"]);
        String::from_utf8_lossy(&out.stdout)
            .contains(&public)
            .then_some(())
    })
    .await;
    let err = cli_error(&controller, &["device", "rotate", "pi-rot"]);
    assert!(
        err.contains(
            "refused the new password and keeps the old one: bootstrap file is on a read-only disk"
        ),
        "{err}"
    );
    let new = received.recv().await.unwrap();
    assert_eq!(new.len(), 64);

    // The refused password opens nothing; the old one still does.
    let mut options = support::device_options(
        controller.broker_tls,
        &boot.ca_pem,
        "pi-rot",
        "pi-rot",
        &new,
    );
    options.set_keep_alive(std::time::Duration::from_secs(5));
    assert!(
        support::connect(options).await.is_err(),
        "the refused password opens the broker"
    );
    assert!(support::connect_device(controller.broker_tls, &boot)
        .await
        .is_ok());
    let audit = String::from_utf8_lossy(&controller.cli(&["audit"]).stdout).into_owned();
    assert!(!audit.contains("device.rotate"), "{audit}");
    task.abort();
}
