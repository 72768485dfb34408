//! Restart without losing state: devices, credentials and desired states survive, and the
//! controller republishes every desired state (the embedded broker's retained messages do
//! not survive a restart).
// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use coracle_controller::store::Store;
use coracle_proto::{DesiredState, Generation, Signed, SigningKey};
use rumqttc::{Incoming, QoS};
use support::{connect_device, next_matching, Controller};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_is_republished_after_a_restart() {
    let controller = Controller::start();
    let boot = controller.enrol("pi-r");
    let data = controller.data_dir();
    let store_url = controller.store_url.clone();
    let dir = controller.stop();

    // While the controller is down, a desired state is stored the way a deploy stores it.
    let key_hex = std::fs::read_to_string(data.join("deployment.key")).unwrap();
    let seed: [u8; 32] = hex::decode(key_hex.trim()).unwrap().try_into().unwrap();
    let key = SigningKey::from_bytes(&seed);
    let state = DesiredState {
        registries: Vec::new(),
        device: boot.device.clone(),
        generation: Generation(7),
        services: vec![],
    };
    let signed = Signed::sign(&state, &key);
    Store::open_configured(store_url.as_deref(), &data.join("coracle.db"))
        .unwrap()
        .put_desired(&boot.device, Generation(7), &coracle_proto::encode(&signed))
        .unwrap();

    let controller = Controller::start_in(dir);
    // The device's credentials survived; its retained desired state is there again.
    let (client, mut el) = connect_device(controller.broker_tls, &boot).await.unwrap();
    client
        .subscribe(
            coracle_proto::TopicKind::Desired.for_device(&boot.device),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let body = next_matching(&mut el, |i| match i {
        Incoming::Publish(p) => Some(p.payload.to_vec()),
        _ => None,
    })
    .await
    .unwrap();
    let received: Signed<DesiredState> = coracle_proto::decode(&body).unwrap();
    let pinned = boot.deployment_key().unwrap();
    let opened = received
        .verify(&pinned, &boot.device, Generation(0))
        .unwrap();
    assert_eq!(opened, state);
    let ls = controller.cli(&["device", "ls"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("pi-r"));
}
