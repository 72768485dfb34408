//! Direct registries (`direct = true`, issue 14 item 4): a deploy pins the image's digest on
//! the LAN registry (Debian's `docker-registry` with htpasswd) without storing anything in the
//! controller's registry, and gives the device a `RegistryAccess` whose credential is sealed
//! to the key the device reported. A device that has not reported its key is refused (400).
//! A rollout seals per device as it sends; a device without a key fails in the rollout.
#![allow(clippy::unwrap_used)]

mod support;
mod upstream;

use coracle_controller::store::{DeviceProgress, DeviceStatus, RolloutRecord};
use coracle_images::oci::Platform;
use coracle_proto::{encode, sealed, Generation, ReportedState, TopicKind, UpdateStatus};
use coracle_tests::registry::{write_htpasswd, RegistryOptions, TestRegistry};
use rumqttc::QoS;
use support::{eventually, Controller};
use upstream::{
    busybox, controller_with, deploy, desired_state, login, own_registry, PASSWORD, USER,
};

const DEVICE_SECRET: [u8; 32] = [0x24; 32];

fn reported(
    device: &coracle_proto::DeviceId,
    platform: &str,
    sealing_key: String,
) -> ReportedState {
    ReportedState {
        device: device.clone(),
        applied: Generation(0),
        update: UpdateStatus::Idle,
        services: Vec::new(),
        layers: Vec::new(),
        conditions: Vec::new(),
        agent_version: "test".into(),
        platform: platform.into(),
        sealing_key,
        credentials: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_registry_image_is_pinned_with_its_host_and_a_sealed_credential() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd, USER, PASSWORD).unwrap();
    let lan = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(htpasswd),
        ..RegistryOptions::default()
    })
    .unwrap();
    let creds = format!("{USER}:{PASSWORD}");
    let digest = lan
        .push_with(&busybox(), "floor/app:1", &["--dest-creds", &creds])
        .unwrap();
    let host = format!("127.0.0.1:{}", lan.port);
    let controller: Controller = controller_with(&format!(
        "[[registries]]\nhost = \"{host}\"\ninsecure = true\ndirect = true\n"
    ));
    login(&controller, &host, PASSWORD);
    let boot = controller.enrol("pi-floor");
    let device = boot.device.to_string();
    let image = format!("{host}/floor/app:1");

    // No sealing key reported yet: refused, naming the device.
    let err = deploy(&controller, &device, &image).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("device pi-floor has not reported its sealing key yet"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");

    // The device reports its key, and a platform the image does not offer: the platform
    // is read from the LAN registry and the deploy refused, naming both.
    let (client, mut el) = support::connect_device(controller.broker_tls, &boot)
        .await
        .unwrap();
    let poller = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let public = hex::encode(sealed::public_key(&DEVICE_SECRET));
    let report = |platform: &str| {
        let client = client.clone();
        let body = encode(&reported(&boot.device, platform, public.clone()));
        let topic = TopicKind::Reported.for_device(&boot.device);
        async move {
            client
                .publish(
                    topic,
                    QoS::AtLeastOnce,
                    TopicKind::Reported.retained(),
                    body,
                )
                .await
                .unwrap();
        }
    };
    report("linux/s390x").await;
    let refused = eventually("the s390x report to be stored", || {
        let text = format!("{:#}", deploy(&controller, &device, &image).err()?);
        text.contains("device pi-floor is linux/s390x")
            .then_some(text)
    })
    .await;
    let own = Platform::this_build().to_string();
    assert!(refused.contains(&format!("has {own} only")), "{refused}");

    // On the image's platform the deploy goes through.
    report(&own).await;
    let answer = eventually("the reported platform to be stored", || {
        deploy(&controller, &device, &image).ok()
    })
    .await;
    assert_eq!(answer.generation, Generation(1));
    poller.abort();

    let state = desired_state(&controller, &boot).await;
    let pinned = &state.services[0].image;
    assert_eq!(pinned.registry, host);
    assert_eq!(pinned.repository, "floor/app");
    assert_eq!(pinned.digest.to_string(), digest);
    assert_eq!(state.registries.len(), 1);
    let access = &state.registries[0];
    assert_eq!(access.host, host);
    assert_eq!(access.url, lan.base_url());
    let boxed = access.sealed_credentials.as_ref().unwrap();
    assert!(!boxed
        .ciphertext
        .windows(PASSWORD.len())
        .any(|w| w == PASSWORD.as_bytes()));
    let opened = sealed::open(&DEVICE_SECRET, &boot.device, boxed).unwrap();
    assert_eq!(opened, creds.as_bytes());
    assert!(sealed::open(&[0x25; 32], &boot.device, boxed).is_err());

    // Nothing of it was mirrored into the controller's registry.
    let mirror_repo = format!("mirror/127.0.0.1-{}/floor/app", lan.port);
    let (status, _) = own_registry(&controller, &format!("{mirror_repo}/manifests/{digest}"));
    assert_eq!(status, 404);
    let (status, _) = own_registry(&controller, &format!("{mirror_repo}/manifests/1"));
    assert_eq!(status, 404);

    // A rollout seals the credential for each device as it sends: pi-floor gets its own
    // box; pi-floor-2, which never reported a key, fails with that reason (not the rollout).
    let other = controller.enrol("pi-floor-2");
    let request = coracle_controller::api::rollouts::CreateRolloutRequest {
        compose: format!("services:\n  web:\n    image: {image}\n"),
        selector: serde_json::json!([device, other.device.to_string()]),
        waves: "100%".into(),
        max_failures: 1.into(),
        health_window_s: 60,
        apply_timeout_s: None,
        app: None,
        rollback_on_failure: false,
        seccomp_profiles: Default::default(),
        context: Default::default(),
    };
    let api = support::api(&controller);
    let created: RolloutRecord = api
        .send("create rollout", "POST", "/rollouts", &request)
        .unwrap();
    let path = format!("/rollouts/{}", created.id);
    let record = eventually("both devices to be sent to", || {
        let record: RolloutRecord = api.get("show rollout", &path).ok()?;
        let sent = |d: &DeviceProgress| d.generation.is_some() || d.status == DeviceStatus::Failed;
        record.devices.iter().all(sent).then_some(record)
    })
    .await;
    let row =
        |id: &coracle_proto::DeviceId| record.devices.iter().find(|d| d.device == *id).unwrap();
    assert_eq!(row(&boot.device).generation, Some(2), "{record:?}");
    let refused = row(&other.device);
    assert_eq!(refused.status, DeviceStatus::Failed, "{record:?}");
    let reason = refused.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("device pi-floor-2 has not reported its sealing key yet"),
        "{reason}"
    );
    let state = desired_state(&controller, &boot).await;
    assert_eq!(state.generation, Generation(2));
    let boxed = state.registries[0].sealed_credentials.as_ref().unwrap();
    assert_eq!(
        sealed::open(&DEVICE_SECRET, &boot.device, boxed).unwrap(),
        creds.as_bytes()
    );
}
