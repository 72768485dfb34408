//! `ControllerClient`: the controller's own MQTT connection (to the embedded or an external
//! broker). It publishes desired states retained, subscribes to every device's
//! device-to-controller topics and hands inbound messages to a channel: the MQTT callback
//! never waits on the database. The connection comes back by itself after the broker goes
//! away (its subscriptions restored); [`ControllerClient::reconnected`] says when, so the
//! desired states a restarted broker lost are published again.

use std::sync::Arc;
use std::time::Duration;

use coracle_proto::topic::Direction;
use coracle_proto::{DeviceId, TopicKind};
use mqtt5::{ConnectOptions, ConnectionEvent, MqttClient, PublishOptions, QoS, SubscribeOptions};
use tokio::sync::{mpsc, Notify};

use super::acl::CONTROLLER_USER;
use super::BrokerUrl;

/// Why an MQTT operation of the controller failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no PEM certificate to verify the MQTT broker at {url} with")]
    NoCa { url: String },
    #[error("cannot connect to the MQTT broker at {url}")]
    Connect {
        url: String,
        #[source]
        source: mqtt5::MqttError,
    },
    #[error("cannot subscribe to {filter}")]
    Subscribe {
        filter: String,
        #[source]
        source: mqtt5::MqttError,
    },
    #[error("cannot publish to {topic}")]
    Publish {
        topic: String,
        #[source]
        source: mqtt5::MqttError,
    },
}

/// How this controller shares the broker with other controllers of the same fleet (an
/// external broker; the embedded one serves one controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replicas {
    /// The only controller: client id `coracle-controller`, every message to it.
    Alone,
    /// One of several: its own client id, and telemetry (health, reported states, events)
    /// through shared subscriptions of `group`, so each message reaches one controller.
    /// Presence (retained), pull progress, command replies and session output still reach
    /// every controller: they are answered by the one that asked, or kept in memory.
    Shared { client_id: String, group: String },
    /// One of several on a broker without shared subscriptions (NATS): telemetry comes
    /// through a NATS queue group (`nats_ingest`), so MQTT does not carry it to this client.
    Queued { client_id: String },
}

impl Replicas {
    fn client_id(&self) -> &str {
        match self {
            Replicas::Alone => CONTROLLER_USER,
            Replicas::Shared { client_id, .. } | Replicas::Queued { client_id } => client_id,
        }
    }

    /// The filter for `kind` of every device: shared for the telemetry kinds, none for
    /// them when they are queued elsewhere.
    fn filter(&self, kind: TopicKind) -> Option<String> {
        let filter = kind.for_all_devices();
        let telemetry = matches!(
            kind,
            TopicKind::Health | TopicKind::Reported | TopicKind::Events
        );
        Some(match self {
            Replicas::Queued { .. } if telemetry => return None,
            Replicas::Shared { group, .. } if telemetry => format!("$share/{group}/{filter}"),
            _ => filter,
        })
    }
}

/// One message from a device, not yet decoded.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The controller's MQTT connection.
#[derive(Clone)]
pub struct ControllerClient {
    client: Arc<MqttClient>,
    url: BrokerUrl,
    password: String,
    /// Raised on every connect after the first (one stored permit: reconnects coalesce).
    reconnected: Arc<Notify>,
    replicas: Replicas,
}

impl std::fmt::Debug for ControllerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClient")
            .field("url", &self.url.to_string())
            .finish()
    }
}

fn options(client_id: &str, password: &str, clean: bool, replicas: &Replicas) -> ConnectOptions {
    let options = ConnectOptions::new(client_id);
    // NATS's MQTT interface (the one broker without shared subscriptions) speaks 3.1.1 only.
    let options = match replicas {
        Replicas::Queued { .. } => options.with_protocol_version(mqtt5::ProtocolVersion::V311),
        _ => options,
    };
    options
        .with_credentials(CONTROLLER_USER, password)
        .with_clean_start(clean)
        .with_keep_alive(Duration::from_secs(30))
        // A broker restart is seconds; do not wait a minute (the default cap) once it is back.
        .with_reconnect_delay(Duration::from_secs(1), Duration::from_secs(15))
}

