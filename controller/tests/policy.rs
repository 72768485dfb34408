//! The deploy policy through the real API and CLI (issue 16 item 4): by default a deploy or
//! rollout asking for the host's root, `SYS_ADMIN`, a host device or the host's network is a
//! 403 `policy_refused` naming the device, service, key, value and rule, and nothing is
//! stored; `[[policy.allow]]` for a tag grants them to that tag's devices only.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{push_fixture, Controller};

const WEB: &str = "services:\n  web:\n    image: hello:1\n    command: [\"/bin/sleep\", \"300\"]\n";

/// `POST /api/v1{path}` with the admin token: status and the JSON body.
fn post(controller: &Controller, path: &str, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{}/api/v1{path}", controller.api);
    let mut response = agent
        .post(&url)
        .header(
            "Authorization",
            &format!("Bearer {}", controller.admin_token().trim()),
        )
        .send_json(body)
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn deploy(controller: &Controller, device: &str, compose: &str) -> (u16, Value) {
    post(
        controller,
        &format!("/devices/{device}/deploy"),
        &json!({ "compose": compose }),
    )
}

fn rollout(controller: &Controller, selector: Value, compose: &str) -> (u16, Value) {
    post(
        controller,
        "/rollouts",
        &json!({ "compose": compose, "selector": selector, "waves": "100%" }),
    )
}

fn tag(controller: &Controller, device: &str, tag: &str) {
    let out = controller.cli(&["device", "tag", device, tag]);
    assert!(out.status.success(), "{out:?}");
}

fn desired_generation(controller: &Controller, device: &str) -> Value {
    let shown = controller.cli(&["device", "show", device]);
    let detail: Value = serde_json::from_slice(&shown.stdout).unwrap();
    detail["device"]["desired_generation"].clone()
}

#[test]
fn default_policy_refuses_host_access_with_403_on_deploy_and_rollout() {
    let controller = Controller::start();
    push_fixture(&controller, "hello:1");
    controller.enrol("pi-1");
    let cases = [
        (
            "    volumes: [\"/:/host\"]\n",
            "the deploy policy refuses the app for device pi-1: service \"web\": volumes \
             \"/:/host\": host path \"/\" is not under any policy.bind_paths entry",
        ),
        (
            "    cap_add: [SYS_ADMIN]\n",
            "service \"web\": cap_add \"SYS_ADMIN\": CAP_SYS_ADMIN is not in Docker's default \
             set nor in policy.capabilities",
        ),
        (
            "    cap_add: [SYS_MODULE]\n",
            "CAP_SYS_MODULE is not in Docker's default set",
        ),
        ("    cap_add: [ALL]\n", "needs policy.privileged = true"),
        (
            "    privileged: true\n",
            "service \"web\": privileged \"true\": a privileged container has every \
             capability and host device: needs policy.privileged = true",
        ),
        (
            "    network_mode: host\n",
            "needs policy.host_network = true",
        ),
        (
            "    devices: [\"/dev/kmsg:/dev/kmsg:r\"]\n",
            "host device \"/dev/kmsg\" is not under any policy.devices entry",
        ),
        (
            "    volumes:\n      - type: bind\n        source: /\n        target: /host\n",
            "service \"web\": volumes \"/:/host\": host path \"/\" is not under any policy.bind_paths entry",
        ),
        (
            "    ports: [\"80:8080\"]\n",
            "service \"web\": ports \"80:8080/tcp\": host port 80 is privileged (below 1024): \
             needs it in policy.host_ports",
        ),
    ];
    for (extra, wanted) in cases {
        let app = format!("{WEB}{extra}");
        for (what, (status, body)) in [
            ("deploy", deploy(&controller, "pi-1", &app)),
            ("rollout", rollout(&controller, json!(["pi-1"]), &app)),
        ] {
            assert_eq!(status, 403, "{what} {extra}: {body}");
            assert_eq!(body["error"]["code"], "policy_refused", "{what}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(wanted), "{what} {extra}: {message}");
        }
    }
    assert!(desired_generation(&controller, "pi-1").is_null());
    let rollouts: Value = support::api(&controller)
        .get("rollouts", "/rollouts")
        .unwrap();
    assert_eq!(rollouts.as_array().map(Vec::len), Some(0), "{rollouts}");

    // The CLI prints the refusal and fails.
    let file = controller.dir.path().join("root.yml");
    std::fs::write(&file, format!("{WEB}    volumes: [\"/:/host\"]\n")).unwrap();
    let out = controller.cli(&["deploy", file.to_str().unwrap(), "--device", "pi-1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "deployed anyway: {stderr}");
    assert!(
        stderr.contains("host path \"/\" is not under any policy.bind_paths entry")
            && stderr.contains("403"),
        "{stderr}"
    );

    // An ordinary app still deploys.
    let (status, body) = deploy(
        &controller,
        "pi-1",
        &format!("{WEB}    volumes: [\"data:/data\"]\n"),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn configured_policy_allows_host_access_for_its_tag_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = Controller::config_text(dir.path(), "", "", "");
    text.push_str(
        "[policy]\nread_only_bind_paths = [\"/etc/ssl\"]\nhost_ports = [80]\n\
         [[policy.allow]]\ntag = \"site=lab\"\nbind_paths = [\"/\"]\n\
         capabilities = [\"SYS_ADMIN\", \"SYS_MODULE\"]\nhost_network = true\n\
         devices = [\"/dev/kmsg\"]\nprivileged = true\n",
    );
    let controller = Controller::start_with_config(dir, &text);
    push_fixture(&controller, "hello:1");
    controller.enrol("lab-1");
    controller.enrol("field-1");
    tag(&controller, "lab-1", "site=lab");
    tag(&controller, "field-1", "site=field");
    let wide = format!(
        "{WEB}    volumes: [\"/:/host\", \"/etc/ssl:/ssl:ro\"]\n    cap_add: [SYS_ADMIN, SYS_MODULE]\n    network_mode: host\n    devices: [\"/dev/kmsg:/dev/kmsg:r\"]\n    privileged: true\n"
    );
    let (status, body) = deploy(&controller, "lab-1", &wide);
    assert_eq!(status, 200, "{body}");
    let (status, body) = deploy(&controller, "field-1", &wide);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("device field-1: service \"web\": volumes \"/:/host\""),
        "{body}"
    );
    // The base policy's read-only path and port hold for every device, read-only only.
    let ssl = format!("{WEB}    volumes: [\"/etc/ssl:/ssl:ro\"]\n    ports: [\"80:8080\"]\n");
    assert_eq!(deploy(&controller, "field-1", &ssl).0, 200);
    let (status, body) = deploy(
        &controller,
        "field-1",
        &format!("{WEB}    volumes: [\"/etc/ssl:/ssl\"]\n"),
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = deploy(
        &controller,
        "field-1",
        &format!("{WEB}    ports: [\"443:8443\"]\n"),
    );
    assert_eq!(status, 403, "{body}");

    // A rollout is judged for every selected device before any is sent to.
    let (status, body) = rollout(&controller, json!(["lab-1", "field-1"]), &wide);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("field-1"),
        "{body}"
    );
    let (status, body) = rollout(&controller, json!("site=lab"), &wide);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn an_invalid_policy_stops_the_controller_at_start_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = Controller::config_text(dir.path(), "", "", "");
    text.push_str("[policy]\ncapabilities = [\"FLY\"]\n");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coracle"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("policy.capabilities: \"FLY\" is not a Linux capability"),
        "{stderr}"
    );
}

/// Issue 16: a named volume `x/../../../../tmp/escape` made a host directory outside the
/// volumes folder. Such names are refused at deploy (400, naming service and field), before
/// the policy is asked; the agent refuses them again where a name becomes a path.
#[test]
fn volume_names_that_are_not_one_plain_name_are_refused_at_deploy() {
    let controller = Controller::start();
    push_fixture(&controller, "hello:1");
    controller.enrol("pi-1");
    for (source, wanted) in [
        ("x/../../../../tmp/escape", "is not a volume name"),
        ("a/b", "is not a volume name"),
        ("..", "relative host paths are not supported"),
        (".hidden", "relative host paths are not supported"),
    ] {
        let app = format!("{WEB}    volumes: [\"{source}:/data\"]\n");
        let (status, body) = deploy(&controller, "pi-1", &app);
        assert_eq!(status, 400, "{source}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("web") && message.contains("volumes") && message.contains(wanted),
            "{source}: {message}"
        );
    }
    assert!(desired_generation(&controller, "pi-1").is_null());
}
