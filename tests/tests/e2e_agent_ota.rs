//! End-to-end, issue 19 item 1: the agent updates itself over the air. A real controller
//! and a real agent (root, network namespace) running a container:
//! - a second build (the same binary stamped with another version) is released with
//!   `coracle agent release` and rolled out with `coracle agent rollout --to`: the device
//!   downloads it, swaps slots, executes itself again and reports the new version, with its
//!   container still running under the same pid; the rollout completes;
//! - a third build, released the same way, comes as a delta against the second (the
//!   device holds its layer): the delta machinery applies to a binary too;
//! - a "build" that crashes on start (`/bin/false`, an ELF program of this architecture)
//!   is given its one trial, abandoned, and the device goes on with the build before it,
//!   still running its container; the device fails and the rollout pauses with the device
//!   rolled back.
//!
//! - a build that starts but never connects (a program that only waits) is stopped at the
//!   device's `[update] confirm_timeout_s` and abandoned the same way;
//! - a link cut in the middle of a build's download: the agent keeps its build and its
//!   container, keeps the bytes received, resumes from there (HTTP Range) once the link is
//!   back, and the update completes.
//!
//! Root only; takes turns on the test network like the other e2e tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use coracle_proto::{find_version_stamp, VERSION_STAMP_LEN, VERSION_STAMP_PREFIX};
use coracle_tests::e2e::agent::{Agent, AgentOptions};
use coracle_tests::e2e::apps::{push_hello_versions, sleeper_app, wait_applied, Settled};
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::{binary, wait_until};
use coracle_tests::netns::TestNetwork;

/// Copies the agent binary to `to` with its version stamp replaced by `version`: another
/// build as far as digests, releases and reports go.
fn stamped_copy(from: &Path, to: &Path, version: &str) -> String {
    let mut bytes = std::fs::read(from).unwrap();
    let current = find_version_stamp(&bytes).unwrap().to_string();
    let mut old = VERSION_STAMP_PREFIX.to_vec();
    old.extend_from_slice(current.as_bytes());
    old.resize(VERSION_STAMP_LEN, 0);
    let mut new = VERSION_STAMP_PREFIX.to_vec();
    new.extend_from_slice(version.as_bytes());
    new.resize(VERSION_STAMP_LEN, 0);
    let at = bytes
        .windows(old.len())
        .position(|w| w == old.as_slice())
        .unwrap();
    bytes[at..at + new.len()].copy_from_slice(&new);
    std::fs::write(to, &bytes).unwrap();
    current
}

/// A static x86_64 program that waits for signals forever (`pause` in a loop), whatever its
/// arguments: a new build that starts and never connects.
fn waiting_program() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    let code: [u8; 9] = [
        0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, 34 (pause)
        0x0f, 0x05, // syscall
        0xeb, 0xf7, // jmp back to mov
    ];
    let size = (64 + 56 + code.len()) as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // executable
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + 120).to_le_bytes()); // entry: the code
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [0, BASE, BASE, size, size, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    elf
}

fn rollout_id(started: &str) -> String {
    started
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no rollout id in {started}"))
        .to_string()
}

