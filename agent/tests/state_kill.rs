//! kill -9 during state writes: a child process (this test binary re-executed) saves the
//! agent state in a loop; the parent SIGKILLs it at arbitrary moments and checks that every
//! load finds an intact state, never older than one it saw before.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coracle_agent::state::{AgentState, LoadReport, StateStore};
use coracle_proto::{samples, Generation};

const CHILD_ENV: &str = "CORACLE_STATE_WRITER_DIR";

/// Runs only as the child of `state_survives_kill_nine_mid_write` (the env var names its dir).
#[test]
fn state_writer_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = StateStore::new(Path::new(&dir));
    let (mut state, _) = store.load().unwrap();
    let mut generation = state.replay_floor().0;
    loop {
        generation += 1;
        let mut desired = samples::desired_with_services(4);
        desired.generation = Generation(generation);
        state.begin(desired);
        state.commit();
        store.save(&state).unwrap();
    }
}

fn committed(store: &StateStore) -> (AgentState, LoadReport) {
    store.load().unwrap()
}

#[test]
fn state_survives_kill_nine_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let mut last_seen = Generation(0);
    for round in 0..15 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "state_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it write a varying number of times past what we saw, then kill it mid-stride.
        let target = last_seen.0 + 3 + round;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "writer made no progress");
            let g = store.peek().unwrap().map(|s| s.committed_generation());
            if g.is_some_and(|g| g.0 >= target) {
                break;
            }
            std::thread::yield_now();
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (state, report) = committed(&store);
        assert!(
            matches!(report, LoadReport::Loaded),
            "round {round}: {report:?}"
        );
        let g = state.committed_generation();
        assert!(
            g >= last_seen && g.0 >= target,
            "round {round}: {g} < {last_seen}"
        );
        last_seen = g;
    }
    assert!(last_seen.0 >= 15);
}
