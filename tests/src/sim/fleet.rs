//! Runs many simulated devices over real MQTT connections, one task each, on one tokio runtime.
//! Each device behaves on the wire like an agent: last will, retained online/reported, QoS
//! per topic, health at its interval, reconnect with backoff and jitter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coracle_proto::{
    encode, Bootstrap, BrokerAuth, DeviceId, Generation, Presence, TopicKind, VerifyingKey,
};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::device::{Outgoing, SimDevice};

/// How one simulated device logs in.
#[derive(Debug, Clone)]
pub enum Credentials {
    Anonymous,
    Password { username: String, password: String },
}

/// One device to simulate.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub id: DeviceId,
    pub credentials: Credentials,
}

/// Why a bootstrap file cannot be simulated.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "device {device} logs in with a client certificate, which the simulator does not speak"
    )]
    ClientCert { device: DeviceId },
    #[error("bootstrap of device {device} pins an invalid deployment key")]
    Key {
        device: DeviceId,
        #[source]
        source: coracle_proto::bootstrap::DeploymentKeyError,
    },
    #[error("no bootstrap files")]
    None,
}

impl DeviceSpec {
    /// The device a bootstrap file enrols: its id and broker password.
    pub fn from_bootstrap(boot: &Bootstrap) -> Result<Self, BootstrapError> {
        match &boot.auth {
            BrokerAuth::Password { username, password } => Ok(Self {
                id: boot.device.clone(),
                credentials: Credentials::Password {
                    username: username.clone(),
                    password: password.clone(),
                },
            }),
            BrokerAuth::ClientCert { .. } => Err(BootstrapError::ClientCert {
                device: boot.device.clone(),
            }),
        }
    }
}

impl FleetConfig {
    /// The devices of `boots` on the broker at `host:port`, trusting the deployment key the
    /// first pins; a health sample every `health_interval`, none failing, all connecting
    /// at once.
    pub fn from_bootstraps(
        host: &str,
        port: u16,
        boots: &[Bootstrap],
        health_interval: Duration,
    ) -> Result<Self, BootstrapError> {
        let first = boots.first().ok_or(BootstrapError::None)?;
        let trusted = first
            .deployment_key()
            .map_err(|source| BootstrapError::Key {
                device: first.device.clone(),
                source,
            })?;
        Ok(Self {
            broker_host: host.to_string(),
            broker_port: port,
            devices: boots
                .iter()
                .map(DeviceSpec::from_bootstrap)
                .collect::<Result<_, _>>()?,
            trusted,
            health_interval,
            fail_permille: 0,
            connect_spread: Duration::ZERO,
            tls_ca_pem: None,
        })
    }
}

/// The fleet's shape and behaviour.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub broker_host: String,
    pub broker_port: u16,
    pub devices: Vec<DeviceSpec>,
    pub trusted: VerifyingKey,
    pub health_interval: Duration,
    pub fail_permille: u16,
    /// Spreads the initial connects over this long, as a real fleet's boots would be.
    pub connect_spread: Duration,
    /// MQTT over TLS, trusting only this PEM bundle (a bootstrap file's `ca_pem`); plain
    /// TCP when `None`.
    pub tls_ca_pem: Option<String>,
}

/// Counters the fleet updates as it runs.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub connected: AtomicU64,
    pub connects: AtomicU64,
    pub desired_received: AtomicU64,
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
    pub connection_errors: AtomicU64,
    /// Per device, the highest generation it received and verified.
    pub received: Mutex<BTreeMap<DeviceId, Generation>>,
}

impl FleetStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The highest generation `device` received and verified, if any.
    pub fn received(&self, device: &DeviceId) -> Option<Generation> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device)
            .copied()
    }

    fn record_received(&self, device: &DeviceId, generation: Option<Generation>) {
        if let Some(generation) = generation {
            self.received
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(device.clone(), generation);
        }
    }

    /// A counter's current value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A running fleet; dropping it (or `stop`) ends every device task.
