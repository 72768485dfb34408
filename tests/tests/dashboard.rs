//! The web dashboard in a real browser: the real `coracle serve`, simulated devices speaking
//! the real protocol over MQTT to its embedded broker (they also answer log and restart
//! commands), two pushed image versions, and Debian's headless chromium driven by
//! `playwright-core` (`tests/dashboard/dashboard.mjs`, installed with `npm ci`).
//!
//! The browser script asks this test for things only the test can do (start a device while
//! the fleet page is open, report a device's pull progress) with `need:` lines on stdout and waits for `ok` on stdin.
//! Screenshots of every page, desktop and phone, go to `<target>/dashboard-screenshots`.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use coracle_proto::{encode, Bootstrap, Generation, PullProgress, TopicKind};
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::image::{build_layout, busybox_files, LayerFile};
use coracle_tests::e2e::injector::Injector;
use coracle_tests::e2e::wait_until;
use coracle_tests::sim::{Fleet, FleetConfig};

const APP: &str = "services:\n  web:\n    image: hello:1\n    healthcheck:\n      test: [\"HTTP\", \"8080\", \"/\"]\n  \
                   worker:\n    image: hello:1\n    command: [\"/bin/busybox\", \"sleep\", \"3600\"]\n";

/// Devices present from the start (name, tag); `pi-late` connects while the browser looks.
const DEVICES: [(&str, &str); 4] = [
    ("pi-berlin-1", "site=berlin"),
    ("pi-berlin-2", "site=berlin"),
    ("pi-paris-1", "site=paris"),
    ("pi-late", "site=paris"),
];

fn line_after<'a>(output: &'a str, prefix: &str) -> anyhow::Result<&'a str> {
    output
        .lines()
        .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest.trim()))
        .with_context(|| format!("no {prefix:?} line in the controller output"))
}

/// A fleet of the given devices on the controller's plain MQTT listener.
fn start_fleet(broker: &str, bootstraps: &[Bootstrap]) -> anyhow::Result<Fleet> {
    let (host, port) = broker.rsplit_once(':').context("broker address")?;
    let port = port.parse().context("broker port")?;
    let config = FleetConfig::from_bootstraps(host, port, bootstraps, Duration::from_secs(2))?;
    Ok(Fleet::start(config))
}

fn screenshot_dir() -> anyhow::Result<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe()?;
            // target/debug/deps/<test> → target
            exe.ancestors()
                .nth(3)
                .context("test binary outside a target dir")?
                .to_path_buf()
        }
    };
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// playwright-core needs Node 20 or newer; say so plainly instead of failing inside it.
fn check_node() -> anyhow::Result<()> {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .context("run node (Node.js 20 or newer with npm is needed for the browser test)")?;
    let version = String::from_utf8_lossy(&out.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("node --version said {version:?}"))?;
    if major < 20 {
        bail!(
            "node {} is too old for playwright-core: 20 or newer is needed",
            version.trim()
        );
    }
    Ok(())
}

