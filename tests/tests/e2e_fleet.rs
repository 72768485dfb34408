//! End-to-end: the real controller and real agents, each agent in its own network namespace
//! with its own address, data dir and cgroup parent (issue 9, scenarios 1, 5 and 6).
//! Root only; the tests of this file share the machine's side of the test network
//! (10.213.0.1), so they take turns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::{push_hello, two_service_app, wait_converged, WEB_PORT};
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::image::{noise, LayerFile};
use coracle_tests::e2e::wait_until;
use coracle_tests::netns::TestNetwork;

/// A controller with `hello:1` and one device running [`two_service_app`] 1, converged.
/// Bound as a tuple, the parts drop in reverse: the agent first, the files last.
fn one_device_on_v1(name: &str) -> (tempfile::TempDir, TestNetwork, Controller, Agent) {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    push_hello(&controller, dir.path(), "1", "hello v1", vec![]).unwrap();
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol(name, dir.path()).unwrap();
    let agent = Agent::start(name, &host, dir.path(), &bootstrap).unwrap();
    controller
        .deploy(&two_service_app(dir.path(), "1").unwrap(), name)
        .unwrap();
    wait_converged(&controller, name, 1).unwrap();
    (dir, network, controller, agent)
}

/// GET / from the machine to a device's address.
fn http_get(addr: Ipv4Addr, port: u16) -> String {
    coracle_tests::e2e::http_get(addr, port, "/").unwrap()
}

#[test]
#[ignore = "needs root"]
fn three_devices_run_a_two_service_app_and_report_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    push_hello(&controller, dir.path(), "1", "hello v1", vec![]).unwrap();
    let app = two_service_app(dir.path(), "1").unwrap();

    let mut agents = Vec::new();
    for name in ["pi-1", "pi-2", "pi-3"] {
        let host = network.add_host().unwrap();
        let bootstrap = controller.enrol(name, dir.path()).unwrap();
        agents.push(Agent::start(name, &host, dir.path(), &bootstrap).unwrap());
    }
    for agent in &agents {
        controller.deploy(&app, &agent.name).unwrap();
    }
    for agent in &agents {
        let detail = wait_converged(&controller, &agent.name, 1).unwrap();
        assert_eq!(detail["device"]["online"], true, "{detail}");
        assert_eq!(detail["device"]["desired_generation"], 1, "{detail}");
        // The app answers on the device's own address, across the test network.
        let page = http_get(agent.host.addr, WEB_PORT);
        assert!(page.contains("hello v1"), "{}: {page}", agent.name);
        // Each device's containers live under its own cgroup parent.
        assert_eq!(
            agent.cgroups().len(),
            2,
            "{}: {:?}",
            agent.name,
            agent.cgroups()
        );
    }
}

#[test]
#[ignore = "needs root"]
fn controller_restart_loses_nothing_and_devices_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let mut controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    push_hello(&controller, dir.path(), "1", "hello v1", vec![]).unwrap();
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-r", dir.path()).unwrap();
    let mut agent = Agent::start("pi-r", &host, dir.path(), &bootstrap).unwrap();
    controller
        .deploy(&two_service_app(dir.path(), "1").unwrap(), "pi-r")
        .unwrap();
    wait_converged(&controller, "pi-r", 1).unwrap();
    let pids_before = agent.container_pids();

    // The controller (and its embedded broker) goes away and comes back on the same data dir.
    controller.restart().unwrap();
    agent
        .wait_for_line("broker link up", Duration::from_secs(60))
        .unwrap();
    let detail = wait_until("pi-r online again", Duration::from_secs(30), || {
        let d = controller.device("pi-r").map_err(|e| e.to_string())?;
        if d["device"]["online"] == true {
            Ok(d)
        } else {
            Err(d.to_string())
        }
    })
    .unwrap();
    // The controller kept the device, its generation and its last report.
    assert_eq!(detail["device"]["desired_generation"], 1, "{detail}");
    assert_eq!(detail["reported"]["applied"], 1, "{detail}");
    // The device kept its containers running through it.
    assert_eq!(agent.container_pids(), pids_before);
    assert!(http_get(host.addr, WEB_PORT).contains("hello v1"));

    // And the link works both ways after the restart: a new version arrives and is applied.
    push_hello(&controller, dir.path(), "2", "hello v2", vec![]).unwrap();
    let message = controller
        .deploy(&two_service_app(dir.path(), "2").unwrap(), "pi-r")
        .unwrap();
    assert!(message.contains("generation 2"), "{message}");
    wait_converged(&controller, "pi-r", 2).unwrap();
    assert!(http_get(host.addr, WEB_PORT).contains("hello v2"));
}

