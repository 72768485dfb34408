//! `init: true`: the runtime's own init as PID 1 (`runtime::init::pid1`) forwards signals to
//! the service's process, reaps orphans and exits with the process's status (root only).

mod runtime_support;

use std::fs;
use std::time::{Duration, Instant};

use coracle_agent::runtime::{ContainerId, Runtime, RuntimeError};
use nix::sys::signal::Signal;
use runtime_support::{eventually, Harness};

/// (pid, state letter) of every child of `parent` (host pids).
fn children(parent: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may hold spaces, so read after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.next().and_then(|p| p.parse().ok()) == Some(parent) {
            out.push((pid, state));
        }
    }
    out
}

fn log_of(h: &Harness, id: &ContainerId) -> String {
    coracle_agent::runtime::log_time::text_of(
        &fs::read_to_string(h.runtime.log_path(id)).unwrap_or_default(),
    )
}

#[test]
#[ignore = "needs root"]
fn a_shell_that_ignores_sigterm_as_pid_1_stops_at_once_under_init() {
    let h = Harness::new();
    // As PID 1, sh ignores SIGTERM (the kernel gives PID 1 no default actions); as the
    // init's child it gets the default action.
    let mut spec = h.spec("echo up; sleep 1000 & wait");
    spec.init = true;
    let id: ContainerId = "graceful".parse().unwrap();
    h.runtime.create(&id, &spec).unwrap();
    h.runtime.start(&id).unwrap();
    assert!(eventually(Duration::from_secs(10), || log_of(&h, &id).contains("up")));
    let grace = Duration::from_secs(30);
    let asked = Instant::now();
    let state = h.runtime.stop_with(&id, Signal::SIGTERM, grace).unwrap();
    let took = asked.elapsed();
    assert_eq!(
        state.exit_code,
        Some(128 + 15),
        "killed by SIGTERM: {state:?}"
    );
    assert!(took < grace / 2, "stopping took {took:?}");
    h.runtime.delete(&id).unwrap();
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn the_init_forwards_the_stop_signal_and_exits_with_the_process_status() {
    let h = Harness::new();
    let script = "trap 'echo got-usr1; exit 7' USR1; echo ready; sleep 1000 & wait";
    let mut spec = h.spec(script);
    spec.init = true;
    let id: ContainerId = "usr1".parse().unwrap();
    h.runtime.create(&id, &spec).unwrap();
    h.runtime.start(&id).unwrap();
    assert!(eventually(Duration::from_secs(10), || log_of(&h, &id)
        .contains("ready")));
    let state = h
        .runtime
        .stop_with(&id, Signal::SIGUSR1, Duration::from_secs(30))
        .unwrap();
    assert_eq!(state.exit_code, Some(7), "{state:?}");
    assert!(log_of(&h, &id).contains("got-usr1"));
    h.runtime.delete(&id).unwrap();

    // Exit codes and deaths by signal come through as without an init.
    for (script, code) in [("exit 3", 3), ("kill -USR1 $$", 128 + 10), ("true", 0)] {
        let mut spec = h.spec(script);
        spec.init = true;
        let (state, _) = h.run("status", &spec);
        assert_eq!(state.exit_code, Some(code), "{script}");
    }
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn an_orphan_stays_a_zombie_without_init_and_is_reaped_with_it() {
    let h = Harness::new();
    // The inner shell leaves `sleep 0.5` behind; it is reparented to PID 1, which is then
    // `sleep 1000` (exec'd) without init and never waits for anything.
    let script = "sh -c 'sleep 0.5 &'; echo forked; exec sleep 1000";
    for init in [false, true] {
        let mut spec = h.spec(script);
        spec.init = init;
        let id: ContainerId = format!("orphans-{init}").parse().unwrap();
        h.runtime.create(&id, &spec).unwrap();
        h.runtime.start(&id).unwrap();
        let pid1 = h.runtime.state(&id).unwrap().pid;
        assert!(eventually(Duration::from_secs(10), || log_of(&h, &id)
            .contains("forked")));
        if init {
            // Only the service's process is left under the init, and it is no zombie.
            let reaped = eventually(Duration::from_secs(10), || {
                let kids = children(pid1);
                kids.len() == 1 && kids[0].1 != 'Z'
            });
            assert!(reaped, "children of the init: {:?}", children(pid1));
        } else {
            let zombie = eventually(Duration::from_secs(10), || {
                children(pid1).iter().any(|(_, state)| *state == 'Z')
            });
            assert!(zombie, "children of PID 1: {:?}", children(pid1));
        }
        h.kill_and_delete(&id);
    }
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn under_init_a_failed_exec_still_reports_its_cause() {
    let h = Harness::new();
    let mut spec = h.spec("unused");
    spec.process.args = vec!["/bin/no-such-program".into()];
    spec.init = true;
    let id: ContainerId = "missing".parse().unwrap();
    h.runtime.create(&id, &spec).unwrap();
    let err = h.runtime.start(&id).unwrap_err();
    let RuntimeError::StartFailed { reason, .. } = &err else {
        panic!("expected a failed start, got {err}");
    };
    assert!(reason.contains("exec /bin/no-such-program"), "{reason}");
    let state = h.runtime.wait(&id, Duration::from_secs(10)).unwrap();
    assert_eq!(state.exit_code, Some(127), "{state:?}");
    h.runtime.delete(&id).unwrap();
    h.assert_clean();
}
