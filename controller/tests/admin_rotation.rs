//! `coracle admin rotate` (issue 17 item 5): the new admin token works at once on the API
//! and the registry, the old one is refused, dashboard sessions end, and devices keep
//! pulling — their pull tokens are keyed by the pull key, not the admin token — also after
//! a restart.
#![allow(clippy::unwrap_used)]

mod support;

use coracle_controller::api::deploy::{DeployRequest, DeployResponse};
use support::{api, push_fixture, Controller};

fn status(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = match body {
        Some(body) => agent.run(request.body(body.to_string()).unwrap()),
        None => agent.run(request.body(()).unwrap()),
    };
    response.unwrap().status().as_u16()
}

fn bearer(token: &str) -> String {
    format!("Bearer {}", token.trim())
}

#[test]
fn rotation_replaces_the_admin_token_ends_sessions_and_keeps_devices_pulling() {
    let controller = Controller::start();
    let hello = push_fixture(&controller, "hello:1");
    let boot = controller.enrol("pi-1");
    let compose = "services:\n  web:\n    image: hello:1\n".to_string();
    let _: DeployResponse = api(&controller)
        .send(
            "deploy",
            "POST",
            "/devices/pi-1/deploy",
            &DeployRequest {
                compose,
                seccomp_profiles: Default::default(),
                context: Default::default(),
            },
        )
        .unwrap();
    let device = bearer(boot.registry_token.as_deref().unwrap());
    let manifest = format!("http://{}/v2/hello/manifests/{hello}", controller.registry);
    assert_eq!(
        status("HEAD", &manifest, &[("authorization", &device)], None),
        200
    );

    let old = controller.admin_token();
    let api_url = format!("http://{}", controller.api);
    let login = serde_json::json!({ "token": old }).to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .post(&format!("{api_url}/dashboard/login"))
        .header("content-type", "application/json")
        .send(login.as_str())
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let fleet = format!("{api_url}/api/v1/fleet");
    assert_eq!(status("GET", &fleet, &[("cookie", &cookie)], None), 200);

    let out = controller.cli(&["admin", "rotate"]);
    assert!(out.status.success(), "{out:?}");
    let new = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(new.len(), 64, "{new}");
    assert_ne!(new, old.trim());
    assert_eq!(
        controller.admin_token().trim(),
        new,
        "admin.token holds the new token"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 dashboard sessions ended"));

    // The old token and the session: refused. The new token: everything.
    assert_eq!(
        status("GET", &fleet, &[("authorization", &bearer(&old))], None),
        401
    );
    assert_eq!(status("GET", &fleet, &[("cookie", &cookie)], None), 401);
    assert_eq!(
        status("GET", &fleet, &[("authorization", &bearer(&new))], None),
        200
    );
    let uploads = format!("http://{}/v2/hello/blobs/uploads/", controller.registry);
    assert_eq!(
        status(
            "POST",
            &uploads,
            &[("authorization", &bearer(&old))],
            Some("")
        ),
        401
    );
    assert_eq!(
        status(
            "POST",
            &uploads,
            &[("authorization", &bearer(&new))],
            Some("")
        ),
        202
    );
    // The device pulls on with the token of its bootstrap file.
    assert_eq!(
        status("HEAD", &manifest, &[("authorization", &device)], None),
        200
    );
    let audit = controller.cli(&["audit"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.contains("admin.rotate"), "{audit}");
    assert!(!audit.contains(&new), "the audit log holds the token");

    // After a restart: the new token, and the device's token, still hold.
    let dir = controller.stop();
    let controller = Controller::start_in(dir);
    let fleet = format!("http://{}/api/v1/fleet", controller.api);
    assert_eq!(
        status("GET", &fleet, &[("authorization", &bearer(&new))], None),
        200
    );
    assert_eq!(
        status("GET", &fleet, &[("authorization", &bearer(&old))], None),
        401
    );
    let manifest = format!("http://{}/v2/hello/manifests/{hello}", controller.registry);
    assert_eq!(
        status("HEAD", &manifest, &[("authorization", &device)], None),
        200
    );
}