#[test]
#[ignore = "needs root"]
fn agent_killed_mid_update_keeps_containers_and_converges_without_leaks() {
    let (dir, _network, controller, mut agent) = one_device_on_v1("pi-k");
    let host = agent.host.clone();
    let v1_pids = agent.container_pids();
    assert_eq!(v1_pids.len(), 2, "{v1_pids:?}");

    // Version 2 carries 8 MB more, so the pull is under way when the agent dies.
    let filler = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8);
    let extra = vec![LayerFile::new(
        "data/blob",
        filler.collect::<Vec<u8>>(),
        0o644,
    )];
    push_hello(&controller, dir.path(), "2", "hello v2", extra).unwrap();
    controller
        .deploy(&two_service_app(dir.path(), "2").unwrap(), "pi-k")
        .unwrap();
    agent
        .wait_for_line("pulling image", Duration::from_secs(30))
        .unwrap();
    agent.kill9().unwrap();

    // The running version was not touched by the crash.
    assert_eq!(agent.container_pids(), v1_pids);
    assert!(http_get(host.addr, WEB_PORT).contains("hello v1"));

    agent.restart().unwrap();
    wait_converged(&controller, "pi-k", 2).unwrap();
    assert!(http_get(host.addr, WEB_PORT).contains("hello v2"));

    // Nothing leaked: no mount of the agent's in the machine's namespace (container root
    // filesystems live in the containers' own), one cgroup per running container, no partial
    // downloads, and the old version's containers are gone.
    let running = agent.container_pids();
    assert_eq!(running.len(), 2, "{running:?}");
    for (_, pid) in &v1_pids {
        assert!(
            !running.iter().any(|(_, p)| p == pid),
            "v1 container {pid} still running"
        );
    }
    assert!(agent.mounts().is_empty(), "{:?}", agent.mounts());
    let mut netns = agent.netns_mounts();
    netns.sort();
    assert_eq!(
        netns,
        ["web", "worker"],
        "one network namespace per running container"
    );
    assert_eq!(agent.cgroups().len(), 2, "{:?}", agent.cgroups());
    assert!(
        agent.partial_downloads().is_empty(),
        "{:?}",
        agent.partial_downloads()
    );
}

#[test]
#[ignore = "needs root"]
fn link_cut_during_a_pull_keeps_the_app_running_and_the_download_resumes() {
    let (dir, network, controller, mut agent) = one_device_on_v1("pi-l");
    let host = agent.host.clone();
    let v1_pids = agent.container_pids();

    // Version 2 carries 6 MB that does not compress, over a 2 Mbit/s link: a 24 s pull.
    let extra = vec![LayerFile::new("data/blob", noise(6 << 20, 7), 0o644)];
    push_hello(&controller, dir.path(), "2", "hello v2", extra).unwrap();
    network.limit_rate_to_hosts(2_000).unwrap();
    controller
        .deploy(&two_service_app(dir.path(), "2").unwrap(), "pi-l")
        .unwrap();
    wait_until("part of the layer on disk", Duration::from_secs(60), || {
        let held = agent.partial_bytes();
        if held > 256 << 10 {
            Ok(held)
        } else {
            Err(format!("{held} bytes"))
        }
    })
    .unwrap();

    // The link drops for longer than the agent's read-idle timeout, so the transfer is cut
    // for real (not merely stalled): the pull fails and is retried with backoff.
    host.link_down().unwrap();
    agent
        .wait_for_line("action failed", Duration::from_secs(90))
        .unwrap();
    assert_eq!(agent.container_pids(), v1_pids, "the app kept running");
    let kept = agent.partial_bytes();
    assert!(kept > 256 << 10, "the bytes received were kept: {kept}");

    host.link_up().unwrap();
    network.limit_rate_to_hosts(1_000_000).unwrap();
    let resumed = agent
        .wait_for_line("blob download resumed", Duration::from_secs(60))
        .unwrap();
    assert!(resumed.contains("from_byte"), "{resumed}");
    wait_converged(&controller, "pi-l", 2).unwrap();
    assert!(http_get(host.addr, WEB_PORT).contains("hello v2"));
    assert!(agent.partial_downloads().is_empty());
}

