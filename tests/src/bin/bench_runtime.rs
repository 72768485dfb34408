//! Start-latency benchmark: create + start + exit + delete of `/bin/true` in one busybox
//! bundle, `coracle-agent run` beside `crun run` and `runc run`, interleaved in one run.
//! Prints median and p90 wall time, peak RSS, and the ratio of Coracle to each peer.
//!
//! Run as root (release build):
//!   cargo build --release -p coracle-agent -p coracle-tests
//!   target/release/bench_runtime [--runs N] [--agent PATH] [--baseline PATH]
//!
//! `--baseline PATH` adds another coracle-agent binary (e.g. a build of the previous commit)
//! as the peer `coracle-base`, interleaved like the others, for before/after figures.
//!
//! Fairness: all three run in the same private mount namespace, made by this program,
//! with a tmpfs over /sys/fs/cgroup/unified (crun 1.8 refuses this host's hybrid layout
//! otherwise). This program is a child subreaper, so processes a runtime leaves behind
//! (Coracle's shim, which detaches by design) are reaped here and their peak RSS counts
//! for that runtime: peak RSS is the largest `ru_maxrss` among all processes of one run,
//! including the container itself.
//!
//! Memory: a short-lived runtime's peak RSS is mostly its executable's file pages, and how
//! many get mapped depends on the page cache (folio sizes follow the disk's read-ahead; this
//! VM reads ahead 8 MB, a Pi's SD card 128 KB). So the rounds run twice: with the page cache
//! as the host has it (history dependent), then under device-like conditions — every
//! runtime's executable evicted and read back under the kernel's default 128 KB read-ahead
//! (`coracle_tests::page_cache`), restored afterwards. Measure the agent as shipped:
//! `cross/build.sh x86_64` (static, linked with the `run` path first, stripped) prints its
//! path, e.g. `--agent target/x86_64-unknown-linux-musl/device/dist/coracle-agent`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;

use coracle_tests::page_cache::{self, DeviceConditions};

struct Peer {
    name: &'static str,
    /// The coracle-agent binary for Coracle peers; `None` for crun and runc.
    agent: Option<PathBuf>,
    times: Vec<Duration>,
    rss_kb: Vec<u64>,
}

