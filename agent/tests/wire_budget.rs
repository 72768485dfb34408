//! Measures the idle traffic of the transport on the wire: the agent talks to a real
//! Mosquitto through a byte-counting TCP proxy, publishes health samples, and the test
//! prints the bytes per sample (TLS + MQTT) and per day at the default interval. The
//! budget (DESIGN.md: under 200 KB/day) is a byte count, not a timing, so it is asserted.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coracle_agent::config::AgentConfig;
use coracle_agent::health::VitalsReader;
use coracle_agent::transport::{self, Link, TransportSettings};
use coracle_proto::{encode, samples, SigningKey};
use support::{bootstrap_mtls, Controller, Mosquitto, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes both ways through the proxy (TLS records; TCP/IP headers not included).
#[derive(Default)]
struct Counter {
    up: AtomicU64,
    down: AtomicU64,
}

impl Counter {
    fn total(&self) -> u64 {
        self.up.load(Ordering::SeqCst) + self.down.load(Ordering::SeqCst)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<Counter>,
    up: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let counter = if up { &count.up } else { &count.down };
        counter.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn proxy(listener: TcpListener, broker_port: u16, count: Arc<Counter>) {
    let (client, _) = listener.accept().await.unwrap();
    let broker = TcpStream::connect(("127.0.0.1", broker_port))
        .await
        .unwrap();
    let (cr, cw) = client.into_split();
    let (br, bw) = broker.into_split();
    tokio::spawn(pump(cr, bw, count.clone(), true));
    tokio::spawn(pump(br, cw, count, false));
}

#[tokio::test(flavor = "current_thread")]
async fn idle_traffic_per_day_stays_under_budget() {
    let pki = Pki::new();
    let broker = Mosquitto::start(&pki);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut controller =
        Controller::connect(&pki, broker.mtls_port, &["coracle/v1/+/health"]).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let count = Arc::new(Counter::default());
    tokio::spawn(proxy(listener, broker.mtls_port, count.clone()));

    let mut bootstrap = bootstrap_mtls(&pki, &broker, samples::device().as_str(), &key);
    bootstrap.broker_url = format!("mqtts://127.0.0.1:{proxy_port}");
    let config = AgentConfig::default();
    let (handle, driver, mut inbox) =
        transport::transport(TransportSettings::from_bootstrap(&bootstrap, &config).unwrap());
    tokio::spawn(driver.run());
    tokio::time::timeout(
        Duration::from_secs(20),
        inbox.link.wait_for(|l| matches!(l, Link::Up { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    let after_connect = count.total();

    // Real vitals of this machine plus two containers, as a device would send them.
    let mut vitals = VitalsReader::new(std::path::Path::new("/"));
    let mut sample = vitals.sample();
    sample.containers = samples::health_sample().containers;
    let body_len = encode(&sample).len() as u64;
    const N: u64 = 50;
    for _ in 0..N {
        assert!(handle.publish_health(&sample));
        controller.next_on("/health").await;
    }
    let per_sample = (count.total() - after_connect) as f64 / N as f64;

    let topic_len = coracle_proto::TopicKind::Health
        .for_device(&samples::device())
        .len() as u64;
    // PUBLISH QoS 0: fixed header (1 + 1 length byte) + topic length (2) + topic + body.
    let mqtt_len = 2 + 2 + topic_len + body_len;
    let interval_s = u64::from(config.health_interval_s);
    let keep_alive_s = u64::from(config.mqtt.keep_alive_s);
    // PINGREQ + PINGRESP: 2 bytes each in a TLS 1.3 record (5 header + 1 type + 16 tag).
    let ping_bytes = 2 * (2 + 22);
    let per_day_samples = per_sample * (86_400 / interval_s) as f64;
    let per_day_pings = (ping_bytes * (86_400 / keep_alive_s)) as f64;
    // TCP/IPv4 with timestamps: 52 bytes per segment, the data segment and its ACK.
    let per_day_tcp = (2 * 52 * (86_400 / interval_s + 2 * 86_400 / keep_alive_s)) as f64;
    println!("| item | bytes |");
    println!("|---|---|");
    println!("| health body (postcard, 2 containers) | {body_len} |");
    println!("| MQTT PUBLISH QoS 0 | {mqtt_len} |");
    println!("| measured TLS+MQTT per sample (proxy) | {per_sample:.1} |");
    println!(
        "| samples per day at {interval_s} s | {:.0} |",
        per_day_samples
    );
    println!(
        "| pings per day at keep-alive {keep_alive_s} s | {:.0} |",
        per_day_pings
    );
    println!(
        "| total TLS+MQTT per day | {:.0} |",
        per_day_samples + per_day_pings
    );
    println!(
        "| + TCP/IPv4 headers and ACKs per day | {:.0} |",
        per_day_tcp
    );
    println!("| connect (TLS handshake + CONNECT + SUBSCRIBE + Online) | {after_connect} |");
    assert!(body_len < 100, "health sample encodes in {body_len} bytes");
    assert!(
        per_day_samples + per_day_pings < 200_000.0,
        "idle traffic {} B/day exceeds 200 KB",
        per_day_samples + per_day_pings
    );
}
