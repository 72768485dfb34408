//! Helpers of the upstream-registry tests: a controller with extra config, deploy through
//! the API, `coracle registry login`, reads of the controller's own registry, the device's
//! desired state.
#![allow(dead_code, clippy::unwrap_used)]

use coracle_controller::api::deploy::{DeployRequest, DeployResponse};
use coracle_proto::{decode, Bootstrap, DesiredState, Generation, Signed, TopicKind};
use rumqttc::{Incoming, QoS};

use crate::support::{self, api, connect_device, next_matching, Controller};

pub const USER: &str = "ci";
pub const PASSWORD: &str = "upstream-secret";

/// Starts a controller with `extra` config (`[[registries]]`, `[fleet]`).
pub fn controller_with(extra: &str) -> Controller {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[registry]\nlisten = \"127.0.0.1:0\"\n{extra}",
        support::data_dir(dir.path())
    );
    Controller::start_with_config(dir, &text)
}

pub fn deploy(
    controller: &Controller,
    device: &str,
    image: &str,
) -> anyhow::Result<DeployResponse> {
    let compose =
        format!("services:\n  web:\n    image: {image}\n    command: [\"/bin/sleep\", \"300\"]\n");
    api(controller).send(
        "deploy",
        "POST",
        &format!("/devices/{device}/deploy"),
        &DeployRequest {
            compose,
            seccomp_profiles: Default::default(),
            context: Default::default(),
        },
    )
}

/// `coracle registry login HOST --username USER` with the password on stdin.
pub fn login(controller: &Controller, host: &str, password: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coracle"))
        .args(["registry", "login", host, "--username", USER, "--data-dir"])
        .arg(controller.data_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// `coracle registry logout HOST`; its output.
pub fn logout(controller: &Controller, host: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coracle"))
        .args(["registry", "logout", host, "--data-dir"])
        .arg(controller.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET on the controller's own registry (admin token): status and `Docker-Content-Digest`.
pub fn own_registry(controller: &Controller, path: &str) -> (u16, Option<String>) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let resp = agent
        .get(format!("http://{}/v2/{path}", controller.registry))
        .header(
            "Authorization",
            format!("Bearer {}", controller.admin_token()),
        )
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .call()
        .unwrap();
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (resp.status().as_u16(), digest)
}

/// The device's retained desired state, verified with the deployment key.
pub async fn desired_state(controller: &Controller, boot: &Bootstrap) -> DesiredState {
    let (client, mut el) = connect_device(controller.broker_tls, boot).await.unwrap();
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
    let key = boot.deployment_key().unwrap();
    signed.verify(&key, &boot.device, Generation(0)).unwrap()
}

pub fn busybox() -> String {
    format!(
        "oci-archive:{}",
        support::fixture("busybox-oci.tar").display()
    )
}
