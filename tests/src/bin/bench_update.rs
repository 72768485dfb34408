//! Update latency benchmark (issue 15): the time from `coracle deploy` of a small update —
//! a page and 100 bytes in the middle of a 4 MB file changed, which reaches the device as
//! a delta — to the device reporting the new generation up with its web service healthy,
//! and to its commit. A real controller and a real agent in a test network namespace; the
//! app is the two-service compose app of the end-to-end tests (busybox `httpd` as PID 1,
//! which ignores SIGTERM, and a worker that depends on it being healthy).
//!
//! Run as root after building the binaries:
//!   cargo build -p coracle-controller -p coracle-agent -p coracle-tests
//!   target/debug/bench_update [--runs N] [--baseline DIR]
//!
//! Two apps are measured: `plain`, as a user brings it (PID 1 ignores SIGTERM, so each
//! stop waits out Docker's 10 s grace period; with `start-first`, the default for these
//! bridged services, only the commit waits for that, as the old containers are retired
//! after the new ones took over), and `init`, the same with compose `init: true` (the
//! agent's init forwards SIGTERM, so stops are immediate).
//! `--baseline DIR` runs the plain app too, interleaved, with the `coracle` and
//! `coracle-agent` binaries found in DIR (a build of an older commit, which knows no
//! `init`), as the peer `coracle-base`; the table ends with the ratios to it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::image::{build_layout, busybox_files, noise, LayerFile};
use coracle_tests::netns::TestNetwork;
use serde_json::Value;

const WEB_PORT: u16 = 8080;

/// A measured configuration: binaries (None: this build's) and the app's flavour.
struct Peer {
    name: String,
    bin_dir: Option<PathBuf>,
    init: bool,
}

/// One measured update.
#[derive(Debug, Clone, Copy)]
struct Sample {
    healthy: Duration,
    committed: Duration,
}

fn main() -> anyhow::Result<()> {
    let mut runs = 3usize;
    let mut peers = vec![
        Peer {
            name: "coracle, plain app".into(),
            bin_dir: None,
            init: false,
        },
        Peer {
            name: "coracle, init: true".into(),
            bin_dir: None,
            init: true,
        },
    ];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--baseline" => {
                let dir = PathBuf::from(args.next().context("--baseline DIR")?);
                peers.push(Peer {
                    name: "coracle-base, plain app".into(),
                    bin_dir: Some(dir),
                    init: false,
                });
            }
            other => bail!("unknown argument {other:?} (use --runs N, --baseline DIR)"),
        }
    }
    let mut results: Vec<Vec<Sample>> = vec![Vec::new(); peers.len()];
    for run in 0..runs {
        for (index, peer) in peers.iter().enumerate() {
            match &peer.bin_dir {
                Some(dir) => std::env::set_var("CORACLE_BIN_DIR", dir),
                None => std::env::remove_var("CORACLE_BIN_DIR"),
            }
            let name = &peer.name;
            let sample = measure_once(peer.init).with_context(|| format!("{name}, run {run}"))?;
            eprintln!(
                "{name} run {run}: healthy after {:.2} s, committed after {:.2} s",
                sample.healthy.as_secs_f64(),
                sample.committed.as_secs_f64()
            );
            results[index].push(sample);
        }
    }
    print_table(&peers, &results);
    Ok(())
}

fn print_table(peers: &[Peer], results: &[Vec<Sample>]) {
    let medians: Vec<(f64, f64)> = results
        .iter()
        .map(|samples| {
            (
                median(samples.iter().map(|s| s.healthy)),
                median(samples.iter().map(|s| s.committed)),
            )
        })
        .collect();
    println!();
    println!(
        "| peer | runs | deploy → new generation healthy (median) | deploy → committed (median) |"
    );
    println!("|---|---|---|---|");
    for (peer, ((healthy, committed), samples)) in peers.iter().zip(medians.iter().zip(results)) {
        println!(
            "| {} | {} | {healthy:.2} s | {committed:.2} s |",
            peer.name,
            samples.len()
        );
    }
    let base = peers
        .iter()
        .position(|p| p.bin_dir.is_some())
        .map(|i| medians[i]);
    for (peer, ours) in peers
        .iter()
        .zip(&medians)
        .filter(|(p, _)| p.bin_dir.is_none())
    {
        if let Some(base) = base {
            println!(
                "ratio {} / coracle-base: healthy {:.2}×, committed {:.2}×",
                peer.name,
                ours.0 / base.0,
                ours.1 / base.1
            );
        }
    }
}

