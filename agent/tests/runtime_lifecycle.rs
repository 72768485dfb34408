//! Lifecycle: containers outlive the agent and are adopted, logs, bad input, shim size
//! (root only, except where noted).

mod runtime_support;

use std::fs;
use std::process::Command;
use std::time::Duration;

use coracle_agent::runtime::spec::Stdio;
use coracle_agent::runtime::{ContainerId, LinuxRuntime, Runtime, RuntimeError, Status};
use runtime_support::{eventually, Harness};

fn write_bundle(h: &Harness, script: &str) -> std::path::PathBuf {
    let bundle = h.dir.path().join("bundle");
    fs::create_dir_all(&bundle).expect("bundle dir");
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/sh", "-c", script], "cwd": "/",
                    "env": ["PATH=/bin"]},
        "root": {"path": h.lower.to_str().expect("utf-8 temp path")},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}]}
    });
    fs::write(bundle.join("config.json"), config.to_string()).expect("write config.json");
    bundle
}

#[test]
#[ignore = "needs root"]
fn container_survives_sigkill_of_its_agent_and_is_adopted_with_its_exit_code() {
    let h = Harness::new();
    let bundle = write_bundle(&h, "trap 'exit 7' TERM; sleep 1000 & wait");
    let cfg = h.runtime.config().clone();
    // The "agent": a foreground `run` that manages the container.
    let mut agent = Command::new(env!("CARGO_BIN_EXE_coracle-agent"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg("--root")
        .arg(&cfg.state_dir)
        .args(["--cgroup-parent", &h.parent, "adopt-me"])
        .spawn()
        .unwrap();
    let id: ContainerId = "adopt-me".parse().unwrap();
    assert!(eventually(Duration::from_secs(10), || h
        .runtime
        .state(&id)
        .is_ok_and(|s| s.status == Status::Running)));
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();

    // A fresh handle — a restarted agent — finds it still running, stops it, learns the code.
    let adopted = LinuxRuntime::new(cfg);
    assert_eq!(adopted.list().unwrap(), vec![id.clone()]);
    let state = adopted.state(&id).unwrap();
    assert_eq!(state.status, Status::Running);
    assert!(
        fs::metadata(format!("/proc/{}", state.pid)).is_ok(),
        "container process gone"
    );
    let stopped = adopted.stop(&id, Duration::from_secs(10)).unwrap();
    assert_eq!(
        (stopped.status, stopped.exit_code, stopped.oom_killed),
        (Status::Stopped, Some(7), false)
    );
    adopted.delete(&id).unwrap();
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn stop_escalates_to_sigkill_when_term_is_ignored() {
    let h = Harness::new();
    // pid 1 of a namespace ignores SIGTERM unless it installs a handler.
    let spec = h.spec("sleep 1000");
    let id: ContainerId = "stubborn".parse().unwrap();
    h.runtime.create(&id, &spec).unwrap();
    h.runtime.start(&id).unwrap();
    let err = h.runtime.delete(&id).unwrap_err();
    assert!(
        matches!(err, RuntimeError::WrongStatus { .. }),
        "delete must refuse a running container: {err}"
    );
    let state = h.runtime.stop(&id, Duration::from_millis(300)).unwrap();
    assert_eq!(state.exit_code, Some(137));
    h.runtime.delete(&id).unwrap();
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn run_bundle_exits_with_the_containers_status() {
    let h = Harness::new();
    let bundle = write_bundle(&h, "exit 42");
    let status = Command::new(env!("CARGO_BIN_EXE_coracle-agent"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg("--root")
        .arg(&h.runtime.config().state_dir)
        .args(["--cgroup-parent", &h.parent, "exit42"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(42));
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn logs_are_readable_while_running_and_rotate_at_the_cap() {
    let h = Harness::new();
    let mut spec = h.spec("echo first; i=0; while [ $i -lt 300 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo last; sleep 1000");
    spec.stdio = Stdio::Logs {
        max_bytes: 4096,
        keep: 2,
    };
    let id: ContainerId = "logs".parse().unwrap();
    h.runtime.create(&id, &spec).unwrap();
    h.runtime.start(&id).unwrap();
    let log = h.runtime.log_path(&id);
    assert!(eventually(Duration::from_secs(10), || fs::read_to_string(
        &log
    )
    .is_ok_and(|l| l.contains("last"))));
    assert_eq!(h.runtime.state(&id).unwrap().status, Status::Running);
    let dir = log.parent().unwrap();
    assert!(fs::metadata(&log).unwrap().len() <= 4096);
    assert!(fs::metadata(dir.join("container.log.2")).unwrap().len() <= 4096);
    assert!(
        !dir.join("container.log.3").exists(),
        "only `keep` old files are kept"
    );
    h.kill_and_delete(&id);
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn shim_is_one_thread_with_no_runtime_per_container() {
    let h = Harness::new();
    let ids: Vec<ContainerId> = ["rss-a", "rss-b"]
        .iter()
        .map(|i| i.parse().unwrap())
        .collect();
    for id in &ids {
        h.runtime.create(id, &h.spec("sleep 1000")).unwrap();
        h.runtime.start(id).unwrap();
    }
    // One shim per container, each a single blocking thread (no async runtime, no helper
    // threads): what keeps its memory small. The resident figures themselves are measured
    // by `bench_runtime` against crun and runc, not asserted here.
    for id in &ids {
        let shim = h.runtime.state(id).unwrap().shim_pid;
        let status = fs::read_to_string(format!("/proc/{shim}/status")).unwrap();
        let threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .map(str::trim)
            .unwrap();
        assert_eq!(threads, "1", "shim {shim} runs {threads} threads");
    }
    for id in &ids {
        h.kill_and_delete(id);
    }
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn failed_create_leaves_nothing_and_names_the_cause() {
    let h = Harness::new();
    let mut spec = h.spec("true");
    spec.rootfs =
        coracle_agent::runtime::spec::Rootfs::Directory(h.dir.path().join("no-such-rootfs"));
    let id: ContainerId = "broken".parse().unwrap();
    let err = h.runtime.create(&id, &spec).unwrap_err().to_string();
    assert!(
        err.contains("mount rootfs") && err.contains("No such file"),
        "{err}"
    );
    h.assert_clean();

    let mut spec = h.spec("true");
    spec.process.args = vec!["/bin/no-such-program".into()];
    h.runtime.create(&id, &spec).unwrap();
    let err = h.runtime.start(&id).unwrap_err().to_string();
    assert!(err.contains("exec /bin/no-such-program"), "{err}");
    h.runtime.wait(&id, Duration::from_secs(10)).unwrap();
    h.runtime.delete(&id).unwrap();
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn duplicate_id_is_refused_and_the_first_container_keeps_running() {
    let h = Harness::new();
    let id: ContainerId = "twice".parse().unwrap();
    h.runtime.create(&id, &h.spec("sleep 1000")).unwrap();
    h.runtime.start(&id).unwrap();
    let err = h.runtime.create(&id, &h.spec("true")).unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyExists { .. }), "{err}");
    assert_eq!(h.runtime.state(&id).unwrap().status, Status::Running);
    h.kill_and_delete(&id);
    h.assert_clean();
}

#[test]
fn invalid_spec_is_refused_before_anything_exists() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = LinuxRuntime::new(coracle_agent::runtime::RuntimeConfig {
        state_dir: dir.path().join("state"),
        cgroup: coracle_agent::runtime::cgroups::CgroupConfig {
            root: dir.path().join("cg"),
            parent: "p".into(),
            allow_missing_controllers: false,
        },
        shim_binary: env!("CARGO_BIN_EXE_coracle-agent").into(),
    });
    let mut spec = coracle_agent::runtime::ContainerSpec::new(
        coracle_agent::runtime::spec::Rootfs::Directory("/".into()),
        vec![],
    );
    let id: ContainerId = "bad".parse().unwrap();
    let err = runtime.create(&id, &spec).unwrap_err();
    assert!(err.to_string().contains("invalid spec"), "{err}");
    spec.process.args = vec!["true".into()];
    spec.process.rlimits = vec![coracle_agent::runtime::spec::Rlimit {
        kind: "RLIMIT_BOGUS".into(),
        soft: 1,
        hard: 1,
    }];
    let err = runtime.create(&id, &spec).unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidSpec { .. }), "{err}");
    assert!(runtime.list().unwrap().is_empty());
    assert!(matches!(
        runtime.state(&id),
        Err(RuntimeError::NotFound { .. })
    ));
}

#[test]
#[ignore = "needs root"]
fn run_bundle_with_a_missing_program_fails_naming_it_and_leaves_nothing() {
    let h = Harness::new();
    let bundle = h.dir.path().join("bundle-missing");
    std::fs::create_dir_all(&bundle).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/no-such-program"],
                    "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": h.lower},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coracle-agent"))
        .arg("run")
        .arg("--bundle")
        .arg(&bundle)
        .arg("--root")
        .arg(h.dir.path().join("state"))
        .arg("--cgroup-parent")
        .arg(&h.parent)
        .arg("missing")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("/bin/no-such-program"), "{stderr}");
    h.assert_clean();
}
