//! Each device pulls with its own token (issue 17 item 3): it reads only the repositories its
//! desired state names, never pushes, never reaches the API, and loses access at `device rm`
//! (an enrolment of the same name again gets a new token; the old one stays dead). The one
//! token all devices shared before is refused unless `[registry] legacy_pull_token` is set.
#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
use coracle_controller::api::deploy::{DeployRequest, DeployResponse};
use coracle_proto::Bootstrap;
use sha2::{Digest as _, Sha256};
use support::{api, push_fixture, Controller};

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// The status of `method path` on the registry with `authorization`.
fn registry_status(controller: &Controller, method: &str, path: &str, authorization: &str) -> u16 {
    let url = format!("http://{}{path}", controller.registry);
    let agent = http();
    let response = match method {
        "HEAD" => agent
            .head(&url)
            .header("Authorization", authorization)
            .call(),
        "GET" => agent
            .get(&url)
            .header("Authorization", authorization)
            .call(),
        _ => agent
            .post(&url)
            .header("Authorization", authorization)
            .send_empty(),
    };
    response.unwrap().status().as_u16()
}

fn bearer(boot: &Bootstrap) -> String {
    format!("Bearer {}", boot.registry_token.as_deref().unwrap())
}

/// The one token all devices' bootstraps carried before each device got its own: derived
/// from the admin token of the time, which an upgraded controller keeps as its pull key.
fn legacy_token(controller: &Controller) -> String {
    let pull_key = std::fs::read_to_string(controller.data_dir().join("pull.key")).unwrap();
    let hash = Sha256::digest(format!("coracle registry pull token\0{pull_key}"));
    format!("Bearer {}", hex::encode(hash))
}

fn deploy(controller: &Controller, device: &str, image: &str) {
    let compose =
        format!("services:\n  web:\n    image: {image}\n    command: [\"/bin/sleep\", \"300\"]\n");
    let _: DeployResponse = api(controller)
        .send(
            "deploy",
            "POST",
            &format!("/devices/{device}/deploy"),
            &DeployRequest {
                compose,
                seccomp_profiles: Default::default(),
                context: Default::default(),
            },
        )
        .unwrap();
}

#[test]
fn each_device_reads_only_its_own_images_with_its_own_token() {
    let controller = Controller::start();
    let hello = push_fixture(&controller, "hello:1");
    let other = push_fixture(&controller, "other:1");
    let a = controller.enrol("pi-a");
    let b = controller.enrol("pi-b");
    let (token_a, token_b) = (bearer(&a), bearer(&b));
    assert_ne!(token_a, token_b);
    assert!(a.registry_token.as_deref().unwrap().starts_with("pi-a:"));
    assert!(!token_a.contains(&controller.admin_token()));
    let manifest = |repo: &str, digest: &str| format!("/v2/{repo}/manifests/{digest}");

    // Nothing deployed yet: the token is valid (ping) but reads nothing.
    assert_eq!(registry_status(&controller, "GET", "/v2/", &token_a), 200);
    assert_eq!(
        registry_status(&controller, "HEAD", &manifest("hello", &hello), &token_a),
        403
    );

    deploy(&controller, "pi-a", "hello:1");
    deploy(&controller, "pi-b", "other:1");
    let status = |token: &str, path: &str| registry_status(&controller, "HEAD", path, token);
    assert_eq!(status(&token_a, &manifest("hello", &hello)), 200);
    assert_eq!(status(&token_a, &manifest("hello", "1")), 200);
    assert_eq!(status(&token_a, &manifest("other", &other)), 403);
    assert_eq!(status(&token_b, &manifest("other", &other)), 200);
    assert_eq!(status(&token_b, &manifest("hello", &hello)), 403);
    assert_eq!(
        registry_status(&controller, "GET", "/v2/_catalog", &token_a),
        403
    );
    assert_eq!(
        registry_status(&controller, "GET", "/v2/hello/tags/list", &token_a),
        200
    );

    // Basic auth as registries' clients send it: the device id as user, the tag as password.
    let (user, tag) = a
        .registry_token
        .as_deref()
        .unwrap()
        .split_once(':')
        .unwrap();
    let basic = |user: &str, tag: &str| {
        let pair = format!("{user}:{tag}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    assert_eq!(status(&basic(user, tag), &manifest("hello", &hello)), 200);
    // Another device's name with this tag proves nothing.
    assert_eq!(status(&basic("pi-b", tag), &manifest("other", &other)), 401);

    // Reads only: no push, no API.
    assert_eq!(
        registry_status(&controller, "POST", "/v2/hello/blobs/uploads/", &token_a),
        401
    );
    let api_status = http()
        .get(format!("http://{}/api/v1/devices", controller.api))
        .header("Authorization", &token_a)
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(api_status, 401, "a pull token must not reach the API");

    // The shared token of older bootstraps is refused by default.
    assert_eq!(
        status(&legacy_token(&controller), &manifest("hello", &hello)),
        401
    );

    // `device rm` revokes; enrolling the name again does not bring the old token back.
    let removed = controller.cli(&["device", "rm", "pi-a"]);
    assert!(removed.status.success(), "{removed:?}");
    assert_eq!(status(&token_a, &manifest("hello", &hello)), 401);
    let again = controller.enrol("pi-a");
    assert_ne!(bearer(&again), token_a);
    assert_eq!(status(&token_a, &manifest("hello", &hello)), 401);
    deploy(&controller, "pi-a", "hello:1");
    assert_eq!(status(&bearer(&again), &manifest("hello", &hello)), 200);
    assert_eq!(status(&token_a, &manifest("hello", &hello)), 401);
}

#[test]
fn the_shared_legacy_token_reads_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let text = Controller::config_text(dir.path(), "", "", "legacy_pull_token = true");
    let controller = Controller::start_with_config(dir, &text);
    let hello = push_fixture(&controller, "hello:1");
    let token = legacy_token(&controller);
    let path = format!("/v2/hello/manifests/{hello}");
    assert_eq!(registry_status(&controller, "HEAD", &path, &token), 200);
    assert_eq!(
        registry_status(&controller, "POST", "/v2/hello/blobs/uploads/", &token),
        401
    );
}
