//! An MQTT client with the controller's own broker account, for tests that play a broker-side
//! attacker: it can publish on any device's `desired` topic, so what stops a forged, unsigned,
//! misaddressed or replayed desired state is the agent's verification alone.

use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// A connected injector; its network loop runs on its own thread.
pub struct Injector {
    client: Client,
    publishes: Receiver<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").finish_non_exhaustive()
    }
}

impl Injector {
    /// Connects to the broker at `addr` as `user` with `password`.
    pub fn connect(addr: SocketAddr, user: &str, password: &str) -> anyhow::Result<Self> {
        let mut options = MqttOptions::new("e2e-injector", addr.ip().to_string(), addr.port());
        options.set_credentials(user, password);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(options, 16);
        let (tx, publishes) = channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Ok(Self { client, publishes })
    }

    /// Subscribes to `topic` and returns the first message on it (the retained one, if any).
    pub fn first_message(&self, topic: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .context("subscribe")?;
        self.next_message(topic, timeout)
    }

    /// Subscribes to `topic`; its messages are then taken with `next_message`.
    pub fn subscribe(&self, topic: &str) -> anyhow::Result<()> {
        self.client
            .subscribe(topic, QoS::AtMostOnce)
            .with_context(|| format!("subscribe to {topic}"))
    }

    /// The next message on `topic` (others are skipped), within `timeout`.
    pub fn next_message(&self, topic: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.publishes.recv_timeout(left) {
                Ok((t, body)) if t == topic => return Ok(body),
                Ok(_) => continue,
                Err(_) => bail!("no message on {topic} within {timeout:?}"),
            }
        }
    }

    /// Publishes `body` on `topic` (QoS 1, not retained).
    pub fn publish(&self, topic: &str, body: Vec<u8>) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .with_context(|| format!("publish on {topic}"))
    }
}
