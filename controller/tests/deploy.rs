//! Deploying an app to a device: tags pinned to the registry's digests, a signed desired state
//! with the next generation delivered retained to the device over the real broker, and clear
//! 400s for bad apps.
#![allow(clippy::unwrap_used)]

mod support;

use coracle_controller::api::deploy::{DeployRequest, DeployResponse};
use coracle_proto::{decode, DesiredState, Generation, SeccompPolicy, Signed, TopicKind};
use rumqttc::{Incoming, QoS};
use support::{api, connect_device, next_matching, push_fixture, Controller};

const APP: &str = "services:\n  web:\n    image: hello:1\n    command: [\"/bin/sleep\", \"300\"]\n    mem_limit: 32m\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_pins_signs_and_delivers_the_next_generation() {
    let controller = Controller::start();
    let digest = push_fixture(&controller, "hello:1");
    let boot = controller.enrol("pi-deploy");
    let key = boot.deployment_key().unwrap();

    let (client, mut el) = connect_device(controller.broker_tls, &boot).await.unwrap();
    client
        .subscribe(
            TopicKind::Desired.for_device(&boot.device),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();

    let api = api(&controller);
    let path = format!("/devices/{}/deploy", boot.device);
    for expected in [1, 2] {
        let answer: DeployResponse = api
            .send(
                "deploy",
                "POST",
                &path,
                &DeployRequest {
                    compose: APP.into(),
                    seccomp_profiles: Default::default(),
                    context: Default::default(),
                },
            )
            .unwrap();
        assert_eq!(answer.generation, Generation(expected));
        let body = next_matching(&mut el, |i| match i {
            Incoming::Publish(p) if p.topic.ends_with("/desired") => Some(p.payload.to_vec()),
            _ => None,
        })
        .await
        .unwrap();
        let signed: Signed<DesiredState> = decode(&body).unwrap();
        let state = signed.verify(&key, &boot.device, Generation(0)).unwrap();
        assert_eq!(state.generation, Generation(expected));
        assert_eq!(state.services.len(), 1);
        assert_eq!(
            state.services[0].image.to_string(),
            format!("hello@{digest}")
        );
        assert_eq!(state.services[0].resources.memory_max_bytes, Some(32 << 20));
    }
}

#[test]
fn bad_apps_are_refused_with_what_was_wrong() {
    // Docker Hub, where short names the registry lacks are looked for, is a closed loopback
    // port here: the test reaches no network.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[registry]\nlisten = \"127.0.0.1:0\"\n[[registries]]\nhost = \"docker.io\"\nurl = \"http://{closed}\"\ninsecure = true\n",
        support::data_dir(dir.path())
    );
    let controller = Controller::start_with_config(dir, &text);
    push_fixture(&controller, "hello:1");
    let boot = controller.enrol("pi-bad");
    let api = api(&controller);
    let path = format!("/devices/{}/deploy", boot.device);
    let closed_app = format!("services:\n  web:\n    image: {closed}/web:1\n");
    let closed_host = format!("registry {closed}");
    let cases = [
        (
            "services:\n  web:\n    image: nosuch:9\n",
            "nosuch:9 is not in the controller's registry",
        ),
        (
            "services:\n  web:\n    image: hello:1\n    mem_limit: lots\n",
            "mem_limit",
        ),
        (
            "services:\n  web:\n    image: nosuch:9\n",
            "docker.io/library/nosuch:9",
        ),
        (closed_app.as_str(), closed_host.as_str()),
        ("services: [", "line"),
        (
            "services:\n  web:\n    image: hello:1\n    depends_on: [db]\n",
            "db",
        ),
    ];
    for (app, wanted) in cases {
        let err = api
            .send::<_, DeployResponse>(
                "deploy",
                "POST",
                &path,
                &DeployRequest {
                    compose: app.into(),
                    seccomp_profiles: Default::default(),
                    context: Default::default(),
                },
            )
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(wanted), "{app:?}: {text}");
    }
    let missing = api
        .send::<_, DeployResponse>(
            "deploy",
            "POST",
            "/devices/no-such-device/deploy",
            &DeployRequest {
                compose: APP.into(),
                seccomp_profiles: Default::default(),
                context: Default::default(),
            },
        )
        .unwrap_err();
    assert!(
        format!("{missing:#}").contains("no-such-device"),
        "{missing:#}"
    );
}