#[test]
#[ignore = "needs root"]
fn agent_killed_at_random_points_of_updates_always_recovers() {
    const ROUNDS: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    push_hello(&controller, dir.path(), "1", "hello v1", vec![]).unwrap();
    let extra = vec![LayerFile::new("data/blob", noise(4 << 20, 11), 0o644)];
    push_hello(&controller, dir.path(), "2", "hello v2", extra).unwrap();
    let apps = [
        two_service_app(dir.path(), "1").unwrap(),
        two_service_app(dir.path(), "2").unwrap(),
    ];
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-p", dir.path()).unwrap();
    let mut agent = Agent::start("pi-p", &host, dir.path(), &bootstrap).unwrap();
    controller.deploy(&apps[0], "pi-p").unwrap();
    wait_converged(&controller, "pi-p", 1).unwrap();

    // Each round deploys the other version and kills the agent after a random delay, so the
    // kill lands anywhere in pull, unpack, create, start or the health gate; the seed is
    // printed so a failing round can be replayed.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    eprintln!("kill delays seed {seed}");
    let mut delays = noise(ROUNDS as usize, seed | 1).into_iter();
    let mut expected_page = "";
    for round in 0..ROUNDS {
        let generation = 2 + round;
        let version = (generation as usize + 1) % 2;
        let app = &apps[version];
        expected_page = ["hello v1", "hello v2"][version];
        controller.deploy(app, "pi-p").unwrap();
        let delay_ms = u64::from(delays.next().unwrap_or(0)) * 8; // 0..2 s
        std::thread::sleep(Duration::from_millis(delay_ms));
        agent.restart().unwrap(); // kill -9, then start again
        let detail = wait_converged(&controller, "pi-p", generation).unwrap();
        assert!(
            detail["reported"]["services"].as_array().unwrap().len() == 2,
            "round {round} (killed after {delay_ms} ms): {detail}"
        );
        assert_eq!(agent.container_pids().len(), 2, "round {round}");
        assert_eq!(
            agent.cgroups().len(),
            2,
            "round {round}: {:?}",
            agent.cgroups()
        );
    }
    assert!(agent.mounts().is_empty(), "{:?}", agent.mounts());
    let mut netns = agent.netns_mounts();
    netns.sort();
    assert_eq!(
        netns,
        ["web", "worker"],
        "a network namespace leaked or went missing"
    );
    assert!(agent.partial_downloads().is_empty());
    let page = http_get(host.addr, WEB_PORT);
    assert!(page.contains(expected_page), "{page}");
}

