//! End-to-end, issue 19 item 2: remote access over the device's own MQTT connection, with
//! the real controller, its embedded broker and a real agent (root, network namespaces).
//! `coracle logs --timestamps/--since/-f` (follow sees a line the container writes after
//! it started), `coracle exec` without a terminal (stdin piped in, exit code passed on)
//! and with one (`tty` names the container's `/dev/pts/N`, `stty size` the size asked),
//! named errors, the policy's `exec` grant per tag (a deploy token is refused until the
//! device has the tag) and the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::{push_hello_versions, wait_applied, Settled};
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::{binary, wait_until};
use coracle_tests::netns::TestNetwork;

/// The container prints `first`, then `poked` each time `/www/poke` appears.
const APP: &str = r#"services:
  web:
    image: hello:1
    command: ["/bin/busybox", "sh", "-c", "echo first; while true; do if [ -e /www/poke ]; then echo poked; /bin/busybox rm /www/poke; fi; /bin/busybox sleep 0.1; done"]
    restart: always
"#;

const POLICY: &str = "[[policy.allow]]\ntag = \"lab=yes\"\nexec = true\n";

/// `coracle ARGS` with `stdin` and extra environment; the whole output, whatever the status.
fn coracle(controller: &Controller, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    // The data dir from the environment: after `--` an option would be the command's.
    let mut child = Command::new(binary("coracle").unwrap())
        .args(args)
        .env("CORACLE_DATA_DIR", &controller.data_dir)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `coracle logs -f`, its lines on a channel; killed when dropped (Ctrl-C).
struct Follow {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follow {
    fn start(controller: &Controller, args: &[&str]) -> Self {
        let mut child = Command::new(binary("coracle").unwrap())
            .args(args)
            .arg("--data-dir")
            .arg(&controller.data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    fn wait_for(&self, wanted: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return line,
                Ok(_) => {}
                Err(err) => panic!("no line with {wanted:?} from logs -f: {err}"),
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs root"]
fn logs_stream_and_exec_run_over_the_devices_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller =
        Controller::start_with_config(dir.path(), TestNetwork::GATEWAY, POLICY).unwrap();
    push_hello_versions(&controller, dir.path(), &["1"]).unwrap();
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-x", dir.path()).unwrap();
    let _agent = Agent::start("pi-x", &host, dir.path(), &bootstrap).unwrap();
    let app = dir.path().join("app.yml");
    std::fs::write(&app, APP).unwrap();
    controller.deploy(&app, "pi-x").unwrap();
    wait_applied(&controller, "pi-x", 1, Settled::Running).unwrap();
    wait_until("the first line in the log", Duration::from_secs(30), || {
        let out = controller
            .cli(&["logs", "pi-x", "web"])
            .map_err(|e| e.to_string())?;
        out.contains("first").then_some(()).ok_or(out)
    })
    .unwrap();

    // --timestamps: each line with its device time, RFC 3339 with nanoseconds.
    let out = controller
        .cli(&["logs", "pi-x", "web", "--timestamps"])
        .unwrap();
    let line = out
        .lines()
        .find(|l| l.ends_with(" first"))
        .unwrap_or_else(|| panic!("{out}"));
    let stamp = line.split(' ').next().unwrap();
    assert!(
        stamp.len() == 30 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{line}"
    );
    // The one-shot tail shows the text alone.
    let plain = controller.cli(&["logs", "pi-x", "web"]).unwrap();
    assert!(plain.lines().any(|l| l == "first"), "{plain}");

    // --since: a duration back from now includes it, a later time leaves it out.
    let recent = controller
        .cli(&["logs", "pi-x", "web", "--since", "1h"])
        .unwrap();
    assert!(recent.contains("first"), "{recent}");
    let later = controller
        .cli(&["logs", "pi-x", "web", "--since", "2099-01-01T00:00:00Z"])
        .unwrap();
    assert!(!later.contains("first"), "{later}");

    // -f: the history, then a line the container writes after the follow started.
    let follow = Follow::start(&controller, &["logs", "-f", "pi-x", "web"]);
    follow.wait_for("first", Duration::from_secs(20));
    let started = Instant::now();
    let poke = coracle(
        &controller,
        &[
            "exec",
            "pi-x",
            "web",
            "--",
            "/bin/busybox",
            "touch",
            "/www/poke",
        ],
        b"",
        &[],
    );
    assert!(poke.status.success(), "{}", text(&poke.stderr));
    follow.wait_for("poked", Duration::from_secs(20));
    println!("exec + follow round trip: {:?}", started.elapsed());
    drop(follow);

    // exec without a terminal: stdin piped in, stdout and stderr apart, the exit code.
    let started = Instant::now();
    let out = coracle(
        &controller,
        &[
            "exec",
            "-i",
            "pi-x",
            "web",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            "/bin/busybox cat; echo to-stderr >&2; exit 3",
        ],
        b"hello from stdin\n",
        &[],
    );
    println!("exec without a terminal: {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello from stdin\n");
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "{}",
        text(&out.stderr)
    );

    // exec with a terminal: the container's own pty, of the size asked.
    let out = coracle(
        &controller,
        &[
            "exec",
            "-t",
            "pi-x",
            "web",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            "/bin/busybox tty; /bin/busybox stty size",
        ],
        b"",
        &[("LINES", "33"), ("COLUMNS", "101")],
    );
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown} {}", text(&out.stderr));
    assert!(shown.contains("/dev/pts/"), "{shown}");
    assert!(shown.contains("33 101"), "{shown}");

    // Round trip of one line through `cat` in the container: stdin → controller → broker →
    // agent → process → back. A figure for the note, not a threshold.
    let mut cat = Command::new(binary("coracle").unwrap())
        .args(["exec", "-i", "pi-x", "web", "--", "/bin/busybox", "cat"])
        .env("CORACLE_DATA_DIR", &controller.data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_cat = cat.stdin.take().unwrap();
    let mut from_cat = BufReader::new(cat.stdout.take().unwrap());
    let mut rounds = Vec::new();
    for i in 0..20 {
        let sent = Instant::now();
        writeln!(to_cat, "ping {i}").unwrap();
        let mut echoed = String::new();
        from_cat.read_line(&mut echoed).unwrap();
        assert_eq!(echoed, format!("ping {i}\n"));
        rounds.push(sent.elapsed());
    }
    drop(to_cat);
    assert!(cat.wait().unwrap().success());
    rounds.sort();
    println!(
        "exec stdin→stdout round trip over the broker: median {:?}, max {:?}",
        rounds[rounds.len() / 2],
        rounds[rounds.len() - 1]
    );

    // -it with stdin that is not a terminal: the lines go to the remote shell's terminal.
    let out = coracle(
        &controller,
        &["exec", "-it", "pi-x", "web", "--", "/bin/busybox", "sh"],
        b"echo from-the-terminal\nexit 5\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("from-the-terminal"),
        "{}",
        text(&out.stdout)
    );

    // Sessions end when their client goes away: with the device's 8 sessions taken by
    // followers, a ninth is refused; once they are killed (Ctrl-C), the next one runs long
    // before the device's own 20 s client-gone limit could have freed the slots.
    let followers: Vec<Follow> = (0..8)
        .map(|_| Follow::start(&controller, &["logs", "-f", "pi-x", "web"]))
        .collect();
    for follower in &followers {
        follower.wait_for("first", Duration::from_secs(20));
    }
    let out = coracle(
        &controller,
        &["exec", "pi-x", "web", "--", "/bin/busybox", "true"],
        b"",
        &[],
    );
    assert!(
        text(&out.stderr).contains("already runs 8 sessions"),
        "{}",
        text(&out.stderr)
    );
    drop(followers);
    let freed = Instant::now();
    wait_until("a free session slot", Duration::from_secs(10), || {
        let out = coracle(
            &controller,
            &["exec", "pi-x", "web", "--", "/bin/busybox", "true"],
            b"",
            &[],
        );
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| text(&out.stderr))
    })
    .unwrap();
    println!(
        "sessions of killed clients closed within {:?}",
        freed.elapsed()
    );

    // Named errors: no such service, no such program.
    let out = coracle(
        &controller,
        &["exec", "pi-x", "nope", "--", "true"],
        b"",
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("service nope on device pi-x not found"),
        "{}",
        text(&out.stderr)
    );
    let out = coracle(
        &controller,
        &["exec", "pi-x", "web", "--", "/no/such"],
        b"",
        &[],
    );
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));

    // Policy: a deploy token may not exec until the device has the granting tag.
    let token = controller
        .cli(&["token", "create", "--scope", "deploy", "--name", "ops"])
        .unwrap();
    let token = token.trim();
    let as_ops = ["exec", "pi-x", "web", "--", "/bin/busybox", "true"];
    let ops = [("CORACLE_TOKEN", token)];
    let out = coracle(&controller, &as_ops, b"", &ops);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("may not exec into device pi-x"),
        "{}",
        text(&out.stderr)
    );
    controller
        .cli(&["device", "tag", "pi-x", "lab=yes"])
        .unwrap();
    let out = coracle(&controller, &as_ops, b"", &ops);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Audit: who, where, what.
    let audit = controller.cli(&["audit"]).unwrap();
    assert!(audit.contains("service.exec.denied"), "{audit}");
    assert!(
        audit.lines().any(|l| l.contains("service.exec")
            && l.contains("token:ops")
            && l.contains("pi-x/web")),
        "{audit}"
    );
    assert!(audit.contains("/bin/busybox cat"), "{audit}");
}
