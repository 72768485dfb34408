//! End-to-end, issue 16: compose keys a real agent honours, each checked from inside the
//! container — `sysctls` (IPC and, on the service's own network, `net.*`), `ulimits`,
//! `oom_score_adj`, `hostname`, a `:r` device (loop-control: not one of the nodes every
//! container may use) that opens for reading but not for writing (allowed by the deploy
//! policy), and `cap_add` for a non-root `user:` (its health check sees the capability in
//! its effective set). The probe writes what it sees to a named volume the test reads.
//! Root only (network namespaces, cgroups); takes turns on the test network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::image::{build_layout, busybox_files};
use coracle_tests::e2e::wait_until;
use coracle_tests::netns::TestNetwork;

/// The probe's script, for `busybox sh` (the image has no applet links: every tool is
/// called through /bin/busybox).
const PROBE: &str = "ulimit -n > /out/nofile; ulimit -Hn > /out/nofile_hard; \
    /bin/busybox cat /proc/sys/kernel/shmmni > /out/shmmni; \
    /bin/busybox cat /proc/sys/net/core/somaxconn > /out/somaxconn; \
    /bin/busybox cat /proc/self/oom_score_adj > /out/oom; /bin/busybox hostname > /out/hostname; \
    if /bin/busybox true > /dev/loop-control; then echo opened > /out/dev_write; else echo refused > /out/dev_write; fi; \
    if /bin/busybox true < /dev/loop-control; then echo opened > /out/dev_read; else echo refused > /out/dev_read; fi; \
    /bin/busybox touch /out/done; exec /bin/busybox sleep 3600";

fn app(dir: &Path) -> std::path::PathBuf {
    let compose = format!(
        r#"services:
  probe:
    image: hello:1
    network_mode: none
    command: ["/bin/busybox", "sh", "-c", "{PROBE}"]
    volumes: ["out:/out"]
    devices: ["/dev/loop-control:/dev/loop-control:r"]
    sysctls:
      kernel.shmmni: "1234"
      net.core.somaxconn: "777"
    ulimits:
      nofile: {{soft: 1111, hard: 2222}}
    oom_score_adj: 200
    hostname: probe-1
  nonroot:
    image: hello:1
    user: "1000"
    cap_add: [NET_BIND_SERVICE]
    command: ["/bin/busybox", "sleep", "3600"]
    healthcheck:
      test: ["CMD", "/bin/busybox", "grep", "-q", "CapEff:.*0000000000000400", "/proc/self/status"]
      interval: 1s
      retries: 3
"#
    );
    let path = dir.join("app.yml");
    std::fs::write(&path, compose).unwrap();
    path
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root"]
fn every_tuning_key_is_seen_from_inside_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let policy = "[policy]\ndevices = [\"/dev/loop-control\"]\n";
    let controller =
        Controller::start_with_config(dir.path(), TestNetwork::GATEWAY, policy).unwrap();
    let files = busybox_files("keys", vec![]).unwrap();
    let image = build_layout(&dir.path().join("img"), "1", &files).unwrap();
    controller.push(&image.source, "hello:1").unwrap();
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-keys", dir.path()).unwrap();
    let agent = Agent::start("pi-keys", &host, dir.path(), &bootstrap).unwrap();
    controller.deploy(&app(dir.path()), "pi-keys").unwrap();

    let out = agent.data_dir.join("volumes/out");
    wait_until("the probe's results", Duration::from_secs(90), || {
        if out.join("done").exists() {
            Ok(())
        } else {
            let device = controller.device("pi-keys").map_err(|e| e.to_string())?;
            Err(format!(
                "{device} (events: {:?})",
                controller.cli(&["device", "events", "pi-keys"])
            ))
        }
    })
    .unwrap();
    assert_eq!(read(&out, "nofile"), "1111");
    assert_eq!(read(&out, "nofile_hard"), "2222");
    assert_eq!(read(&out, "shmmni"), "1234");
    assert_eq!(read(&out, "somaxconn"), "777");
    assert_eq!(read(&out, "oom"), "200");
    assert_eq!(read(&out, "hostname"), "probe-1");
    assert_eq!(
        read(&out, "dev_write"),
        "refused",
        "a :r device opened for writing"
    );
    assert_eq!(
        read(&out, "dev_read"),
        "opened",
        "a :r device refused reading"
    );

    // The non-root service's health check passes only with NET_BIND_SERVICE effective.
    wait_until("nonroot healthy", Duration::from_secs(60), || {
        let d = controller.device("pi-keys").map_err(|e| e.to_string())?;
        let healthy = d["reported"]["services"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "nonroot" && s["health"] == "Healthy")
        });
        if healthy {
            Ok(())
        } else {
            Err(d.to_string())
        }
    })
    .unwrap();
}
