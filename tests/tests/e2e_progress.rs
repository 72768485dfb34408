//! End-to-end, issue 15 item 6: a deploy watched to its end with a real agent. `coracle
//! deploy --wait` exits 0 once the device commits, and 1 with the device's reason when it
//! rolls the version back; meanwhile the agent's pull progress crosses the real broker
//! (read here with the controller's broker account) layer by layer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use coracle_proto::{decode, Generation, PullProgress, TopicKind};
use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::push_hello_versions;
use coracle_tests::e2e::binary;
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::injector::Injector;
use coracle_tests::netns::TestNetwork;

fn app(dir: &Path, tag: &str, command: &str) -> String {
    let compose = format!(
        "services:\n  web:\n    image: hello:{tag}\n    command: {command}\n    healthcheck:\n      \
         test: [\"HTTP\", \"8080\", \"/\"]\n      interval: 1s\n      retries: 3\n"
    );
    let path = dir.join(format!("app-{tag}.yml"));
    std::fs::write(&path, compose).unwrap();
    path.display().to_string()
}

/// `coracle ARGS`: its exit status, stdout and stderr.
fn coracle(controller_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("coracle").unwrap())
        .args(args)
        .arg("--data-dir")
        .arg(controller_dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root"]
fn deploy_wait_follows_a_real_agent_and_its_pull_progress() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    push_hello_versions(&controller, dir.path(), &["1", "2"]).unwrap();
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-p", dir.path()).unwrap();
    let _agent = Agent::start("pi-p", &host, dir.path(), &bootstrap).unwrap();
    let injector = Injector::connect(
        controller.broker,
        "coracle-controller",
        &controller.secret("controller-mqtt.password").unwrap(),
    )
    .unwrap();
    let topic = TopicKind::Progress.for_device(&"pi-p".parse().unwrap());
    injector.subscribe(&topic).unwrap();
    let data_dir = controller.data_dir.clone();

    let serving = r#"["/bin/busybox", "httpd", "-f", "-p", "0.0.0.0:8080", "-h", "/www"]"#;
    let good = app(dir.path(), "1", serving);
    let args = [
        "deploy",
        good.as_str(),
        "--device",
        "pi-p",
        "--wait",
        "--timeout",
        "90s",
    ];
    let (ok, stdout, stderr) = coracle(&data_dir, &args);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("pi-p committed generation 1"), "{stdout}");

    // The layer's progress went out while it was pulled, ending with it stored.
    let mut seen = Vec::new();
    while !seen.iter().any(|p: &PullProgress| p.stored) {
        let body = injector
            .next_message(&topic, Duration::from_secs(30))
            .unwrap();
        seen.push(decode(&body).unwrap());
    }
    let end = seen.last().unwrap();
    assert_eq!(end.generation, Generation(1));
    assert_eq!((end.service.as_str(), end.layer, end.layers), ("web", 0, 1));
    assert!(
        end.total_bytes > 100_000 && end.percent() == 100,
        "{seen:?}"
    );

    // A version that exits at once is rolled back by the device: exit 1 with its reason.
    let crashing = app(dir.path(), "2", r#"["/bin/busybox", "false"]"#);
    let args = [
        "deploy",
        crashing.as_str(),
        "--device",
        "pi-p",
        "--wait",
        "--timeout",
        "90s",
    ];
    let (ok, stdout, stderr) = coracle(&data_dir, &args);
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: pi-p rolled back generation 2"),
        "{stderr}"
    );
}