fn rollout_json(controller: &Controller, id: &str) -> serde_json::Value {
    let text = controller.cli(&["rollout", "show", id, "--json"]).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Waits until the device reports agent `version`; on time out shows both sides' logs.
fn wait_agent_version(controller: &Controller, agent: &Agent, version: &str) {
    let device = agent.name.as_str();
    wait_until(
        &format!("{device} to report agent {version}"),
        Duration::from_secs(120),
        || {
            let d = controller.device(device).map_err(|e| e.to_string())?;
            match d["reported"]["agent_version"].as_str() {
                Some(v) if v == version => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .unwrap_or_else(|err| {
        panic!(
            "{err:#}\n--- agent ---\n{}\n--- controller ---\n{}",
            agent.output(),
            controller.output()
        )
    });
}

fn wait_phase(controller: &Controller, id: &str, phase: &str) -> serde_json::Value {
    wait_until(
        &format!("rollout {id} to be {phase}"),
        Duration::from_secs(120),
        || {
            let rollout = rollout_json(controller, id);
            match rollout["phase"].as_str() {
                Some(p) if p == phase => Ok(rollout),
                _ => Err(rollout.to_string()),
            }
        },
    )
    .unwrap()
}

/// One device (tag `ring=RING`) running the sleeper app under a real controller. Tests
/// bind every field (`dir, network, controller, agent` in that order, so they drop in the
/// reverse: the agent first, the files last).
struct Rig {
    agent: Agent,
    controller: Controller,
    network: TestNetwork,
    dir: tempfile::TempDir,
    /// The app's running container, which every update must keep.
    containers: Vec<(String, i32)>,
}

fn rig(device: &str, ring: &str, options: &AgentOptions) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    push_hello_versions(&controller, dir.path(), &["1"]).unwrap();
    let host = network.add_host().unwrap();
    let boot = dir.path().join(format!("{device}.bootstrap.toml"));
    let out = boot.display().to_string();
    let tag = format!("ring={ring}");
    controller
        .cli(&["device", "add", device, "--tag", &tag, "-o", &out])
        .unwrap();
    controller
        .deploy(&sleeper_app(dir.path(), "1").unwrap(), device)
        .unwrap();
    let agent = Agent::start_with(device, &host, dir.path(), &boot, options).unwrap();
    wait_applied(&controller, device, 1, Settled::Running)
        .unwrap_or_else(|err| panic!("{err:#}\n--- agent ---\n{}", agent.output()));
    let containers = agent.container_pids();
    assert_eq!(containers.len(), 1, "{containers:?}");
    Rig {
        agent,
        controller,
        network,
        dir,
        containers,
    }
}

#[test]
#[ignore = "needs root"]
fn the_agent_updates_itself_keeps_its_containers_and_gives_up_a_crashing_build() {
    let Rig {
        dir,
        network: _network,
        controller,
        mut agent,
        containers,
    } = rig("pi-a", "canary", &AgentOptions::default());

    // A second build, released and rolled out.
    let v2_file = dir.path().join("coracle-agent-v2");
    let installed = stamped_copy(&binary("coracle-agent").unwrap(), &v2_file, "0.0.0-ota2");
    wait_agent_version(&controller, &agent, &installed);
    let released = controller
        .cli(&["agent", "release", &v2_file.display().to_string()])
        .unwrap();
    assert!(
        released.contains("released agent 0.0.0-ota2 for linux/"),
        "{released}"
    );
    let listed = controller.cli(&["agent", "ls"]).unwrap();
    assert!(listed.contains("0.0.0-ota2"), "{listed}");
    let started = Instant::now();
    let answer = controller
        .cli(&[
            "agent",
            "rollout",
            "0.0.0-ota2",
            "--to",
            "ring=canary",
            "--waves",
            "100%",
            "--health-window",
            "2s",
            "--apply-timeout",
            "2m",
        ])
        .unwrap();
    let first = rollout_id(&answer);
    wait_agent_version(&controller, &agent, "0.0.0-ota2");
    let update_time = started.elapsed();
    wait_phase(&controller, &first, "completed");
    assert_eq!(
        agent.container_pids(),
        containers,
        "the container was not kept"
    );
    agent
        .wait_for_line("agent build confirmed", Duration::from_secs(10))
        .unwrap();
    eprintln!("measured: release to new version reported in {update_time:?}");
    wait_one_agent_process(&agent);

    // A third build comes as a delta against the second.
    let v3_file = dir.path().join("coracle-agent-v3");
    stamped_copy(&binary("coracle-agent").unwrap(), &v3_file, "0.0.0-ota3");
    controller
        .cli(&["agent", "release", &v3_file.display().to_string()])
        .unwrap();
    let answer = controller
        .cli(&[
            "agent",
            "rollout",
            "0.0.0-ota3",
            "--to",
            "ring=canary",
            "--waves",
            "100%",
            "--health-window",
            "2s",
            "--apply-timeout",
            "2m",
        ])
        .unwrap();
    let third = rollout_id(&answer);
    wait_agent_version(&controller, &agent, "0.0.0-ota3");
    wait_one_agent_process(&agent);
    wait_phase(&controller, &third, "completed");
    assert_eq!(
        agent.container_pids(),
        containers,
        "the container was not kept"
    );
    let output = agent.output();
    let pulled: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("image pulled") && l.contains("coracle-agent@"))
        .collect();
    assert_eq!(pulled.len(), 2, "{pulled:?}");
    assert!(
        pulled[1].contains("delta=1"),
        "the third build was not a delta: {pulled:?}"
    );
    eprintln!("measured: {}", pulled.join("\n"));

    // A build that crashes on start: one trial, abandoned, the build before it goes on.
    let crashing = controller
        .cli(&["agent", "release", "/bin/false", "--version", "0.0.0-crash"])
        .unwrap();
    assert!(
        crashing.contains("released agent 0.0.0-crash"),
        "{crashing}"
    );
    let answer = controller
        .cli(&[
            "agent",
            "rollout",
            "0.0.0-crash",
            "--to",
            "ring=canary",
            "--waves",
            "100%",
            "--health-window",
            "2s",
            "--apply-timeout",
            "2m",
            "--rollback-on-failure",
        ])
        .unwrap();
    let crash = rollout_id(&answer);
    let paused = wait_phase(&controller, &crash, "paused");
    let device = &paused["devices"][0];
    assert_eq!(device["status"], "rolled_back", "{paused}");
    let reason = device["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("gave agent 0.0.0-crash up") && reason.contains("exited with status 1"),
        "{paused}"
    );
    let reported = controller.device("pi-a").unwrap();
    assert_eq!(
        reported["reported"]["agent_version"], "0.0.0-ota3",
        "{reported}"
    );
    assert_eq!(
        agent.container_pids(),
        containers,
        "the container was not kept"
    );
    assert!(
        agent.output().contains("agent build on trial abandoned"),
        "{}",
        agent.output()
    );
    // The device stays on the build before and keeps taking updates of its app.
    push_hello_versions(&controller, dir.path(), &["2"]).unwrap();
    controller
        .deploy(&sleeper_app(dir.path(), "2").unwrap(), "pi-a")
        .unwrap();
    wait_applied(&controller, "pi-a", 2, Settled::Running).unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_build_that_never_connects_is_stopped_at_the_deadline_and_given_up() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the waiting program is x86_64 code");
        return;
    }
    let options = AgentOptions {
        confirm_timeout_s: 5,
        ..AgentOptions::default()
    };
    let Rig {
        dir,
        network: _network,
        controller,
        mut agent,
        containers,
    } = rig("pi-w", "wait", &options);
    let installed = find_version_stamp(&std::fs::read(binary("coracle-agent").unwrap()).unwrap())
        .unwrap()
        .to_string();
    wait_agent_version(&controller, &agent, &installed);

    let program = dir.path().join("waits-forever");
    std::fs::write(&program, waiting_program()).unwrap();
    let released = controller
        .cli(&[
            "agent",
            "release",
            &program.display().to_string(),
            "--version",
            "0.0.0-wait",
        ])
        .unwrap();
    assert!(released.contains("for linux/amd64"), "{released}");
    let started = Instant::now();
    let answer = controller
        .cli(&[
            "agent",
            "rollout",
            "0.0.0-wait",
            "--to",
            "ring=wait",
            "--waves",
            "100%",
            "--health-window",
            "2s",
            "--apply-timeout",
            "2m",
            "--rollback-on-failure",
        ])
        .unwrap();
    let id = rollout_id(&answer);
    let paused = wait_phase(&controller, &id, "paused");
    let device = &paused["devices"][0];
    assert_eq!(device["status"], "rolled_back", "{paused}");
    let reason = device["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("did not connect within 5 s"), "{paused}");
    // The deadline was waited for, not skipped.
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(
        controller.device("pi-w").unwrap()["reported"]["agent_version"],
        installed.as_str()
    );
    assert_eq!(
        agent.container_pids(),
        containers,
        "the container was not kept"
    );
    agent
        .wait_for_line("agent build on trial abandoned", Duration::from_secs(5))
        .unwrap();
}

/// After an update the agent is one process again: its main process has become the
/// confirmed build (its program is that build's slot file, started `selected`) and no build
/// on trial is left as its child. Waits for the hand-over that follows the confirmation.
fn wait_one_agent_process(agent: &Agent) {
    let pid = agent.pid().expect("the agent runs");
    let environ = |pid: &str| std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let has = |env: &[u8], var: &[u8]| env.split(|b| *b == 0).any(|v| v == var);
    wait_until(
        "the agent's main process to become the confirmed build",
        Duration::from_secs(30),
        || {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| e.to_string())?;
            if !exe.to_string_lossy().contains("/agent-slots/") {
                return Err(format!("main process runs {}", exe.display()));
            }
            if !has(&environ(&pid.to_string()), b"CORACLE_AGENT_BOOT=selected") {
                return Err("main process was not started as the selected build".into());
            }
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let trials: Vec<&str> = children
                .split_whitespace()
                .filter(|child| has(&environ(child), b"CORACLE_AGENT_BOOT=trial"))
                .collect();
            match trials.is_empty() {
                true => Ok(()),
                false => Err(format!("builds on trial still running: {trials:?}")),
            }
        },
    )
    .unwrap_or_else(|err| panic!("{err:#}\n--- agent ---\n{}", agent.output()));
}

#[test]
#[ignore = "needs root"]
fn a_link_cut_mid_download_of_a_build_resumes_and_the_update_completes() {
    let Rig {
        dir,
        network,
        controller,
        mut agent,
        containers,
    } = rig("pi-c", "cut", &AgentOptions::default());
    let build = dir.path().join("coracle-agent-cut");
    stamped_copy(&binary("coracle-agent").unwrap(), &build, "0.0.0-cut");
    controller
        .cli(&["agent", "release", &build.display().to_string()])
        .unwrap();

    // A 2 Mbit/s link: the build's layer (megabytes) takes long enough to be cut part way.
    network.limit_rate_to_hosts(2_000).unwrap();
    let answer = controller
        .cli(&[
            "agent",
            "rollout",
            "0.0.0-cut",
            "--to",
            "ring=cut",
            "--waves",
            "100%",
            "--health-window",
            "2s",
            "--apply-timeout",
            "10m",
        ])
        .unwrap();
    let id = rollout_id(&answer);
    wait_until("part of the build on disk", Duration::from_secs(90), || {
        let held = agent.partial_bytes();
        if held > 256 << 10 {
            Ok(held)
        } else {
            Err(format!("{held} bytes"))
        }
    })
    .unwrap_or_else(|err| panic!("{err:#}\n--- agent ---\n{}", agent.output()));

    // Down for longer than the agent's read-idle timeout: the transfer fails for real and
    // the agent goes on with its build and its container.
    agent.host.link_down().unwrap();
    agent
        .wait_for_line(
            "agent build not fetched; trying again later",
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(agent.container_pids(), containers, "the app kept running");
    let kept = agent.partial_bytes();
    assert!(kept > 256 << 10, "the bytes received were kept: {kept}");

    agent.host.link_up().unwrap();
    network.limit_rate_to_hosts(1_000_000).unwrap();
    let resumed = agent
        .wait_for_line("blob download resumed", Duration::from_secs(120))
        .unwrap();
    assert!(resumed.contains("from_byte"), "{resumed}");
    wait_agent_version(&controller, &agent, "0.0.0-cut");
    wait_phase(&controller, &id, "completed");
    assert_eq!(
        agent.container_pids(),
        containers,
        "the container was not kept"
    );
    assert!(
        agent.partial_downloads().is_empty(),
        "{:?}",
        agent.partial_downloads()
    );
}
