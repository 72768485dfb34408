//! Scoped API tokens and the audit log through the real HTTP API, CLI and registry (issue
//! 17 item 5): `read` only looks, `deploy` also deploys and drives rollouts, `admin` does
//! everything; each refusal is a 403 naming the scope needed; a revoked token is refused; a
//! dashboard session keeps its token's scope and ends with its revocation; `coracle audit`
//! names who did what, registry pushes included.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Output;

use serde_json::Value;
use support::{push_fixture, Controller};

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `method url` with `headers` and a JSON `body` (None: no body): status and body text.
fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, String) {
    let agent = http();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = match body {
        Some(body) => agent.run(
            request
                .header("content-type", "application/json")
                .body(body.to_string())
                .unwrap(),
        ),
        None => agent.run(request.body(()).unwrap()),
    };
    let mut response = response.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_string()
}

struct Api<'a> {
    controller: &'a Controller,
}

impl Api<'_> {
    fn call(&self, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let url = format!("http://{}/api/v1{path}", self.controller.api);
        let auth = format!("Bearer {token}");
        call(method, &url, &[("authorization", &auth)], body)
    }

    fn registry(&self, token: &str, method: &str, path: &str) -> u16 {
        let url = format!("http://{}{path}", self.controller.registry);
        let auth = format!("Bearer {token}");
        let body = (method == "POST").then_some("");
        call(method, &url, &[("authorization", &auth)], body).0
    }
}

fn compose(image: &str) -> String {
    let app =
        format!("services:\n  web:\n    image: {image}\n    command: [\"/bin/sleep\", \"300\"]\n");
    serde_json::json!({ "compose": app }).to_string()
}

