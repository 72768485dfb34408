//! Exec into running containers (root only): the exec'd process is inside the container's
//! pid, uts and mount namespaces, its cgroups, with its user and capabilities; exit codes
//! and output come back; a timeout kills the exec'd process and not the container; exec
//! into a container that does not run is a clear error. Nothing remains afterwards.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod runtime_support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use caps::Capability;
use coracle_agent::runtime::spec::User;
use coracle_agent::runtime::{ContainerId, ExecOutcome, ExecSpec, Runtime, RuntimeError, Status};
use runtime_support::Harness;

/// Creates and starts `id` running `sleep 1000` as its pid 1 (the spec from `adjust`).
fn running(
    h: &Harness,
    id: &str,
    adjust: impl FnOnce(&mut coracle_agent::runtime::ContainerSpec),
) -> ContainerId {
    let id: ContainerId = id.parse().unwrap();
    let mut spec = h.spec("exec sleep 1000");
    adjust(&mut spec);
    // A file only the container's rootfs has (its upper dir), before it starts.
    fs::write(
        Harness::upper_of(&spec).join("only-in-container"),
        "inside\n",
    )
    .unwrap();
    h.runtime.create(&id, &spec).unwrap();
    h.runtime.start(&id).unwrap();
    assert_eq!(h.runtime.state(&id).unwrap().status, Status::Running);
    id
}

fn exec(h: &Harness, id: &ContainerId, script: &str) -> ExecOutcome {
    let spec = ExecSpec::new(
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        Duration::from_secs(20),
    );
    h.runtime.exec(id, &spec).unwrap()
}

