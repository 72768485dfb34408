//! `coracle-sim`: a fleet of simulated devices on real MQTT connections.
//!
//! Devices come from enrolment files (`--bootstrap-dir`, as `coracle device add` writes them)
//! or are numbered `PREFIX-N` and connect anonymously (`--devices N`, for open test brokers).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use coracle_proto::bootstrap::parse_deployment_key;
use coracle_proto::{Bootstrap, DeviceId};
use coracle_tests::sim::{Credentials, DeviceSpec, Fleet, FleetConfig, FleetStats};

/// Simulate a fleet of Coracle devices.
#[derive(Debug, Parser)]
#[command(name = "coracle-sim", version)]
struct Cli {
    /// Broker address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Number of anonymous devices named PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value_t = 100)]
    devices: usize,
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Controller deployment public key (64 hex); required without --bootstrap-dir.
    #[arg(long)]
    deployment_key: Option<String>,
    /// A folder of device bootstrap files (*.toml); overrides --devices.
    #[arg(long)]
    bootstrap_dir: Option<PathBuf>,
    /// Seconds between health samples.
    #[arg(long, default_value_t = 30)]
    health_interval: u64,
    /// Per mille of (device, generation) pairs that fail their health gate.
    #[arg(long, default_value_t = 0)]
    fail_permille: u16,
    /// Seconds over which the devices' first connects are spread.
    #[arg(long, default_value_t = 10)]
    connect_spread: u64,
    /// Seconds to run; 0 runs until interrupted.
    #[arg(long, default_value_t = 0)]
    duration: u64,
}

fn load_bootstraps(dir: &PathBuf) -> Result<(Vec<DeviceSpec>, String)> {
    let mut devices = Vec::new();
    let mut key = None;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let boot: Bootstrap =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        key.get_or_insert(boot.deployment_key.clone());
        devices.push(
            DeviceSpec::from_bootstrap(&boot)
                .with_context(|| format!("simulating {}", path.display()))?,
        );
    }
    let key = key.with_context(|| format!("no bootstrap files in {}", dir.display()))?;
    Ok((devices, key))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (host, port) = cli
        .broker
        .rsplit_once(':')
        .with_context(|| format!("--broker {:?} is not HOST:PORT", cli.broker))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in {:?}", cli.broker))?;
    let (devices, key) = match &cli.bootstrap_dir {
        Some(dir) => load_bootstraps(dir)?,
        None => {
            let key = cli
                .deployment_key
                .clone()
                .context("--deployment-key is required without --bootstrap-dir")?;
            let devices = (0..cli.devices)
                .map(|i| {
                    let id: DeviceId = format!("{}-{i}", cli.prefix).parse()?;
                    Ok(DeviceSpec {
                        id,
                        credentials: Credentials::Anonymous,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            (devices, key)
        }
    };
    let trusted = parse_deployment_key(&key).context("deployment key")?;
    let config = FleetConfig {
        broker_host: host.to_string(),
        broker_port: port,
        devices,
        trusted,
        health_interval: Duration::from_secs(cli.health_interval.max(1)),
        fail_permille: cli.fail_permille,
        connect_spread: Duration::from_secs(cli.connect_spread),
        tls_ca_pem: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let fleet = Fleet::start(config);
        let stats = fleet.stats.clone();
        let report = async {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                println!(
                    "connected {} | desired received {} | published {} ({} bytes) | connection errors {}",
                    FleetStats::get(&stats.connected),
                    FleetStats::get(&stats.desired_received),
                    FleetStats::get(&stats.published),
                    FleetStats::get(&stats.published_bytes),
                    FleetStats::get(&stats.connection_errors),
                );
            }
        };
        let until = async {
            if cli.duration == 0 {
                let _ = tokio::signal::ctrl_c().await;
            } else {
                tokio::time::sleep(Duration::from_secs(cli.duration)).await;
            }
        };
        tokio::select! {
            _ = report => {}
            _ = until => {}
        }
        fleet.stop().await;
    });
    Ok(())
}