fn npm_ci(dir: &Path) -> anyhow::Result<()> {
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .output()
        .context("run npm (Debian package npm)")?;
    if !out.status.success() {
        bail!("npm ci failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Publishes, as the device would, that it is `done` bytes into the 5 MB delta of the second
/// layer (of two) of service `web` for a far-off generation; waits until the API shows it,
/// so the browser's check does not race the broker (progress goes at QoS 0).
fn publish_progress(
    controller: &Controller,
    injector: &mut Option<Injector>,
    device: &str,
    done: u64,
) -> anyhow::Result<()> {
    if injector.is_none() {
        let password = controller.secret("controller-mqtt.password")?;
        *injector = Some(Injector::connect(
            controller.broker,
            "coracle-controller",
            &password,
        )?);
    }
    let injector = injector.as_ref().context("injector")?;
    let progress = PullProgress {
        generation: Generation(1_000),
        service: "web".parse()?,
        layer: 1,
        layers: 2,
        done_bytes: done,
        total_bytes: 5_000_000,
        delta: true,
        stored: false,
    };
    let topic = TopicKind::Progress.for_device(&device.parse()?);
    wait_until(
        "the API to show the pull progress",
        Duration::from_secs(20),
        || {
            injector
                .publish(&topic, encode(&progress))
                .map_err(|e| e.to_string())?;
            let shown = controller.device(device).map_err(|e| e.to_string())?;
            match shown["pull_progress"]["done_bytes"].as_u64() {
                Some(d) if d == done => Ok(()),
                _ => Err(shown["pull_progress"].to_string()),
            }
        },
    )
}

/// Deploys the app, waits for it, then runs the browser script and answers its requests.
fn browser_run(
    controller: &Controller,
    dir: &Path,
    broker: &str,
    api: &str,
    late: Bootstrap,
    handle: &tokio::runtime::Handle,
) -> anyhow::Result<PathBuf> {
    let compose = dir.join("compose.yml");
    std::fs::write(&compose, APP)?;
    for device in ["pi-berlin-1", "pi-berlin-2"] {
        controller.deploy(&compose, device)?;
    }
    wait_until(
        "pi-berlin-1 to apply the app",
        Duration::from_secs(30),
        || {
            let shown = controller
                .device("pi-berlin-1")
                .map_err(|e| e.to_string())?;
            match shown["device"]["applied_generation"].as_u64() {
                Some(g) if g > 0 => Ok(()),
                _ => Err(shown.to_string()),
            }
        },
    )?;

    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    check_node()?;
    npm_ci(&scripts)?;
    let shots = screenshot_dir()?;
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut node = Command::new("node")
        .arg(scripts.join("dashboard.mjs"))
        .env("DASHBOARD_URL", api)
        .env("ADMIN_TOKEN", controller.admin_token()?)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", chromium)
        .current_dir(&scripts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start node")?;
    let mut to_node = node.stdin.take().context("node stdin")?;
    let from_node = BufReader::new(node.stdout.take().context("node stdout")?);
    let mut late_fleet = None;
    let mut injector = None;
    for line in from_node.lines() {
        let line = line.context("read node output")?;
        println!("browser: {line}");
        if line == "need:start pi-late" {
            let _entered = handle.enter();
            late_fleet = Some(start_fleet(broker, std::slice::from_ref(&late))?);
            writeln!(to_node, "ok").context("answer node")?;
        }
        if let Some(rest) = line.strip_prefix("need:progress ") {
            let (device, done) = rest.split_once(' ').context("need:progress DEVICE BYTES")?;
            publish_progress(controller, &mut injector, device, done.parse()?)?;
            writeln!(to_node, "ok").context("answer node")?;
        }
    }
    let status = node.wait().context("wait for node")?;
    drop(late_fleet);
    if !status.success() {
        bail!(
            "the browser scenarios failed ({status}); controller output:\n{}",
            controller.output()
        );
    }
    Ok(shots)
}

#[tokio::test]
#[ignore = "needs chromium and npm: run by .ci/test"]
async fn dashboard_works_in_headless_chromium() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = Controller::start(dir.path(), Ipv4Addr::LOCALHOST)?;
    let output = controller.output();
    let broker = line_after(&output, "broker listening on ")?.to_string();
    // https://…: the e2e controller's API serves TLS, so the session cookie is Secure.
    let api = controller.api_url()?;

    // Two versions of an image, so the images page has something to compare.
    for (tag, extra) in [
        ("1", vec![]),
        ("2", vec![LayerFile::new("www/v2.txt", "two", 0o644)]),
    ] {
        let files = busybox_files(&format!("hello {tag}"), extra)?;
        let image = build_layout(&dir.path().join(format!("image-{tag}")), tag, &files)?;
        controller.push(&image.source, &format!("hello:{tag}"))?;
    }

    let mut bootstraps = Vec::new();
    for (name, tag) in DEVICES {
        let path = dir.path().join(format!("{name}.toml"));
        controller.cli(&[
            "device",
            "add",
            name,
            "--tag",
            tag,
            "-o",
            &path.display().to_string(),
        ])?;
        let text = std::fs::read_to_string(&path)?;
        bootstraps.push(toml::from_str::<Bootstrap>(&text).context("parse bootstrap")?);
    }
    let late = bootstraps.pop().context("the late device")?;
    let fleet = start_fleet(&broker, &bootstraps)?;

    // Everything below blocks; it runs on a blocking thread so this runtime keeps the
    // simulated devices going meanwhile.
    let handle = tokio::runtime::Handle::current();
    let workdir = dir.path().to_path_buf();
    let shots = tokio::task::spawn_blocking(move || {
        browser_run(&controller, &workdir, &broker, &api, late, &handle)
    })
    .await
    .context("browser run task")??;
    println!("screenshots in {}", shots.display());
    fleet.stop().await;
    Ok(())
}
