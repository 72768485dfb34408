//! The embedded broker: `mqtt5`'s broker (pinned, chosen by the measurements in issue 5: it
//! is the measured embeddable broker with per-user topic authorization hooks) with our
//! `Credentials` and `acl` plugged into its auth hook. A plain listener on loopback for the
//! controller's own client, and for devices a TLS listener (controller CA) that Coracle runs
//! itself in front of the broker's plain one (`tls_front`: `mqtt5`'s own TLS accept loop
//! lets one idle socket stall every handshake).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mqtt5::broker::auth::{AuthProvider, AuthResult};
use mqtt5::broker::config::{BrokerConfig, StorageBackend, StorageConfig};
use mqtt5::broker::server::BrokerShutdownHandle;
use mqtt5::broker::MqttBroker;
use mqtt5::packet::connect::ConnectPacket;
use mqtt5::protocol::v5::reason_codes::ReasonCode;

use super::acl::{self, Principal, CONTROLLER_USER};
use super::credentials::Credentials;
use super::tls_front::{DevicePeers, TlsFront, TlsFrontError, TlsFrontLimits};

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedBrokerError {
    #[error("cannot start the embedded MQTT broker on {listen}")]
    Start {
        listen: SocketAddr,
        #[source]
        source: mqtt5::MqttError,
    },
    #[error(transparent)]
    TlsFront(#[from] TlsFrontError),
    #[error("embedded MQTT broker has no bound {which} listener")]
    NoListener { which: &'static str },
}

/// Where the embedded broker's certificate lives and where it listens.
#[derive(Debug, Clone)]
pub struct EmbeddedBrokerSettings {
    pub listen: SocketAddr,
    pub tls_listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Handshake timeout and connection caps of the TLS listener.
    pub limits: TlsFrontLimits,
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    pub tls_addr: SocketAddr,
    shutdown: ShutdownHandle,
    task: tokio::task::JoinHandle<()>,
    tls_front: TlsFront,
}

struct ShutdownHandle(BrokerShutdownHandle);

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerShutdownHandle")
    }
}

/// Devices send a sample every few seconds; bodies never exceed proto's limit plus headers.
const MAX_PACKET_BYTES: usize = coracle_proto::codec::MAX_BODY_BYTES + 4096;
/// Clients the broker takes beyond the TLS listener's cap: the controller's own client and
/// a margin, so the broker never refuses a device the TLS listener admitted.
const PLAIN_CLIENT_MARGIN: usize = 64;

impl EmbeddedBroker {
    /// Binds the listeners and starts the broker task.
    pub async fn start(
        settings: &EmbeddedBrokerSettings,
        credentials: Arc<Credentials>,
    ) -> Result<Self, EmbeddedBrokerError> {
        let storage = StorageConfig::new()
            .with_backend(StorageBackend::Memory)
            .with_persistence(false);
        let config = BrokerConfig::new()
            .with_bind_address(settings.listen)
            .with_max_clients(settings.limits.gate.total + PLAIN_CLIENT_MARGIN)
            .with_storage(storage)
            .with_max_packet_size(MAX_PACKET_BYTES)
            .with_sys_topics_enabled(false)
            .with_session_expiry(Duration::from_secs(3600));
        let start = |source| EmbeddedBrokerError::Start {
            listen: settings.listen,
            source,
        };
        let peers = DevicePeers::default();
        let auth = CoracleAuth {
            credentials,
            peers: peers.clone(),
        };
        let mut broker = MqttBroker::with_config(config)
            .await
            .map_err(start)?
            .with_auth_provider(Arc::new(auth));
        tracing::info!("broker authentication: device passwords and the controller's own account; anonymous connects are refused");
        let addr = broker
            .local_addr()
            .ok_or(EmbeddedBrokerError::NoListener { which: "plain" })?;
        let tls_front = TlsFront::start(
            settings.tls_listen,
            (settings.cert.as_path(), settings.key.as_path()),
            addr,
            settings.limits,
            peers,
        )
        .await?;
        let tls_addr = tls_front.addr;
        let shutdown = ShutdownHandle(broker.shutdown_handle());
        let task = tokio::spawn(async move {
            if let Err(err) = broker.run().await {
                tracing::error!(error = %err, "embedded MQTT broker stopped with an error");
            }
        });
        Ok(Self {
            addr,
            tls_addr,
            shutdown,
            task,
            tls_front,
        })
    }

    /// Stops accepting, disconnects clients and waits for the broker task.
    pub async fn stop(self) {
        self.tls_front.stop();
        self.shutdown.0.shutdown();
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "embedded MQTT broker task did not stop cleanly");
        }
    }
}

/// The auth hook: authentication by `Credentials`, authorization by `acl`.
struct CoracleAuth {
    credentials: Arc<Credentials>,
    /// Devices arrive through the TLS relay; this names their own address in logs.
    peers: DevicePeers,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl CoracleAuth {
    /// A revoked device that is still connected loses every permission immediately.
    fn principal(&self, user_id: Option<&str>) -> Option<Principal> {
        let principal = Principal::from_user_id(user_id)?;
        match &principal {
            Principal::Device(device) if !self.credentials.is_enrolled(device) => None,
            _ => Some(principal),
        }
    }
}

impl AuthProvider for CoracleAuth {
    fn authenticate<'a>(
        &'a self,
        connect: &'a ConnectPacket,
        client_addr: SocketAddr,
    ) -> BoxFuture<'a, mqtt5::Result<AuthResult>> {
        let client_addr = self.peers.device_addr(client_addr);
        let principal = self.credentials.authenticate(
            connect.username.as_deref(),
            connect.password.as_deref(),
            &connect.client_id,
        );
        let result = match principal {
            Some(Principal::Controller) => AuthResult::success_with_user(CONTROLLER_USER),
            Some(Principal::Device(device)) => {
                tracing::debug!(device = %device, peer = %client_addr, "device authenticated");
                AuthResult::success_with_user(device.as_str())
            }
            None => {
                tracing::info!(
                    client_id = %connect.client_id,
                    peer = %client_addr,
                    "MQTT connection refused: bad credentials"
                );
                AuthResult::fail(ReasonCode::BadUsernameOrPassword)
            }
        };
        Box::pin(async move { Ok(result) })
    }

    fn authorize_publish<'a>(
        &'a self,
        client_id: &str,
        user_id: Option<&'a str>,
        topic: &'a str,
    ) -> BoxFuture<'a, bool> {
        let allowed = self
            .principal(user_id)
            .is_some_and(|p| acl::may_publish(&p, topic));
        if !allowed {
            tracing::debug!(client_id, topic, "publish refused by ACL");
        }
        Box::pin(async move { allowed })
    }

    fn authorize_subscribe<'a>(
        &'a self,
        client_id: &str,
        user_id: Option<&'a str>,
        topic_filter: &'a str,
    ) -> BoxFuture<'a, bool> {
        let allowed = self
            .principal(user_id)
            .is_some_and(|p| acl::may_subscribe(&p, topic_filter));
        if !allowed {
            tracing::debug!(client_id, topic_filter, "subscribe refused by ACL");
        }
        Box::pin(async move { allowed })
    }
}