#[derive(Debug)]
pub struct Fleet {
    pub stats: Arc<FleetStats>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Fleet {
    /// Starts every device's task on the current runtime.
    pub fn start(config: FleetConfig) -> Self {
        let stats = Arc::new(FleetStats::default());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let count = config.devices.len().max(1) as u32;
        let tls = config.tls_ca_pem.as_deref().map(tls_config);
        for (i, spec) in config.devices.iter().cloned().enumerate() {
            let delay = config.connect_spread / count * i as u32;
            let device = SimDevice::new(spec.id.clone(), config.trusted, config.fail_permille);
            let run = DeviceRun {
                host: config.broker_host.clone(),
                port: config.broker_port,
                credentials: spec.credentials,
                tls: tls.clone(),
                health_interval: config.health_interval,
                stats: stats.clone(),
                stopped: stopped.clone(),
            };
            tasks.spawn(async move {
                tokio::time::sleep(delay).await;
                run.run(device).await;
            });
        }
        Self { stats, stop, tasks }
    }

    /// Ends every device (their last wills fire at the broker) and waits for the tasks.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

struct DeviceRun {
    host: String,
    port: u16,
    credentials: Credentials,
    tls: Option<Arc<rustls::ClientConfig>>,
    health_interval: Duration,
    stats: Arc<FleetStats>,
    stopped: watch::Receiver<bool>,
}

/// A TLS client config trusting the certificates of `ca_pem` (unparsable ones skipped: the
/// handshake then fails and is counted as a connection error).
fn tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports rustls's default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn qos(kind: TopicKind) -> QoS {
    if kind.qos() == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// 0..250 ms, different per device, so a fleet does not reconnect in lockstep.
fn jitter_ms(id: &DeviceId) -> u64 {
    id.as_str()
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % 250
}

impl DeviceRun {
    fn options(&self, id: &DeviceId) -> MqttOptions {
        let mut opts = MqttOptions::new(id.as_str(), &self.host, self.port);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_clean_session(true);
        opts.set_max_packet_size(
            coracle_proto::codec::MAX_BODY_BYTES + 1024,
            coracle_proto::codec::MAX_BODY_BYTES + 1024,
        );
        opts.set_last_will(LastWill::new(
            TopicKind::Online.for_device(id),
            encode(&Presence::Offline),
            QoS::AtLeastOnce,
            true,
        ));
        if let Credentials::Password { username, password } = &self.credentials {
            opts.set_credentials(username, password);
        }
        if let Some(tls) = &self.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        opts
    }

    async fn send(&self, client: &AsyncClient, id: &DeviceId, out: Outgoing) {
        let len = out.body.len() as u64;
        let sent = client
            .publish(
                out.kind.for_device(id),
                qos(out.kind),
                out.kind.retained(),
                out.body,
            )
            .await;
        if sent.is_ok() {
            FleetStats::add(&self.stats.published, 1);
            FleetStats::add(&self.stats.published_bytes, len);
        }
    }

    async fn run(mut self, mut device: SimDevice) {
        let id = device.id().clone();
        let (client, mut events): (AsyncClient, EventLoop) =
            AsyncClient::new(self.options(&id), 64);
        let started = tokio::time::Instant::now();
        let mut health = tokio::time::interval(self.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::from_millis(250);
        let mut connected = false;
        loop {
            tokio::select! {
                _ = self.stopped.changed() => break,
                _ = health.tick(), if connected => {
                    let uptime = started.elapsed().as_secs() as u32;
                    self.send(&client, &id, device.health(uptime)).await;
                }
                polled = events.poll() => match polled {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        backoff = Duration::from_millis(250);
                        FleetStats::add(&self.stats.connected, 1);
                        FleetStats::add(&self.stats.connects, 1);
                        let _ = client.subscribe(TopicKind::Desired.for_device(&id), QoS::AtLeastOnce).await;
                        let _ = client.subscribe(TopicKind::Cmd.for_device(&id), QoS::AtLeastOnce).await;
                        let _ = client.subscribe(TopicKind::Session.for_device(&id), QoS::AtLeastOnce).await;
                        self.send(&client, &id, Outgoing { kind: TopicKind::Online, body: encode(&Presence::Online) }).await;
                        self.send(&client, &id, device.reported()).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let outgoing = if publish.topic == TopicKind::Cmd.for_device(&id) {
                            device.on_command(&publish.payload, unix_now())
                        } else if publish.topic == TopicKind::Session.for_device(&id) {
                            device.on_session(&publish.payload)
                        } else {
                            FleetStats::add(&self.stats.desired_received, 1);
                            let replies = device.on_desired(&publish.payload, unix_now());
                            self.stats.record_received(&id, device.received());
                            replies
                        };
                        for out in outgoing {
                            self.send(&client, &id, out).await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if connected {
                            connected = false;
                            self.stats.connected.fetch_sub(1, Ordering::Relaxed);
                        }
                        FleetStats::add(&self.stats.connection_errors, 1);
                        // rumqttc retries at once on the next poll: back off with jitter.
                        let jitter = Duration::from_millis(jitter_ms(&id));
                        tokio::select! {
                            _ = tokio::time::sleep(backoff + jitter) => {}
                            _ = self.stopped.changed() => break,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
        if connected {
            self.stats.connected.fetch_sub(1, Ordering::Relaxed);
        }
        // The connection is dropped without DISCONNECT, so the broker fires the last will,
        // as it would when a device loses power.
    }
}
