//! The seccomp filter from inside real containers (root only). The default allow-list
//! refuses with EPERM what Docker's default profile refuses — io_uring, AF_VSOCK sockets
//! (also with high bits the kernel drops), personality changes — and clone3 with ENOSYS,
//! while ordinary programs work: busybox, a static glibc program doing file IO, AF_INET and
//! AF_UNIX sockets, threads, fork and exec, and a Debian image serving HTTP with nginx. An
//! operator's profile lets through what it allows; `unconfined` installs no filter; exec
//! runs under the container's filter; added capabilities unlock their calls as in Docker.
//!
//! The probe (`runtime_support/seccomp_probe.c`) is compiled with `cc -static` (Debian's
//! build-essential, which `.ci/packages.txt` installs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod runtime_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use coracle_agent::runtime::init::seccomp::allowlist;
use coracle_agent::runtime::spec::{ContainerSpec, Rootfs, DEFAULT_CAPABILITIES};
use coracle_agent::runtime::{ContainerId, ExecSpec, Runtime};
use coracle_proto::seccomp::{RuleFilter, SeccompAction, SeccompProfile, SyscallRule};
use runtime_support::Harness;

const ALL_CHECKS: &str = "io_uring_setup vsock vsock_high personality clone3";

/// A harness whose rootfs has the probe at /bin/probe.
fn harness() -> Harness {
    let h = Harness::new();
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runtime_support/seccomp_probe.c");
    let out = Command::new("cc")
        .args(["-static", "-O1", "-pthread", "-o"])
        .arg(h.lower.join("bin/probe"))
        .arg(&source)
        .output()
        .expect("run cc (install build-essential)");
    assert!(
        out.status.success(),
        "cc -static failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    h
}

/// `NAME=RESULT` lines of the probe's output.
fn results(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run_probe(h: &Harness, id: &str, spec: &ContainerSpec) -> BTreeMap<String, String> {
    let (state, log) = h.run(id, spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    results(&log)
}

fn probe_spec(h: &Harness, checks: &str) -> ContainerSpec {
    h.spec(&format!("/bin/probe {checks}"))
}

fn with_caps(spec: &mut ContainerSpec, extra: &[&str]) {
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    caps.extend(extra.iter().map(|c| c.to_string()));
    spec.process.capabilities = Some(caps);
}

fn expect(got: &BTreeMap<String, String>, want: &[(&str, &str)]) {
    for (check, result) in want {
        assert_eq!(
            got.get(*check).map(String::as_str),
            Some(*result),
            "{check}: {got:?}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn the_default_filter_refuses_io_uring_vsock_and_personality_with_eperm() {
    let h = harness();
    let got = run_probe(&h, "deny", &probe_spec(&h, ALL_CHECKS));
    expect(
        &got,
        &[
            ("io_uring_setup", "E1"),
            ("vsock", "E1"),
            ("vsock_high", "E1"),
            ("personality", "E1"),
            ("clone3", "E38"),
        ],
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn ordinary_programs_work_under_the_default_filter() {
    let h = harness();
    let script = "/bin/probe workload; echo a > /tmp/a && cat /tmp/a; ls / > /dev/null; \
                  sh -c 'exit 3'; echo rc=$?; sleep 0.1 & wait; ps > /dev/null && echo busybox=ok";
    let (state, log) = h.run("ordinary", &h.spec(script));
    assert_eq!(state.exit_code, Some(0), "{log}");
    expect(
        &results(&log),
        &[("workload", "ok"), ("rc", "3"), ("busybox", "ok")],
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn a_debian_image_serves_http_with_nginx_under_the_default_filter() {
    let h = Harness::new();
    let tar = coracle_tests::e2e::debian_image::debian_rootfs(&["nginx-light"])
        .expect("Debian rootfs with nginx (built once with mmdebstrap, then cached)");
    let root = h.dir.path().join("debian");
    std::fs::create_dir_all(&root).unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let upper = h.dir.path().join("debian-upper");
    let work = h.dir.path().join("debian-work");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    // nginx (master as root, workers as www-data: setuid, epoll, accept4, sendfile), bash
    // talking HTTP over /dev/tcp, perl, dpkg: the calls a Debian workload makes.
    let script = r#"set -e
cat > /tmp/nginx.conf <<'EOF'
pid /tmp/nginx.pid;
error_log /tmp/error.log;
events {}
http { access_log off; server { listen 127.0.0.1:8080; root /var/www/html; index index.nginx-debian.html; } }
EOF
nginx -c /tmp/nginx.conf
for i in $(seq 50); do [ -s /tmp/nginx.pid ] && break; sleep 0.1; done
exec 3<>/dev/tcp/127.0.0.1/8080
printf 'GET / HTTP/1.0\r\n\r\n' >&3
echo "http=$(head -1 <&3 | tr -d '\r')"
nginx -c /tmp/nginx.conf -s quit
perl -e 'print "perl=ok\n"'
cat /tmp/error.log >&2
echo "dpkg=$(dpkg-query -W -f='${Status}' nginx-light)"
"#;
    let mut spec = ContainerSpec::new(
        Rootfs::Overlay {
            lower: vec![root],
            upper,
            work,
        },
        vec!["/bin/bash".into(), "-c".into(), script.into()],
    );
    spec.stdio = h.spec("true").stdio;
    let (state, log) = h.run("debian", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    expect(
        &results(&log),
        &[
            ("http", "HTTP/1.1 200 OK"),
            ("perl", "ok"),
            ("dpkg", "install ok installed"),
        ],
    );
    h.assert_clean();
}

/// The default profile plus the rules an operator added.
fn profile_allowing(names: &[&str]) -> SeccompProfile {
    let mut profile = allowlist::default_profile();
    profile.rules.push(SyscallRule {
        names: names.iter().map(|n| n.to_string()).collect(),
        action: SeccompAction::Allow,
        args: Vec::new(),
        includes: RuleFilter::default(),
        excludes: RuleFilter::default(),
    });
    profile
}

#[test]
#[ignore = "needs root"]
fn an_operator_profile_lets_through_what_it_allows_and_nothing_else() {
    let h = harness();
    let mut spec = probe_spec(&h, ALL_CHECKS);
    spec.seccomp_profile = Some(profile_allowing(&["personality", "socket"]));
    let got = run_probe(&h, "custom", &spec);
    expect(
        &got,
        &[
            ("personality", "ok"),
            ("io_uring_setup", "E1"),
            ("clone3", "E38"),
        ],
    );
    // Allowed by the filter; whether the kernel has vsock is the host's business.
    assert_ne!(got["vsock"], "E1", "{got:?}");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn unconfined_installs_no_filter() {
    let h = harness();
    let mut spec = h.spec(&format!(
        "/bin/probe {ALL_CHECKS}; grep Seccomp: /proc/self/status"
    ));
    spec.seccomp = false;
    let (state, log) = h.run("unconfined", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    let got = results(&log);
    expect(&got, &[("io_uring_setup", "ok"), ("personality", "ok")]);
    assert!(!["E1", "E38"].contains(&got["clone3"].as_str()), "{got:?}");
    assert!(log.contains("Seccomp:\t0"), "{log}");
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn added_capabilities_unlock_their_calls_and_nothing_more() {
    let h = harness();
    let mut spec = probe_spec(&h, ALL_CHECKS);
    with_caps(&mut spec, &["CAP_SYS_ADMIN"]);
    let got = run_probe(&h, "admin", &spec);
    // clone3 is allowed with CAP_SYS_ADMIN: the NULL argument is the kernel's to refuse.
    assert!(!["E1", "E38"].contains(&got["clone3"].as_str()), "{got:?}");
    expect(
        &got,
        &[
            ("io_uring_setup", "E1"),
            ("vsock", "E1"),
            ("personality", "E1"),
        ],
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn exec_runs_under_the_containers_filter() {
    let h = harness();
    let exec_probe = |id: &ContainerId| {
        let spec = ExecSpec::new(
            vec!["/bin/probe".into(), "personality".into()],
            Duration::from_secs(20),
        );
        h.runtime.exec(id, &spec).unwrap().output
    };
    for (name, profile, want) in [
        ("exec-default", None, "personality=E1"),
        (
            "exec-custom",
            Some(profile_allowing(&["personality"])),
            "personality=ok",
        ),
    ] {
        let id: ContainerId = name.parse().unwrap();
        let mut spec = h.spec("exec sleep 1000");
        spec.seccomp_profile = profile;
        h.runtime.create(&id, &spec).unwrap();
        h.runtime.start(&id).unwrap();
        assert_eq!(exec_probe(&id).trim(), want, "{name}");
        h.kill_and_delete(&id);
    }
    h.assert_clean();
}