/// The web service of `hello:1` exits 1 at once: deployed, it rolls back before commit.
fn crashing_app(dir: &Path) -> PathBuf {
    let compose = two_service_app(dir, "1").unwrap();
    let text = std::fs::read_to_string(&compose).unwrap().replace(
        &format!(r#"["/bin/busybox", "httpd", "-f", "-p", "0.0.0.0:{WEB_PORT}", "-h", "/www"]"#),
        r#"["/bin/busybox", "sh", "-c", "echo crashing; exit 1"]"#,
    );
    let path = dir.join("app-crashing.yml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Issue 15 item 5: deploys that overlap — a newer version while the last one is still
/// pulling, starting or in its gate; a crashing version whose rollback a newer deploy
/// interrupts; the agent killed on top — always converge on the newest generation, with
/// no container, cgroup, mount or zombie shim left over.
#[test]
#[ignore = "needs root"]
fn overlapping_deploys_and_interrupted_rollbacks_converge() {
    const ROUNDS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    push_hello(&controller, dir.path(), "1", "hello v1", vec![]).unwrap();
    let extra = vec![LayerFile::new("data/blob", noise(4 << 20, 23), 0o644)];
    push_hello(&controller, dir.path(), "2", "hello v2", extra).unwrap();
    let apps = [
        two_service_app(dir.path(), "1").unwrap(),
        two_service_app(dir.path(), "2").unwrap(),
    ];
    let crashing = crashing_app(dir.path());
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-o", dir.path()).unwrap();
    let mut agent = Agent::start("pi-o", &host, dir.path(), &bootstrap).unwrap();
    controller.deploy(&apps[0], "pi-o").unwrap();
    wait_converged(&controller, "pi-o", 1).unwrap();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    eprintln!("overlap delays seed {seed}");
    let mut delays = noise(2 * ROUNDS, seed | 1).into_iter();
    let mut delay = || Duration::from_millis(u64::from(delays.next().unwrap_or(0)) * 6);
    let mut generation = 1;
    for round in 0..ROUNDS {
        // Even rounds interrupt a crashing version (pulled, started, rolling back) with a
        // good one; odd rounds overlap the two good versions. Every third round also kills
        // the agent in the middle.
        let version = round % 2;
        let first = if round % 2 == 0 {
            &crashing
        } else {
            &apps[1 - version]
        };
        controller.deploy(first, "pi-o").unwrap();
        std::thread::sleep(delay()); // 0..1.5 s: anywhere in pull, create, start, gate
        controller.deploy(&apps[version], "pi-o").unwrap();
        generation += 2;
        if round % 3 == 2 {
            std::thread::sleep(delay());
            agent.restart().unwrap();
        }
        let detail = wait_converged(&controller, "pi-o", generation).unwrap();
        let context = format!("round {round}, seed {seed}: {detail}");
        assert_eq!(agent.container_pids().len(), 2, "{context}");
        assert_eq!(agent.cgroups().len(), 2, "{context}: {:?}", agent.cgroups());
        assert_eq!(agent.zombie_children(), Vec::<u32>::new(), "{context}");
        let page = http_get(host.addr, WEB_PORT);
        assert!(
            page.contains(["hello v1", "hello v2"][version]),
            "{context}: {page}"
        );
    }
    assert!(agent.partial_downloads().is_empty());
}

#[test]
#[ignore = "needs root"]
fn an_update_reaches_devices_as_a_delta_far_below_the_full_layer() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    // Version 2 changes the page and 100 bytes in the middle of 4 MB of data.
    let data_v1 = noise(4 << 20, 5);
    let mut data_v2 = data_v1.clone();
    data_v2[2 << 20..(2 << 20) + 100].fill(0x5a);
    let blob = |data| vec![LayerFile::new("data/blob", data, 0o644)];
    push_hello(&controller, dir.path(), "1", "hello v1", blob(data_v1)).unwrap();
    let v2_layer_size =
        push_hello(&controller, dir.path(), "2", "hello v2", blob(data_v2)).unwrap();

    let mut agents = Vec::new();
    for name in ["pi-d1", "pi-d2"] {
        let host = network.add_host().unwrap();
        let bootstrap = controller.enrol(name, dir.path()).unwrap();
        agents.push(Agent::start(name, &host, dir.path(), &bootstrap).unwrap());
    }
    for agent in &agents {
        controller
            .deploy(&two_service_app(dir.path(), "1").unwrap(), &agent.name)
            .unwrap();
        wait_converged(&controller, &agent.name, 1).unwrap();
    }
    for agent in &agents {
        controller
            .deploy(&two_service_app(dir.path(), "2").unwrap(), &agent.name)
            .unwrap();
    }
    for agent in &mut agents {
        wait_converged(&controller, &agent.name, 2).unwrap();
        assert!(http_get(agent.host.addr, WEB_PORT).contains("hello v2"));
        // The agent's pull report for version 2: one layer from a delta, none in full.
        let pull = agent.last_pull().unwrap();
        assert!(
            pull.deltas == 1 && pull.full == 0,
            "{}: {pull:?}",
            agent.name
        );
        let bytes = pull.bytes;
        eprintln!(
            "{}: version 2 pulled with {bytes} bytes; the full layer is {} bytes",
            agent.name, v2_layer_size
        );
        assert!(
            bytes * 20 < v2_layer_size,
            "{}: {bytes} bytes on the wire for a {}-byte layer",
            agent.name,
            v2_layer_size
        );
    }
}