fn main() -> anyhow::Result<()> {
    let mut runs = 40usize;
    let mut agent = std::env::current_exe()?.with_file_name("coracle-agent");
    let mut baseline = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--agent" => agent = PathBuf::from(args.next().context("--agent PATH")?),
            "--baseline" => baseline = Some(PathBuf::from(args.next().context("--baseline PATH")?)),
            other => {
                bail!("unknown argument {other:?} (use --runs N, --agent PATH, --baseline PATH)")
            }
        }
    }
    if !agent.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p coracle-agent` or pass --agent",
            agent.display()
        );
    }
    private_cgroup_view()?;
    nix::sys::prctl::set_child_subreaper(true)?;

    let work = tempfile::tempdir()?;
    let bundle = make_bundle(work.path())?;
    // State on /run, where crun and runc keep theirs.
    let state = PathBuf::from(format!("/run/coracle-bench-{}", std::process::id()));
    let peer = |name, agent| Peer {
        name,
        agent,
        times: Vec::new(),
        rss_kb: Vec::new(),
    };
    let mut peers = vec![
        peer("coracle", Some(agent.clone())),
        peer("crun", None),
        peer("runc", None),
    ];
    if let Some(base) = baseline {
        peers.push(peer("coracle-base", Some(base)));
    }
    // Pass 1: the page cache as this host has it. Pass 2: device-like page cache (see
    // `coracle_tests::page_cache`): every runtime's executable evicted and read back in under
    // the kernel's default read-ahead, as on an SD card.
    measure_rounds(&mut peers, runs, &bundle, &state)?;
    print_table(&peers, runs, "host page cache as it is");
    let binaries = peers
        .iter()
        .map(|p| match &p.agent {
            Some(agent) => Ok(agent.clone()),
            None => page_cache::which(p.name),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let conditions = DeviceConditions::apply(&binaries, page_cache::DEFAULT_READ_AHEAD_KB)?;
    let host: Vec<String> = conditions
        .previous_read_ahead()
        .iter()
        .map(|(knob, kb)| format!("{kb} KB at {}", knob.display()))
        .collect();
    for peer in peers.iter_mut() {
        peer.times.clear();
        peer.rss_kb.clear();
    }
    measure_rounds(&mut peers, runs, &bundle, &state)?;
    drop(conditions);
    println!();
    print_table(
        &peers,
        runs,
        &format!(
            "device-like page cache: binaries evicted, read-ahead {} KB (host: {})",
            page_cache::DEFAULT_READ_AHEAD_KB,
            host.join(", ")
        ),
    );
    let (rss, anon) = shim_resident_kb(&agent, &bundle, &state)?;
    println!("coracle shim resident while its container runs: VmRSS {rss} kB (RssAnon {anon} kB)");
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

/// One warm-up round, then `runs` interleaved measured rounds of every peer.
fn measure_rounds(
    peers: &mut [Peer],
    runs: usize,
    bundle: &Path,
    state: &Path,
) -> anyhow::Result<()> {
    // One warm-up round (page cache, binaries), then interleaved measured rounds.
    for round in 0..=runs {
        for peer in peers.iter_mut() {
            let id = format!("bench-{}-{round}", peer.name);
            let mut cmd = match (&peer.agent, peer.name) {
                (Some(agent), _) => {
                    let mut c = Command::new(agent);
                    c.arg("run")
                        .arg("--bundle")
                        .arg(bundle)
                        .arg("--root")
                        .arg(state)
                        .arg(&id);
                    c
                }
                (None, name) => {
                    let mut c = Command::new(name);
                    c.arg("run").arg("--bundle").arg(bundle).arg(&id);
                    c
                }
            };
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            let (elapsed, rss) = measure(cmd).with_context(|| format!("{} run {id}", peer.name))?;
            if round > 0 {
                peer.times.push(elapsed);
                peer.rss_kb.push(rss);
            }
        }
    }
    Ok(())
}

/// Runs `sleep 1` in a copy of the bundle and reads the shim's VmRSS and RssAnon from /proc
/// while the container runs.
fn shim_resident_kb(agent: &Path, bundle: &Path, state: &Path) -> anyhow::Result<(u64, u64)> {
    let sleeper = bundle.with_file_name("sleeper");
    std::fs::create_dir_all(&sleeper)?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    config["root"]["path"] = serde_json::json!(bundle.join("rootfs"));
    config["process"]["args"] = serde_json::json!(["/bin/sleep", "1"]);
    std::fs::write(sleeper.join("config.json"), serde_json::to_vec(&config)?)?;
    std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin/sleep"))?;
    let mut run = Command::new(agent)
        .arg("run")
        .arg("--bundle")
        .arg(&sleeper)
        .arg("--root")
        .arg(state)
        .arg("rss")
        .spawn()?;
    let state_file = state.join("rss/state.json");
    let deadline = Instant::now() + Duration::from_secs(5);
    let shim = loop {
        let parsed: Option<serde_json::Value> = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(s) = parsed.filter(|s| s["status"] == "Running") {
            break s["shim_pid"].as_i64().context("shim_pid in state")?;
        }
        if Instant::now() > deadline {
            bail!("container for the RSS probe did not start");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Let the shim settle into its wait.
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{shim}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let result = (kb("VmRSS:"), kb("RssAnon:"));
    run.wait()?;
    while nix::sys::wait::waitpid(
        None::<nix::unistd::Pid>,
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    )
    .is_ok_and(|s| s.pid().is_some())
    {}
    Ok(result)
}

/// Spawns `cmd`, waits for it and for every orphan it left (reparented to us), and returns
/// the wall time until all are gone and the largest peak RSS among them.
fn measure(mut cmd: Command) -> anyhow::Result<(Duration, u64)> {
    let start = Instant::now();
    let child = cmd.spawn()?;
    let main_pid = child.id() as i32;
    let mut peak = 0u64;
    let mut main_status = None;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain old data that wait4 fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to a status int and an rusage for the duration of the call.
        let pid = unsafe { libc::wait4(-1, &mut status, 0, &mut usage) };
        if pid < 0 {
            break; // ECHILD: nothing of this run is left.
        }
        peak = peak.max(usage.ru_maxrss as u64);
        if pid == main_pid {
            main_status = Some(status);
        }
    }
    let elapsed = start.elapsed();
    match main_status {
        Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0 => Ok((elapsed, peak)),
        other => bail!("runtime failed: wait status {other:?}"),
    }
}

/// Own mount namespace with a tmpfs over the unified cgroup mount (see the file comment).
fn private_cgroup_view() -> anyhow::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .context("unshare mount namespace (run as root)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    if Path::new("/sys/fs/cgroup/unified").is_dir() {
        mount(
            Some("none"),
            "/sys/fs/cgroup/unified",
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )?;
    }
    Ok(())
}

/// `crun spec`'s default config running /bin/true, over a rootfs of Debian's static busybox.
fn make_bundle(dir: &Path) -> anyhow::Result<PathBuf> {
    let bundle = dir.join("bundle");
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .context("copy /bin/busybox (install busybox-static)")?;
    std::os::unix::fs::symlink("busybox", bin.join("true"))?;
    let status = Command::new("crun")
        .arg("spec")
        .arg("-b")
        .arg(&bundle)
        .status()
        .context("crun spec")?;
    if !status.success() {
        bail!("crun spec failed");
    }
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    config["process"]["terminal"] = serde_json::json!(false);
    // A cgroup namespace of its own, as every container of the agent's daemon has (and
    // containerd's default spec on cgroup v2): `crun spec` leaves it out, and a runtime
    // that honours that mounts /sys/fs/cgroup in the host's cgroup namespace, which the
    // tmpfs over the unified hierarchy (above) turns into a new cgroup2 superblock for
    // every run (6-20 ms of kernel time here), measuring that instead of the runtime.
    if let Some(namespaces) = config["linux"]["namespaces"].as_array_mut() {
        if !namespaces.iter().any(|ns| ns["type"] == "cgroup") {
            namespaces.push(serde_json::json!({ "type": "cgroup" }));
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(bundle)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn stats(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.9))
}

fn print_table(peers: &[Peer], runs: usize, conditions: &str) {
    println!("start latency: create+start+exit+delete of /bin/true, busybox bundle, {runs} interleaved runs");
    println!("({conditions})");
    println!(
        "{:<12} {:>10} {:>10} {:>14} {:>14}",
        "runtime", "median ms", "p90 ms", "peak RSS MB", "max RSS MB"
    );
    let mut rows = Vec::new();
    for p in peers {
        let (median, p90) = stats(p.times.iter().map(|d| d.as_secs_f64() * 1000.0));
        let (rss_median, _) = stats(p.rss_kb.iter().map(|&k| k as f64 / 1024.0));
        let rss_max = p.rss_kb.iter().max().copied().unwrap_or(0) as f64 / 1024.0;
        println!(
            "{:<12} {median:>10.2} {p90:>10.2} {rss_median:>14.2} {rss_max:>14.2}",
            p.name
        );
        rows.push((p.name, median, rss_median));
    }
    let (_, ours_time, ours_rss) = rows[0];
    for (name, time, rss) in &rows[1..] {
        println!(
            "coracle/{name}: time {:.2}x, peak RSS {:.2}x",
            ours_time / time,
            ours_rss / rss
        );
    }
}
