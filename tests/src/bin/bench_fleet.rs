//! Fleet-scale benchmark: N simulated devices on real MQTT connections against a broker,
//! a signed desired state rolled out to all of them, measured end to end.
//!
//! `cargo run --release -p coracle-tests --bin bench_fleet -- 1000 5000 10000`
//!
//! Prints, per fleet size: time until every device is online, time from publishing the
//! rollout to every device reporting the new generation, broker RSS (current and peak),
//! bytes per device, and the simulator's own peak RSS. The broker today is Debian's
//! Mosquitto, the external-broker path; the controller's embedded broker joins the table
//! when it exists.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use coracle_proto::*;
use coracle_tests::mosquitto::Mosquitto;
use coracle_tests::sim::{Credentials, DeviceSpec, Fleet, FleetConfig};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn raise_fd_limit(wanted: u64) -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard).context("raising RLIMIT_NOFILE")?;
    Ok(())
}

struct Row {
    devices: usize,
    online: Duration,
    rollout: Duration,
    broker_rss_kib: u64,
    broker_peak_kib: u64,
}

async fn run(n: usize) -> Result<Row> {
    let broker = Mosquitto::start("allow_anonymous true\nmax_queued_messages 0")?;
    let key = SigningKey::from_bytes(&[21; 32]);
    let ids: Vec<DeviceId> = (0..n)
        .map(|i| format!("bench-{i}").parse())
        .collect::<Result<_, _>>()?;

    let mut opts = MqttOptions::new("bench-controller", "127.0.0.1", broker.port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (controller, mut events) = AsyncClient::new(opts, 16_384);
    controller
        .subscribe(TopicKind::Online.for_all_devices(), QoS::AtLeastOnce)
        .await?;
    controller
        .subscribe(TopicKind::Reported.for_all_devices(), QoS::AtLeastOnce)
        .await?;

    let started = Instant::now();
    let fleet = Fleet::start(FleetConfig {
        broker_host: "127.0.0.1".into(),
        broker_port: broker.port,
        devices: ids
            .iter()
            .map(|id| DeviceSpec {
                id: id.clone(),
                credentials: Credentials::Anonymous,
            })
            .collect(),
        trusted: key.verifying_key(),
        health_interval: Duration::from_secs(30),
        fail_permille: 0,
        connect_spread: Duration::ZERO,
        tls_ca_pem: None,
    });

    let generation = Generation(2);
    let mut online = HashSet::new();
    let mut applied = HashSet::new();
    let mut online_at = None;
    let mut rollout_started = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while applied.len() < n {
        if Instant::now() > deadline {
            bail!(
                "{n} devices: only {} online, {} applied after 300 s",
                online.len(),
                applied.len()
            );
        }
        let polled = tokio::time::timeout(Duration::from_secs(5), events.poll()).await;
        let Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) = polled else {
            continue;
        };
        let Ok((device, kind)) = topic::parse(&p.topic) else {
            continue;
        };
        match kind {
            TopicKind::Online if decode::<Presence>(&p.payload).ok() == Some(Presence::Online) => {
                online.insert(device);
            }
            TopicKind::Reported
                if decode::<ReportedState>(&p.payload).is_ok_and(|r| r.applied == generation) =>
            {
                applied.insert(device);
            }
            _ => {}
        }
        if online.len() == n && rollout_started.is_none() {
            online_at = Some(started.elapsed());
            rollout_started = Some(Instant::now());
            // Publishing from a separate task keeps this loop draining the reports.
            let (controller, ids, key) = (controller.clone(), ids.clone(), key.clone());
            tokio::spawn(async move {
                for id in ids {
                    let mut state = samples::desired_with_services(2);
                    state.device = id.clone();
                    state.generation = generation;
                    let body = encode(&Signed::sign(&state, &key));
                    let _ = controller
                        .publish(
                            TopicKind::Desired.for_device(&id),
                            QoS::AtLeastOnce,
                            true,
                            body,
                        )
                        .await;
                }
            });
        }
    }
    let rollout = rollout_started.map(|t| t.elapsed()).unwrap_or_default();
    let row = Row {
        devices: n,
        online: online_at.unwrap_or_default(),
        rollout,
        broker_rss_kib: status_kib(broker.pid(), "VmRSS:"),
        broker_peak_kib: status_kib(broker.pid(), "VmHWM:"),
    };
    fleet.stop().await;
    Ok(row)
}

fn main() -> Result<()> {
    let sizes = coracle_tests::sim::fleet_sizes_from_args(1000)?;
    raise_fd_limit(65_536)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "{:>8} {:>12} {:>12} {:>14} {:>14} {:>10} {:>14}",
        "devices",
        "online (s)",
        "rollout (s)",
        "broker RSS MB",
        "broker peak MB",
        "KB/device",
        "sim peak MB"
    );
    for n in sizes {
        let row = runtime.block_on(run(n))?;
        let sim_peak = status_kib(std::process::id(), "VmHWM:");
        println!(
            "{:>8} {:>12.2} {:>12.2} {:>14.1} {:>14.1} {:>10.2} {:>14.1}",
            row.devices,
            row.online.as_secs_f64(),
            row.rollout.as_secs_f64(),
            row.broker_rss_kib as f64 / 1024.0,
            row.broker_peak_kib as f64 / 1024.0,
            row.broker_rss_kib as f64 / row.devices as f64,
            sim_peak as f64 / 1024.0,
        );
    }
    println!("broker: Debian mosquitto (external-broker path); controller: not yet built");
    Ok(())
}
