//! End-to-end, issue 15 item 3: a `start-first` update keeps an HTTP service answering. A
//! client in another network namespace asks for the published port every 50 ms while the
//! app is updated twice: to a new version (the new container starts beside the old one and
//! takes the port once healthy; the old one, `httpd` as PID 1, ignores SIGTERM and takes its
//! whole grace period to go, which stop-first would turn into seconds of refused
//! connections), then to a broken one (it exits at once, the generation rolls back, and the
//! old one never stops). No request may fail, and once the new version answered the old one
//! never answers again. Root only; takes turns on the test network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::{wait_applied, Settled};
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::image::{build_layout, busybox_files};
use coracle_tests::e2e::{http_get, wait_until};
use coracle_tests::netns::TestNetwork;

const PORT: u16 = 8090;

/// The app at `tag`; `broken` runs a command that exits 1 instead of the web server.
fn app(dir: &Path, tag: &str, broken: bool) -> PathBuf {
    let command = if broken {
        r#"["/bin/busybox", "false"]"#
    } else {
        r#"["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]"#
    };
    let compose = format!(
        "services:
  web:
    image: hello:{tag}
    command: {command}
    restart: always
    ports: [\"{PORT}:80\"]
    healthcheck:
      test: [HTTP, \"80\", /index.html]
      interval: 1s
      retries: 2
"
    );
    let path = dir.join(format!("app-{tag}-{broken}.yml"));
    std::fs::write(&path, compose).unwrap();
    path
}

/// What the client saw: each answer's page, or why the request failed.
#[derive(Debug, Default)]
struct Seen {
    answers: Vec<(Duration, String)>,
    failures: Vec<(Duration, String)>,
}

/// Asks every 50 ms until `stop`; each answer is reduced to the version it names.
fn poll(addr: std::net::Ipv4Addr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let began = Instant::now();
        let mut seen = Seen::default();
        while !stop.load(Ordering::Relaxed) {
            let at = began.elapsed();
            match http_get(addr, PORT, "/") {
                Ok(answer) if answer.lines().next().is_some_and(|l| l.contains(" 200 ")) => {
                    let version = ["version-1", "version-2"]
                        .into_iter()
                        .find(|v| answer.contains(v))
                        .unwrap_or("?");
                    seen.answers.push((at, version.to_string()));
                }
                Ok(answer) => seen.failures.push((at, answer)),
                Err(e) => seen.failures.push((at, format!("{e:#}"))),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    })
}

#[test]
#[ignore = "needs root"]
fn start_first_keeps_a_published_http_service_answering_through_an_update_and_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    for tag in ["1", "2"] {
        let files = busybox_files(&format!("version-{tag}"), vec![]).unwrap();
        let image = build_layout(&dir.path().join(format!("img{tag}")), tag, &files).unwrap();
        controller
            .push(&image.source, &format!("hello:{tag}"))
            .unwrap();
    }
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-sf", dir.path()).unwrap();
    let agent = Agent::start("pi-sf", &host, dir.path(), &bootstrap).unwrap();
    controller
        .deploy(&app(dir.path(), "1", false), "pi-sf")
        .unwrap();
    wait_applied(&controller, "pi-sf", 1, Settled::Healthy).unwrap();
    wait_until("version 1 on the port", Duration::from_secs(30), || {
        let page = http_get(host.addr, PORT, "/").map_err(|e| format!("{e:#}"))?;
        page.contains("version-1").then_some(()).ok_or(page)
    })
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let client = poll(host.addr, stop.clone());
    // Let the client see the old version answer first.
    std::thread::sleep(Duration::from_millis(500));
    let deployed = Instant::now();
    controller
        .deploy(&app(dir.path(), "2", false), "pi-sf")
        .unwrap();
    wait_until("version 2 on the port", Duration::from_secs(60), || {
        let page = http_get(host.addr, PORT, "/").map_err(|e| format!("{e:#}"))?;
        page.contains("version-2").then_some(()).ok_or(page)
    })
    .unwrap();
    let took = deployed.elapsed();
    wait_applied(&controller, "pi-sf", 2, Settled::Healthy).unwrap();
    // The old container is gone once its grace period is over: one container again.
    wait_until("the old container to go", Duration::from_secs(60), || {
        let pids = agent.container_pids();
        (pids.len() == 1).then_some(()).ok_or(format!("{pids:?}"))
    })
    .unwrap();

    // A broken version: it exits at once, is rolled back, and the old one never stops.
    controller
        .deploy(&app(dir.path(), "2", true), "pi-sf")
        .unwrap();
    wait_until(
        "the rollback of generation 3",
        Duration::from_secs(90),
        || {
            let events = controller
                .cli(&["device", "events", "pi-sf"])
                .map_err(|e| format!("{e:#}"))?;
            events
                .contains("kept serving")
                .then_some(events.clone())
                .ok_or(events)
        },
    )
    .unwrap();
    // A few more requests after the rollback.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let seen = client.join().unwrap();

    println!(
        "start-first: {} requests at 50 ms intervals, {} failed; version 2 answered {:.2} s after `coracle deploy`",
        seen.answers.len() + seen.failures.len(),
        seen.failures.len(),
        took.as_secs_f64()
    );
    assert!(
        seen.failures.is_empty(),
        "failed requests: {:?}\nagent: {}",
        seen.failures,
        agent.output()
    );
    assert!(seen.answers.len() > 40, "{} answers", seen.answers.len());
    let first_new = seen
        .answers
        .iter()
        .position(|(_, v)| v == "version-2")
        .expect("version 2 answered");
    assert!(first_new > 0, "version 1 never answered during the update");
    assert!(
        seen.answers[first_new..]
            .iter()
            .all(|(_, v)| v == "version-2"),
        "version 1 answered after version 2 did: {:?}",
        seen.answers
    );
    let output = agent.output();
    assert!(output.contains("successor took over"), "{output}");
}