fn status_field(text: &str, field: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in {text}"))
        .trim_start_matches(field)
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root"]
fn exec_sees_the_containers_pid_namespace_hostname_rootfs_and_cgroups() {
    let h = Harness::new();
    let id = running(&h, "inside", |s| s.hostname = Some("exec-box".into()));
    let out = exec(
        &h,
        &id,
        "tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; cat /only-in-container; \
         echo pid=$$; ls -d /proc/[0-9]* | wc -l; \
         if [ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ]; then echo same-cgroups; fi",
    );
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(!out.timed_out);
    let lines: Vec<&str> = out.output.lines().collect();
    assert_eq!(lines[0], "sleep 1000 ", "pid 1 is the container's: {out:?}");
    assert_eq!(lines[1], "exec-box");
    assert_eq!(lines[2], "inside");
    let pid: u32 = lines[3].trim_start_matches("pid=").parse().unwrap();
    assert!(
        (2..10).contains(&pid),
        "a small pid of the container's namespace: {pid}"
    );
    // sleep (pid 1), the exec'd sh and what it runs: nothing of the host.
    let procs: u32 = lines[4].trim().parse().unwrap();
    assert!(procs <= 4, "{procs} processes visible: {out:?}");
    assert_eq!(lines[5], "same-cgroups", "{out:?}");
    assert!(!Path::new("/only-in-container").exists());
    h.kill_and_delete(&id);
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn exec_runs_as_the_containers_user_with_its_capabilities_and_filter() {
    let h = Harness::new();
    let want = Capability::CAP_KILL.bitmask() | Capability::CAP_NET_BIND_SERVICE.bitmask();
    // As root with two capabilities, and as nobody (whose exec keeps none: no ambient set,
    // like Docker), the exec'd process's credentials are exactly those of the container's.
    for (name, user) in [
        ("caps-root", User::Name("root".into())),
        ("caps-nobody", User::Name("nobody".into())),
    ] {
        let id = running(&h, name, |s| {
            s.process.user = user.clone();
            s.process.capabilities = Some(vec!["CAP_KILL".into(), "CAP_NET_BIND_SERVICE".into()]);
        });
        let out = exec(
            &h,
            &id,
            "id -u; cat /proc/self/status; echo ---; cat /proc/1/status",
        );
        assert_eq!(out.exit_code, 0, "{out:?}");
        let (mine, init) = out.output.split_once("---\n").unwrap();
        let hex = |field| u64::from_str_radix(&status_field(mine, field), 16).unwrap();
        assert_eq!(hex("CapBnd:"), want);
        if name == "caps-root" {
            assert_eq!(mine.lines().next(), Some("0"));
            assert_eq!(hex("CapEff:"), want);
        } else {
            assert_eq!(mine.lines().next(), Some("65534"));
            assert_eq!(hex("CapEff:"), 0);
        }
        for field in [
            "CapEff:",
            "CapPrm:",
            "CapInh:",
            "CapBnd:",
            "CapAmb:",
            "NoNewPrivs:",
            "Seccomp:",
            "Uid:",
            "Gid:",
            "Groups:",
        ] {
            assert_eq!(
                status_field(mine, field),
                status_field(init, field),
                "{field}: exec {mine} init {init}"
            );
        }
        assert_eq!(status_field(mine, "Seccomp:"), "2");
        assert_eq!(status_field(mine, "NoNewPrivs:"), "1");
        h.kill_and_delete(&id);
    }
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn exit_codes_and_the_output_tail_are_relayed() {
    let h = Harness::new();
    let id = running(&h, "codes", |s| s.process.env.push("GREETING=hi".into()));
    let out = exec(&h, &id, "echo out $GREETING; echo err >&2; exit 3");
    assert_eq!((out.exit_code, out.output.as_str()), (3, "out hi\nerr\n"));
    assert_eq!(exec(&h, &id, "kill -9 $$").exit_code, 137);
    // CMD form: argv run directly, looked up in the container's PATH.
    let direct = h
        .runtime
        .exec(
            &id,
            &ExecSpec::new(
                vec!["cat".into(), "/only-in-container".into()],
                Duration::from_secs(5),
            ),
        )
        .unwrap();
    assert_eq!((direct.exit_code, direct.output.as_str()), (0, "inside\n"));
    // Long output: the last 4 KiB are kept.
    let long = exec(
        &h,
        &id,
        "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
    );
    assert_eq!(
        long.output.len(),
        coracle_agent::runtime::exec::OUTPUT_LIMIT
    );
    assert!(
        long.output.ends_with("line-1999\n"),
        "{}",
        &long.output[4000..]
    );
    // A program the container does not have is an error naming it.
    let err = h
        .runtime
        .exec(
            &id,
            &ExecSpec::new(vec!["no-such-tool".into()], Duration::from_secs(5)),
        )
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ExecFailed { .. }), "{err}");
    assert!(err.to_string().contains("no-such-tool"), "{err}");
    assert_eq!(h.runtime.state(&id).unwrap().status, Status::Running);
    h.kill_and_delete(&id);
    h.assert_clean();
}

/// Pids in `cgroup.procs` of `dir` whose command line is `cmdline` (NULs as spaces).
fn pids_running(dir: &Path, cmdline: &str) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ") == cmdline)
                .unwrap_or(false)
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn a_timeout_kills_the_exec_in_the_containers_cgroups_but_not_the_container() {
    let h = Harness::new();
    let id = running(&h, "slow", |_| {});
    let state = h.runtime.state(&id).unwrap();
    assert!(!state.cgroup_paths.is_empty());
    let runtime = h.runtime.clone();
    let exec_id = id.clone();
    let started = Instant::now();
    let slow = std::thread::spawn(move || {
        // A child of the shell too: the whole process group goes at the timeout.
        let spec = ExecSpec::new(
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "sleep 999 & sleep 998; echo never".into(),
            ],
            Duration::from_secs(2),
        );
        runtime.exec(&exec_id, &spec).unwrap()
    });
    // While it runs, both sleeps are in every one of the container's cgroups.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        seen = state.cgroup_paths.iter().all(|dir| {
            pids_running(dir, "sleep 999 ").len() == 1 && pids_running(dir, "sleep 998 ").len() == 1
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen,
        "the exec'd processes were not in all of {:?}",
        state.cgroup_paths
    );
    let out = slow.join().unwrap();
    let took = started.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, 137);
    assert!(!out.output.contains("never"));
    assert!(took < Duration::from_secs(4), "took {took:?}");
    for dir in &state.cgroup_paths {
        assert!(
            pids_running(dir, "sleep 999 ").is_empty(),
            "background child left"
        );
        assert!(pids_running(dir, "sleep 998 ").is_empty());
    }
    let after = h.runtime.state(&id).unwrap();
    assert_eq!(after.status, Status::Running);
    assert_eq!(after.pid, state.pid);
    // And it still answers.
    assert_eq!(exec(&h, &id, "true").exit_code, 0);
    h.kill_and_delete(&id);
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn exec_into_a_container_that_does_not_run_is_a_clear_error() {
    let h = Harness::new();
    let spec = ExecSpec::new(vec!["true".into()], Duration::from_secs(5));
    let missing: ContainerId = "ghost".parse().unwrap();
    let err = h.runtime.exec(&missing, &spec).unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err}");
    assert_eq!(err.to_string(), "container ghost not found");

    let id: ContainerId = "later".parse().unwrap();
    h.runtime.create(&id, &h.spec("exec sleep 1000")).unwrap();
    let err = h.runtime.exec(&id, &spec).unwrap_err();
    assert_eq!(err.to_string(), "container later is Created, not running");
    h.runtime.start(&id).unwrap();
    h.runtime.stop(&id, Duration::from_secs(2)).unwrap();
    let err = h.runtime.exec(&id, &spec).unwrap_err();
    assert_eq!(err.to_string(), "container later is Stopped, not running");
    h.runtime.delete(&id).unwrap();
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn exec_enters_the_containers_user_namespace_also_with_the_host_network() {
    use coracle_agent::runtime::spec::{IdMapping, Network};
    let h = Harness::new();
    for (name, network) in [
        ("userns-none", Network::None),
        ("userns-host", Network::Host),
    ] {
        let id = running(&h, name, |s| {
            s.user_namespace = Some(IdMapping::root_at(300_000, 65_536));
            s.network = network.clone();
        });
        let out = exec(
            &h,
            &id,
            "id -u; cat /proc/self/uid_map; touch /made-by-exec; \
             if [ \"$(readlink /proc/self/ns/net)\" = \"$(readlink /proc/1/ns/net)\" ]; then echo same-net; fi; \
             ls /sys/class/net | wc -l",
        );
        assert_eq!(out.exit_code, 0, "{out:?}");
        let words: Vec<&str> = out.output.split_whitespace().collect();
        assert_eq!(
            &words[..5],
            ["0", "0", "300000", "65536", "same-net"],
            "{out:?}"
        );
        let interfaces: u32 = words[5].parse().unwrap();
        match network {
            Network::None => assert_eq!(interfaces, 1, "only lo: {out:?}"),
            _ => assert!(interfaces >= 1, "{out:?}"),
        }
        // What the exec wrote (in this container's upper dir; the file is removed again
        // so the next round finds only its own) belongs on the host to the mapped root.
        let made: Vec<_> = fs::read_dir(h.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path().join("made-by-exec"))
            .filter(|p| p.exists())
            .collect();
        assert_eq!(made.len(), 1, "{made:?}");
        let owner = std::os::unix::fs::MetadataExt::uid(&fs::metadata(&made[0]).unwrap());
        assert_eq!(owner, 300_000, "{name}");
        fs::remove_file(&made[0]).unwrap();
        h.kill_and_delete(&id);
    }
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn a_container_stopped_during_an_exec_ends_it_and_leaves_nothing() {
    let h = Harness::new();
    let id = running(&h, "stopping", |_| {});
    let runtime = h.runtime.clone();
    let exec_id = id.clone();
    let started = Instant::now();
    let slow = std::thread::spawn(move || {
        let spec = ExecSpec::new(vec!["sleep".into(), "100".into()], Duration::from_secs(30));
        runtime.exec(&exec_id, &spec)
    });
    std::thread::sleep(Duration::from_millis(500));
    // The pid namespace goes with its init, and the exec'd process with it.
    h.runtime
        .stop(&id, Duration::from_secs(2))
        .expect("container stops");
    let out = slow.join().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "{out:?}");
    assert_eq!((out.exit_code, out.timed_out), (137, false), "{out:?}");
    h.runtime.delete(&id).unwrap();
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn exec_joins_a_cgroup_v2_container_cgroup() {
    let h = Harness::with_cgroup_root(runtime_support::cgroup2_mount());
    let id = running(&h, "v2-exec", |_| {});
    let state = h.runtime.state(&id).unwrap();
    assert_eq!(state.cgroup_paths.len(), 1, "{state:?}");
    let runtime = h.runtime.clone();
    let exec_id = id.clone();
    let slow = std::thread::spawn(move || {
        let spec = ExecSpec::new(
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "sleep 997; echo never".into(),
            ],
            Duration::from_secs(1),
        );
        runtime.exec(&exec_id, &spec).unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        seen = pids_running(&state.cgroup_paths[0], "sleep 997 ").len() == 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen,
        "the exec'd process is not in {:?}",
        state.cgroup_paths[0]
    );
    let out = slow.join().unwrap();
    assert!(out.timed_out && out.output.is_empty(), "{out:?}");
    let same = exec(
        &h,
        &id,
        "[ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ] && echo same",
    );
    assert_eq!(same.output, "same\n", "{same:?}");
    h.kill_and_delete(&id);
    h.assert_clean();
}
