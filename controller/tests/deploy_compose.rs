//! Issue 16 item 2: `coracle deploy` reads an app as `docker compose` would — variables from
//! the process environment over `.env` (or `--env-file`), `env_file:`, `x-*` fields and merge
//! keys, profiles, resources — and the signed desired state the device receives says so. A
//! raw API client's `${…}` is refused, naming the key.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use coracle_controller::api::deploy::{DeployRequest, DeployResponse};
use coracle_proto::{
    decode, DesiredState, DeviceId, Generation, ServiceSpec, Signed, TopicKind, Tuning,
    VerifyingKey,
};
use rumqttc::{EventLoop, Incoming, QoS};
use support::{api, connect_device, next_matching, push_fixture, Controller};

const APP: &str = "\
x-base: &base
  image: hello:${TAG:?set TAG in .env}
  restart: unless-stopped
services:
  web:
    <<: *base
    command: [\"/bin/sh\", \"-c\", \"echo $$PORT\"]
    env_file:
      - web.env
      - path: missing.env
        required: false
    environment:
      GREETING: ${GREETING:-hello}
      SECRET: ${SECRET}
    cpus: \"0.5\"
    labels:
      com.example.role: web
    x-note: ignored
    deploy:
      resources:
        limits:
          memory: 32M
          pids: 40
    sysctls:
      kernel.shmmni: ${SHMMNI:-512}
    ulimits:
      nofile: {soft: 1024, hard: 2048}
    oom_score_adj: -100
    hostname: web-1
  debug:
    <<: *base
    command: [\"/bin/sleep\", \"300\"]
    profiles: [debug]
";

fn deploy(controller: &Controller, app: &Path, device: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coracle"))
        .arg("deploy")
        .arg(app)
        .args(["--device", device])
        .args(extra)
        .arg("--data-dir")
        .arg(controller.data_dir())
        .env("RUST_LOG", "warn")
        .env("SECRET", "from-process")
        .env_remove("COMPOSE_PROFILES")
        .env_remove("GREETING")
        .env_remove("TAG")
        .output()
        .unwrap()
}

/// The next desired state the device receives, verified.
async fn next_state(el: &mut EventLoop, key: &VerifyingKey, device: &DeviceId) -> DesiredState {
    let body = next_matching(el, |i| match i {
        Incoming::Publish(p) if p.topic.ends_with("/desired") => Some(p.payload.to_vec()),
        _ => None,
    })
    .await
    .unwrap();
    let signed: Signed<DesiredState> = decode(&body).unwrap();
    signed.verify(key, device, Generation(0)).unwrap()
}

fn env_of<'a>(spec: &'a ServiceSpec, key: &str) -> Option<&'a str> {
    spec.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coracle_deploy_interpolates_and_merges_the_app_as_docker_compose_does() {
    let controller = Controller::start();
    let digest = push_fixture(&controller, "hello:1");
    let boot = controller.enrol("pi-compose");
    let key = boot.deployment_key().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.yml");
    std::fs::write(&app, APP).unwrap();
    std::fs::write(dir.path().join(".env"), "TAG=1\nSECRET=from-dotenv\n").unwrap();
    std::fs::write(
        dir.path().join("web.env"),
        "# web settings\nexport MODE=prod # production\nLEVEL=\"a\\nb\"\nGREETING=from-env-file\n",
    )
    .unwrap();
    let (client, mut el) = connect_device(controller.broker_tls, &boot).await.unwrap();
    client
        .subscribe(
            TopicKind::Desired.for_device(&boot.device),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let out = deploy(&controller, &app, boot.device.as_str(), &[]);
    assert!(out.status.success(), "{out:?}");
    let state = next_state(&mut el, &key, &boot.device).await;
    assert_eq!(state.services.len(), 1, "the debug profile is not active");
    let web = &state.services[0];
    assert_eq!(web.image.to_string(), format!("hello@{digest}"));
    assert_eq!(web.command, ["/bin/sh", "-c", "echo $PORT"]);
    assert_eq!(env_of(web, "SECRET"), Some("from-process"));
    assert_eq!(
        env_of(web, "GREETING"),
        Some("hello"),
        "environment wins over env_file"
    );
    assert_eq!(env_of(web, "MODE"), Some("prod"));
    assert_eq!(env_of(web, "LEVEL"), Some("a\nb"));
    assert_eq!(web.resources.cpu_millicores, Some(500));
    assert_eq!(web.resources.memory_max_bytes, Some(32 << 20));
    assert_eq!(web.resources.pids_max, Some(40));
    assert_eq!(
        web.tuning,
        [
            Tuning::Sysctl {
                name: "kernel.shmmni".into(),
                value: "512".into()
            },
            Tuning::Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            },
            Tuning::OomScoreAdj(-100),
            Tuning::Hostname("web-1".into()),
            // No network_mode: the app's default network, as in Compose.
            Tuning::Network(coracle_proto::network::NetworkAttachment {
                name: "default".into(),
                aliases: Vec::new(),
                internal: false,
            }),
        ]
    );

    let out = deploy(
        &controller,
        &app,
        boot.device.as_str(),
        &["--profile", "debug"],
    );
    assert!(out.status.success(), "{out:?}");
    let state = next_state(&mut el, &key, &boot.device).await;
    let names: Vec<&str> = state.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["debug", "web"]);

    // --env-file replaces .env: without TAG the required variable fails, naming file and line.
    std::fs::write(dir.path().join("other.env"), "SECRET=x\n").unwrap();
    let other = dir.path().join("other.env");
    let out = deploy(
        &controller,
        &app,
        boot.device.as_str(),
        &["--env-file", other.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("app.yml:2: ")
            && stderr.contains("required variable TAG")
            && stderr.contains("set TAG in .env"),
        "{stderr}"
    );

    // A sysctl that is not namespaced would change the device: refused, naming it.
    let host_wide = dir.path().join("host-wide.yml");
    std::fs::write(
        &host_wide,
        "services:\n  web:\n    image: hello:1\n    sysctls:\n      kernel.panic: \"1\"\n",
    )
    .unwrap();
    let out = deploy(&controller, &host_wide, boot.device.as_str(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("sysctls")
            && stderr.contains("kernel.panic")
            && stderr.contains("not namespaced"),
        "{stderr}"
    );

    // A raw API client's `${…}` is refused, naming the key; nothing is stored.
    let err = api(&controller)
        .send::<_, DeployResponse>(
            "deploy",
            "POST",
            &format!("/devices/{}/deploy", boot.device),
            &DeployRequest {
                compose:
                    "services:\n  web:\n    image: hello:1\n    environment:\n      PW: ${PW}\n"
                        .into(),
                seccomp_profiles: Default::default(),
                context: Default::default(),
            },
        )
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("400")
            && text.contains("services.web.environment.PW")
            && text.contains("line 5"),
        "{text}"
    );
}