/// What a device could not run (issue 15: `cap_add: [NOT_A_CAP]` was accepted, and the
/// agent removed the old service before failing to create the new one) is refused by
/// `coracle deploy` itself, naming service, field and value; nothing is stored or sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_the_device_could_not_run_is_refused_and_nothing_is_stored_or_sent() {
    let controller = Controller::start();
    push_fixture(&controller, "hello:1");
    let boot = controller.enrol("pi-invalid");
    let key = boot.deployment_key().unwrap();
    let (client, mut el) = connect_device(controller.broker_tls, &boot).await.unwrap();
    client
        .subscribe(
            TopicKind::Desired.for_device(&boot.device),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let web = "services:\n  web:\n    image: hello:1\n    command: [\"/bin/sleep\", \"300\"]\n";
    let cases = [
        (
            "    cap_add: [NOT_A_CAP]\n",
            "service web: cap_add: unknown capability \"NOT_A_CAP\"",
        ),
        (
            "    user: \"root:wheel:x\"\n",
            "service web: user: \"root:wheel:x\"",
        ),
        (
            "    volumes: [\"data:/srv/../etc\"]\n",
            "service web: volumes: \"/srv/../etc\"",
        ),
        ("    mem_limit: 100k\n", "service web: mem_limit"),
    ];
    for (i, (extra, wanted)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.yml"));
        std::fs::write(&path, format!("{web}{extra}")).unwrap();
        let out = controller.cli(&["deploy", path.to_str().unwrap(), "--device", "pi-invalid"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}: deployed anyway");
        assert!(stderr.contains(wanted), "{extra}: {stderr}");
    }
    let shown = controller.cli(&["device", "show", "pi-invalid"]);
    let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert!(
        detail["device"]["desired_generation"].is_null(),
        "a refused app was stored: {detail}"
    );
    // Nothing was published: the first desired state the device gets is the valid app's,
    // as generation 1.
    let good = dir.path().join("good.yml");
    std::fs::write(&good, web).unwrap();
    let out = controller.cli(&["deploy", good.to_str().unwrap(), "--device", "pi-invalid"]);
    assert!(out.status.success(), "{out:?}");
    let body = next_matching(&mut el, |i| match i {
        Incoming::Publish(p) if p.topic.ends_with("/desired") => Some(p.payload.to_vec()),
        _ => None,
    })
    .await
    .unwrap();
    let signed: Signed<DesiredState> = decode(&body).unwrap();
    let state = signed.verify(&key, &boot.device, Generation(0)).unwrap();
    assert_eq!(state.generation, Generation(1));
}

/// Publishes a reported state saying the device runs `platform` and waits until the
/// controller has stored it.
async fn report_platform(
    controller: &Controller,
    client: &rumqttc::AsyncClient,
    device: &coracle_proto::DeviceId,
    platform: &str,
) {
    let mut report = coracle_proto::samples::reported_state(0);
    report.device = device.clone();
    report.applied = Generation(0);
    report.platform = platform.into();
    client
        .publish(
            TopicKind::Reported.for_device(device),
            QoS::AtLeastOnce,
            true,
            coracle_proto::encode(&report),
        )
        .await
        .unwrap();
    let api = api(controller);
    support::eventually("the reported platform to be stored", || {
        let detail: serde_json::Value = api.get("device", &format!("/devices/{device}")).ok()?;
        (detail["reported"]["platform"] == platform).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_the_devices_platform_is_refused_naming_both() {
    let controller = Controller::start();
    let digest = push_fixture(&controller, "hello:1");
    let boot = controller.enrol("pi-arm");
    let (client, mut el) = connect_device(controller.broker_tls, &boot).await.unwrap();
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let api = api(&controller);
    let deploy = |compose: &str| {
        api.send::<_, DeployResponse>(
            "deploy",
            "POST",
            &format!("/devices/{}/deploy", boot.device),
            &DeployRequest {
                compose: compose.into(),
                seccomp_profiles: Default::default(),
                context: Default::default(),
            },
        )
    };
    // The fixture is an amd64 image: a 32-bit ARM board cannot run it.
    report_platform(&controller, &client, &boot.device, "linux/arm/v7").await;
    let err = format!("{:#}", deploy(APP).unwrap_err());
    assert!(
        err.contains(&format!(
            "image hello@{digest} has linux/amd64 only; device pi-arm is linux/arm/v7"
        )),
        "{err}"
    );
    let rollout = serde_json::json!({
        "compose": APP, "selector": {"devices": ["pi-arm"]}, "waves": "100%",
        "max_failures": 0, "health_window_s": 5, "rollback_on_failure": true,
    });
    let err = api
        .send::<_, serde_json::Value>("rollout", "POST", "/rollouts", &rollout)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("device pi-arm is linux/arm/v7"),
        "{err:#}"
    );

    // The same device on amd64 takes it.
    report_platform(&controller, &client, &boot.device, "linux/amd64").await;
    let answer = deploy(APP).unwrap();
    assert_eq!(answer.generation, Generation(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coracle_deploy_ships_the_seccomp_profile_beside_the_app_and_refuses_a_bad_one() {
    let controller = Controller::start();
    push_fixture(&controller, "hello:1");
    let boot = controller.enrol("pi-seccomp");
    let key = boot.deployment_key().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    let app = dir.path().join("app.yml");
    std::fs::write(
        &app,
        "services:\n  web:\n    image: hello:1\n    security_opt:\n      - seccomp=profiles/web.json\n  db:\n    image: hello:1\n    security_opt: [seccomp=unconfined]\n",
    )
    .unwrap();
    let profile = dir.path().join("profiles/web.json");
    let deploy = || {
        controller.cli(&[
            "deploy",
            app.to_str().unwrap(),
            "--device",
            boot.device.as_str(),
        ])
    };

    // A typo in the profile: refused at deploy, naming the file, the field and the value.
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "wirte"], "action": "SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let out = deploy();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("security_opt")
            && stderr.contains("\"profiles/web.json\"")
            && stderr.contains("syscalls[0].names[1]: unknown syscall \"wirte\""),
        "{stderr}"
    );
    // A missing file: the CLI says which one it looked for.
    std::fs::remove_file(&profile).unwrap();
    let out = deploy();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("read seccomp profile"), "{stderr}");

    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let out = deploy();
    assert!(out.status.success(), "{out:?}");
    let (client, mut el) = connect_device(controller.broker_tls, &boot).await.unwrap();
    client
        .subscribe(
            TopicKind::Desired.for_device(&boot.device),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let body = next_matching(&mut el, |i| match i {
        Incoming::Publish(p) if p.topic.ends_with("/desired") => Some(p.payload.to_vec()),
        _ => None,
    })
    .await
    .unwrap();
    let signed: Signed<DesiredState> = decode(&body).unwrap();
    let state = signed.verify(&key, &boot.device, Generation(0)).unwrap();
    let policy = |name: &str| {
        state
            .services
            .iter()
            .find(|s| s.name.as_str() == name)
            .unwrap()
            .seccomp
            .clone()
    };
    match policy("web") {
        SeccompPolicy::Profile(p) => assert_eq!(p.rules[0].names, ["read", "write", "exit_group"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(policy("db"), SeccompPolicy::Unconfined);
}