fn median(values: impl Iterator<Item = Duration>) -> f64 {
    let mut secs: Vec<f64> = values.map(|d| d.as_secs_f64()).collect();
    secs.sort_by(f64::total_cmp);
    secs.get(secs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One controller, one device: deploy version 1, wait until committed, then time the
/// update to version 2.
fn measure_once(init: bool) -> anyhow::Result<Sample> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut network = TestNetwork::new().context("test network")?;
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY)?;
    let data_v1 = noise(4 << 20, 5);
    let mut data_v2 = data_v1.clone();
    data_v2[2 << 20..(2 << 20) + 100].fill(0x5a);
    for (tag, page, data) in [("1", "hello v1", data_v1), ("2", "hello v2", data_v2)] {
        let extra = vec![LayerFile::new("data/blob", data, 0o644)];
        let files = busybox_files(page, extra)?;
        let image = build_layout(&dir.path().join(format!("image-{tag}")), tag, &files)?;
        controller.push(&image.source, &format!("hello:{tag}"))?;
    }
    let host = network.add_host().context("test host")?;
    let bootstrap = controller.enrol("pi-bench", dir.path())?;
    let _agent = Agent::start("pi-bench", &host, dir.path(), &bootstrap)?;
    controller.deploy(&app(dir.path(), "1", init)?, "pi-bench")?;
    poll(&controller, Duration::from_secs(120), |r| committed(r, 1))?;

    let compose = app(dir.path(), "2", init)?;
    let started = Instant::now();
    controller.deploy(&compose, "pi-bench")?;
    poll(&controller, Duration::from_secs(120), |r| healthy_at(r, 2))?;
    let healthy = started.elapsed();
    poll(&controller, Duration::from_secs(120), |r| committed(r, 2))?;
    Ok(Sample {
        healthy,
        committed: started.elapsed(),
    })
}

/// Polls the device's reported state every 50 ms until `done` holds.
fn poll(
    controller: &Controller,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let detail = controller.device("pi-bench")?;
        if done(&detail["reported"]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out; last report {detail}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn committed(reported: &Value, generation: u64) -> bool {
    reported["applied"] == generation
}

/// The new generation's containers are up (its gate runs, or it committed) and web is
/// healthy.
fn healthy_at(reported: &Value, generation: u64) -> bool {
    let verifying = reported["update"]["Verifying"]["generation"] == generation;
    let services = reported["services"].as_array().cloned().unwrap_or_default();
    let web_healthy = services
        .iter()
        .any(|s| s["name"] == "web" && s["health"] == "Healthy");
    (verifying || committed(reported, generation)) && web_healthy
}

fn app(dir: &Path, tag: &str, init: bool) -> anyhow::Result<PathBuf> {
    let init = if init { "\n    init: true" } else { "" };
    let compose = format!(
        r#"services:
  web:
    image: hello:{tag}
    command: ["/bin/busybox", "httpd", "-f", "-p", "0.0.0.0:{WEB_PORT}", "-h", "/www"]
    ports: ["{WEB_PORT}:{WEB_PORT}"]
    restart: always{init}
    healthcheck:
      test: ["HTTP", "{WEB_PORT}", "/"]
      interval: 1s
      timeout: 1s
      retries: 3
  worker:
    image: hello:{tag}
    command: ["/bin/busybox", "sh", "-c", "while true; do /bin/busybox wget -q -O /tmp/page http://web:{WEB_PORT}/; sleep 1; done"]
    restart: always{init}
    depends_on:
      web:
        condition: service_healthy
"#
    );
    let path = dir.join(format!("app-{tag}.yml"));
    std::fs::write(&path, compose).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}
