//! Measures the daemon's own footprint: the transport and supervisor (over the in-memory
//! engine of the tests, so only the agent's memory is counted, not containers' shims)
//! connected to a real Mosquitto over mutual TLS, idle with 0 and then 5 services.
//! Deploys go through `mosquitto_pub`, so no second MQTT client lives in this process.
//!
//! `cargo run --release -p coracle-agent --example footprint`
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use coracle_agent::config::AgentConfig;
use coracle_agent::health::VitalsReader;
use coracle_agent::state::StateStore;
use coracle_agent::supervisor::{Supervisor, SupervisorOptions};
use coracle_agent::transport::{self, Link, TransportSettings};
use coracle_proto::{
    encode, samples, DesiredState, Digest, Generation, ImageRef, ServiceSpec, Signed, SigningKey,
    TopicKind,
};
use support::fake_engine::FakeEngine;
use support::{bootstrap_mtls, Mosquitto, Pki};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn desired(n: usize) -> DesiredState {
    DesiredState {
        registries: Vec::new(),
        device: samples::device(),
        generation: Generation(n as u64 + 1),
        services: (0..n)
            .map(|i| {
                ServiceSpec::new(
                    format!("svc-{i}").parse().unwrap(),
                    ImageRef {
                        registry: "controller.local".into(),
                        repository: format!("app/svc-{i}"),
                        digest: Digest::from_bytes([i as u8 + 1; 32]),
                    },
                )
            })
            .collect(),
    }
}

fn publish_with_cli(broker: &Mosquitto, pki: &Pki, state: &DesiredState, key: &SigningKey) {
    let dir = broker.path();
    let (cert, key_pem) = pki.client("controller");
    std::fs::write(dir.join("ctl.pem"), cert).unwrap();
    std::fs::write(dir.join("ctl.key"), key_pem).unwrap();
    std::fs::write(dir.join("desired.bin"), encode(&Signed::sign(state, key))).unwrap();
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.mtls_port.to_string(),
            "-q",
            "1",
            "-r",
        ])
        .arg("--cafile")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join("ctl.pem"))
        .arg("--key")
        .arg(dir.join("ctl.key"))
        .args(["-t", &TopicKind::Desired.for_device(&samples::device())])
        .arg("-f")
        .arg(dir.join("desired.bin"))
        .status()
        .unwrap();
    assert!(status.success());
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let baseline = rss_kib();
    runtime.block_on(async {
        let pki = Pki::new();
        let broker = Mosquitto::start(&pki);
        let key = SigningKey::from_bytes(&[7; 32]);
        let bootstrap = bootstrap_mtls(&pki, &broker, samples::device().as_str(), &key);
        let config = AgentConfig::default();
        let (handle, driver, inbox) =
            transport::transport(TransportSettings::from_bootstrap(&bootstrap, &config).unwrap());
        let mut link = inbox.link.clone();
        tokio::spawn(driver.run());
        let data = tempfile::tempdir().unwrap();
        let store = StateStore::new(data.path());
        let engine = Arc::new(FakeEngine::default());
        let supervisor = Supervisor::new(
            samples::device(),
            store.load().unwrap().0,
            store.clone(),
            engine.clone(),
            handle,
            VitalsReader::new(data.path()),
            SupervisorOptions {
                tick: Duration::from_secs(1),
                health_interval: config.health_interval(),
                stop_grace: Duration::from_secs(1),
                log_tail_max_bytes: config.limits.log_tail_max_bytes,
                disk_reserve_mib: config.limits.disk_reserve_mib,
            },
        );
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (_control_tx, control_rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(supervisor.run(inbox, control_rx, stop_rx));
        link.wait_for(|l| matches!(l, Link::Up { .. }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await; // idle: a few ticks
        let idle0 = rss_kib();
        publish_with_cli(&broker, &pki, &desired(5), &key);
        for _ in 0..100 {
            if store
                .peek()
                .unwrap()
                .is_some_and(|s| s.committed_generation() == Generation(6))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            engine.inner.lock().unwrap().containers.len(),
            5,
            "5 services deployed"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let idle5 = rss_kib();
        println!("| state | VmRSS KiB |");
        println!("|---|---|");
        println!("| process before runtime start | {baseline} |");
        println!("| agent connected (mTLS), 0 services, idle | {idle0} |");
        println!("| agent connected, 5 services committed, idle | {idle5} |");
    });
}