#[test]
fn each_scope_reaches_its_endpoints_and_is_refused_the_rest_naming_the_scope() {
    let controller = Controller::start();
    let api = Api {
        controller: &controller,
    };
    push_fixture(&controller, "hello:1");
    controller.enrol("pi-1");
    let create = |scope: &str, name: &str| {
        stdout(&controller.cli(&["token", "create", "--scope", scope, "--name", name]))
    };
    let (read, deploy, admin) = (
        create("read", "viewer"),
        create("deploy", "ci"),
        create("admin", "ops"),
    );
    assert!(read.starts_with("crt_") && read != deploy, "{read}");

    // read: every GET, nothing that changes anything.
    assert_eq!(api.call(&read, "GET", "/devices", None).0, 200);
    assert_eq!(api.call(&read, "GET", "/rollouts", None).0, 200);
    let (status, body) = api.call(
        &read,
        "POST",
        "/devices/pi-1/deploy",
        Some(&compose("hello:1")),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("token:viewer has scope read")
            && body.contains("POST /api/v1/devices/pi-1/deploy needs scope deploy"),
        "{body}"
    );
    let (status, body) = api.call(&read, "GET", "/audit", None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs scope admin"), "{body}");

    // deploy: deploys and rollouts, not devices or tokens.
    let (status, body) = api.call(
        &deploy,
        "POST",
        "/devices/pi-1/deploy",
        Some(&compose("hello:1")),
    );
    assert_eq!(status, 200, "{body}");
    let rollout = serde_json::json!({
        "compose": "services:\n  web:\n    image: hello:1\n",
        "selector": ["pi-1"],
        "waves": "100%",
    });
    let (status, body) = api.call(&deploy, "POST", "/rollouts", Some(&rollout.to_string()));
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    let (status, body) = api.call(
        &deploy,
        "POST",
        &format!("/rollouts/{id}/abort"),
        Some("{}"),
    );
    assert_eq!(status, 200, "{body}");
    let enrol = r#"{"id":"pi-2"}"#;
    let (status, body) = api.call(&deploy, "POST", "/devices", Some(enrol));
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("POST /api/v1/devices needs scope admin"),
        "{body}"
    );
    assert_eq!(api.call(&deploy, "DELETE", "/devices/pi-1", None).0, 403);
    assert_eq!(api.call(&deploy, "GET", "/tokens", None).0, 403);
    let (status, _) = api.call(&deploy, "POST", "/tokens", Some(r#"{"scope":"admin"}"#));
    assert_eq!(status, 403, "a deploy token cannot mint an admin token");

    // admin (a named token): everything.
    assert_eq!(api.call(&admin, "POST", "/devices", Some(enrol)).0, 201);
    let retag = r#"{"set":{"site":"lab"}}"#;
    assert_eq!(
        api.call(&deploy, "PATCH", "/devices/pi-2/tags", Some(retag))
            .0,
        403
    );
    assert_eq!(
        api.call(&admin, "PATCH", "/devices/pi-2/tags", Some(retag))
            .0,
        200
    );
    assert_eq!(api.call(&admin, "DELETE", "/devices/pi-2", None).0, 204);
    assert_eq!(api.call(&admin, "GET", "/tokens", None).0, 200);

    // The registry: read and deploy tokens pull, only admin pushes.
    for token in [&read, &deploy] {
        assert_eq!(api.registry(token, "GET", "/v2/_catalog"), 200);
        assert_eq!(api.registry(token, "HEAD", "/v2/hello/manifests/1"), 200);
        assert_eq!(api.registry(token, "POST", "/v2/hello/blobs/uploads/"), 403);
    }
    assert_eq!(
        api.registry(&admin, "POST", "/v2/hello/blobs/uploads/"),
        202
    );
    let url = format!("http://{}/v2/hello/blobs/uploads/", controller.registry);
    let (_, body) = call(
        "POST",
        &url,
        &[("authorization", &format!("Bearer {read}"))],
        Some(""),
    );
    assert!(
        body.contains("viewer has scope read; pushing and deleting need scope admin"),
        "{body}"
    );

    // Bad input is named; secrets never come back.
    let (status, body) = api.call(&admin, "POST", "/tokens", Some(r#"{"scope":"write"}"#));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(r#"unknown scope \"write\""#), "{body}");
    let (status, body) = api.call(
        &admin,
        "POST",
        "/tokens",
        Some(r#"{"scope":"read","name":"ci"}"#),
    );
    assert_eq!(status, 409, "{body}");
    let listed = stdout(&controller.cli(&["token", "ls"]));
    assert!(
        listed.contains("viewer") && listed.contains("deploy"),
        "{listed}"
    );
    assert!(
        !listed.contains(&read[4..]),
        "token ls shows a secret: {listed}"
    );

    // Revoked: refused at once, on the API and the registry.
    stdout(&controller.cli(&["token", "revoke", "viewer"]));
    assert_eq!(api.call(&read, "GET", "/devices", None).0, 401);
    assert_eq!(api.registry(&read, "GET", "/v2/_catalog"), 401);
    let out = controller.cli(&["token", "revoke", "viewer"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("live API token viewer not found"),
        "{out:?}"
    );

    // The audit log names who did what, newest last.
    let audit = stdout(&controller.cli(&["audit"]));
    let lines: Vec<&str> = audit.lines().collect();
    let find = |actor: &str, action: &str, rest: &str| {
        lines
            .iter()
            .position(|l| l.contains(actor) && l.contains(action) && l.contains(rest))
            .unwrap_or_else(|| panic!("no {actor} {action} {rest} in:\n{audit}"))
    };
    let pushed = find("admin", "registry.push", "hello:1");
    assert!(lines[pushed].contains("digest sha256:"), "{audit}");
    let created = find("admin", "token.create", "scope deploy");
    let deployed = find("token:ci", "deploy", "generation 1: web=hello@sha256:");
    let started = find("token:ci", "rollout.create", &format!("rollout {id}"));
    let aborted = find("token:ci", "rollout.abort", &format!("rollout {id}"));
    let added = find("token:ops", "device.add", "pi-2");
    let tagged = find("token:ops", "device.tag", "set [site=lab]");
    let removed = find("token:ops", "device.rm", "pi-2");
    let revoked = find("admin", "token.revoke", "viewer");
    assert!(pushed < created && created < deployed && deployed < started && started < aborted);
    assert!(aborted < added && added < tagged && tagged < removed && removed < revoked);
    assert!(
        !audit.contains(&deploy[4..]),
        "the audit log holds a secret"
    );
}

#[test]
fn a_dashboard_session_keeps_the_scope_of_the_token_that_logged_in() {
    let controller = Controller::start();
    let read = stdout(&controller.cli(&["token", "create", "--scope", "read", "--name", "kiosk"]));
    let base = format!("http://{}", controller.api);
    let login = serde_json::json!({ "token": read }).to_string();
    let agent = http();
    let response = agent
        .post(&format!("{base}/dashboard/login"))
        .header("content-type", "application/json")
        .send(login.as_str())
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let look = call(
        "GET",
        &format!("{base}/api/v1/fleet"),
        &[("cookie", &cookie)],
        None,
    );
    assert_eq!(look.0, 200, "{}", look.1);
    let marked = [("cookie", cookie.as_str()), ("x-coracle-dashboard", "1")];
    let url = format!("{base}/api/v1/devices");
    let (status, body) = call("POST", &url, &marked, Some(r#"{"id":"pi-9"}"#));
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("dashboard:token:kiosk has scope read") && body.contains("needs scope admin"),
        "{body}"
    );
    // Revoking the token ends the sessions it opened.
    stdout(&controller.cli(&["token", "revoke", "kiosk"]));
    let look = call(
        "GET",
        &format!("{base}/api/v1/fleet"),
        &[("cookie", &cookie)],
        None,
    );
    assert_eq!(look.0, 401, "{}", look.1);
}