fn qos(kind: TopicKind) -> QoS {
    match kind.qos() {
        0 => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    }
}

impl ControllerClient {
    /// Connects as the controller user. An `mqtts://` broker must present a certificate
    /// issued by a CA of `ca_pem` (a PEM bundle); reconnects check it the same way.
    pub async fn connect(
        url: &BrokerUrl,
        password: &str,
        ca_pem: &str,
        replicas: Replicas,
    ) -> Result<Self, ClientError> {
        let client_id = replicas.client_id().to_string();
        let client = MqttClient::with_options(options(&client_id, password, true, &replicas));
        if url.tls {
            // mqtt5 only logs a bundle it cannot use: check it here to name the problem.
            let probe = std::net::SocketAddr::from(([127, 0, 0, 1], url.port));
            let mut check = mqtt5::transport::TlsConfig::new(probe, url.host.clone());
            if check.load_ca_cert_pem_bytes(ca_pem.as_bytes()).is_err() {
                return Err(ClientError::NoCa {
                    url: url.to_string(),
                });
            }
            client
                .set_tls_config(None, None, Some(ca_pem.as_bytes().to_vec()))
                .await;
        }
        client
            .connect_with_options(
                &url.to_string(),
                options(&client_id, password, true, &replicas),
            )
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_string(),
                source,
            })?;
        // Registered after the first CONNACK, so only reconnects raise it.
        let reconnected = Arc::new(Notify::new());
        let raise = reconnected.clone();
        let registered = client
            .on_connection_event(move |event| {
                if let ConnectionEvent::Connected { .. } = event {
                    raise.notify_one();
                }
            })
            .await;
        if let Err(err) = registered {
            tracing::warn!(error = %err, "cannot watch the broker connection; a restarted broker gets desired states only on the next deploy");
        }
        Ok(Self {
            client: Arc::new(client),
            url: url.clone(),
            password: password.to_string(),
            reconnected,
            replicas,
        })
    }

    /// Resolves when the client has connected to the broker again after losing it.
    pub async fn reconnected(&self) {
        self.reconnected.notified().await;
    }

    /// Subscribes to every device-to-controller topic of every device; messages go to
    /// the returned channel (bounded: a flood is dropped here, not buffered without end).
    pub async fn subscribe_devices(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Inbound>, ClientError> {
        let (tx, rx) = mpsc::channel(capacity);
        self.subscribe_devices_into(&tx).await?;
        Ok(rx)
    }

    /// As [`Self::subscribe_devices`], into a channel others (the NATS ingest) also feed.
    pub async fn subscribe_devices_into(
        &self,
        tx: &mpsc::Sender<Inbound>,
    ) -> Result<(), ClientError> {
        for kind in TopicKind::ALL {
            // Session output has its own subscription (`subscribe_sessions`).
            if kind.direction() != Direction::DeviceToController || kind == TopicKind::SessionOut {
                continue;
            }
            self.subscribe_all_devices(
                kind,
                tx.clone(),
                "ingest queue full, device message dropped",
            )
            .await?;
        }
        Ok(())
    }

    /// Subscribes to every device's session output, apart from the ingest stream so that
    /// interactive output never queues behind (or is dropped with) fleet telemetry.
    pub async fn subscribe_sessions(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Inbound>, ClientError> {
        let (tx, rx) = mpsc::channel(capacity);
        self.subscribe_all_devices(
            TopicKind::SessionOut,
            tx,
            "session queue full, session output dropped",
        )
        .await?;
        Ok(rx)
    }

    /// Subscribes to `kind` of every device into `tx`; a full queue drops the message
    /// (`when_full` says what was dropped, at debug level).
    async fn subscribe_all_devices(
        &self,
        kind: TopicKind,
        tx: mpsc::Sender<Inbound>,
        when_full: &'static str,
    ) -> Result<(), ClientError> {
        let Some(filter) = self.replicas.filter(kind) else {
            return Ok(());
        };
        let subscribe = SubscribeOptions {
            qos: qos(kind),
            ..SubscribeOptions::default()
        };
        self.client
            .subscribe_with_options(filter.clone(), subscribe, move |msg| {
                let inbound = Inbound {
                    topic: msg.topic,
                    payload: msg.payload,
                };
                if tx.try_send(inbound).is_err() {
                    tracing::debug!("{when_full}");
                }
            })
            .await
            .map_err(|source| ClientError::Subscribe { filter, source })?;
        Ok(())
    }

    /// Publishes an encoded `SessionRequest` on the device's `session` topic.
    pub async fn publish_session(
        &self,
        device: &DeviceId,
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.publish_to(TopicKind::Session, device, body).await
    }

    /// Publishes an encoded `Signed<DesiredState>` retained on the device's desired topic.
    pub async fn publish_desired(
        &self,
        device: &DeviceId,
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.publish_to(TopicKind::Desired, device, body).await
    }

    /// Publishes the encoded deployment key chain on the device's retained `keys` topic.
    pub async fn publish_keys(&self, device: &DeviceId, body: Vec<u8>) -> Result<(), ClientError> {
        self.publish_to(TopicKind::Keys, device, body).await
    }

    /// Publishes a signed `AgentUpdate` on the device's retained `agent-update` topic.
    pub async fn publish_agent_update(
        &self,
        device: &DeviceId,
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.publish_to(TopicKind::AgentUpdate, device, body).await
    }

    /// Publishes on one of the device's topics with that kind's QoS and retain flag.
    async fn publish_to(
        &self,
        kind: TopicKind,
        device: &DeviceId,
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        let topic = kind.for_device(device);
        let opts = PublishOptions {
            qos: qos(kind),
            retain: kind.retained(),
            ..PublishOptions::default()
        };
        self.client
            .publish_with_options(topic.clone(), body, opts)
            .await
            .map(|_| ())
            .map_err(|source| ClientError::Publish { topic, source })
    }

    /// Publishes an encoded `CommandRequest` on the device's `cmd` topic (not retained: a
    /// command is for a device that is online now).
    pub async fn publish_command(
        &self,
        device: &DeviceId,
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.publish_to(TopicKind::Cmd, device, body).await
    }

    /// Clears a removed device's retained desired state and key chain.
    pub async fn clear_desired(&self, device: &DeviceId) -> Result<(), ClientError> {
        self.publish_desired(device, Vec::new()).await?;
        self.publish_agent_update(device, Vec::new()).await?;
        self.publish_keys(device, Vec::new()).await
    }

    /// Cuts a device off: connects with its client id, which makes the broker close the
    /// device's session (MQTT session takeover, which every broker implements), then leaves.
    /// Its credentials must already be revoked, so it cannot come back.
    pub async fn evict(&self, device: &DeviceId) -> Result<(), ClientError> {
        let opts = options(device.as_str(), &self.password, true, &self.replicas);
        let evictor = MqttClient::with_options(opts.clone());
        let url = self.url.to_string();
        evictor
            .connect_with_options(&url, opts)
            .await
            .map_err(|source| ClientError::Connect {
                url: url.clone(),
                source,
            })?;
        if let Err(err) = evictor.disconnect().await {
            tracing::debug!(device = %device, error = %err, "evictor disconnect failed");
        }
        Ok(())
    }

    /// Disconnects cleanly.
    pub async fn disconnect(&self) {
        if let Err(err) = self.client.disconnect().await {
            tracing::debug!(error = %err, "controller MQTT disconnect failed");
        }
    }
}
