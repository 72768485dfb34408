//! MQTT transport: a cheap [`TransportHandle`] plus a [`TransportDriver`] that owns the
//! rumqttc event loop. No rumqttc type leaks out of this module; the rest of the agent speaks
//! `coracle-proto` types.
//!
//! - Inbound: every `desired` body goes through [`admit::admit_desired`] (decode, signature,
//!   device, replay floor, validate) before it reaches the [`Inbox`]; a refusal becomes a
//!   rate-limited `Event::Rejected` and changes nothing. `cmd` bodies are decoded likewise.
//!   The key it checks against is [`trusted_key::TrustedKey`]: the bootstrap's key, moved
//!   along the rollover chain retained on `keys`; a desired state signed by a key not yet
//!   trusted is held until the chain arrives.
//! - Outbound: QoS and retain come from `coracle_proto::topic`. Events wait in an [`Outbox`]
//!   until the broker acknowledges them, so what happened offline is sent on reconnect.
//! - Link: last will `online` = Offline (retained), Online published on every connect,
//!   subscriptions renewed on every connect (clean session), reconnect with exponential
//!   backoff and jitter because rumqttc's `poll()` retries at once.

pub mod admit;
pub mod backoff;
pub mod broker;
mod driver;
mod handle;
pub mod outbox;
pub mod progress_gate;
pub mod rate;
pub mod trusted_key;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use coracle_proto::{AgentUpdate, Bootstrap, CommandRequest, DesiredState, DeviceId, VerifyingKey};
use tokio::sync::{mpsc, watch};

use crate::config::AgentConfig;
pub use broker::{BrokerAddress, BrokerError};
pub use driver::TransportDriver;
pub use handle::TransportHandle;
pub use outbox::Outbox;

/// Largest MQTT packet accepted: a full protocol body plus room for the topic and headers.
/// rumqttc's default (10 KiB) would disconnect on any sizeable desired state.
pub const MAX_PACKET_BYTES: usize = coracle_proto::codec::MAX_BODY_BYTES + 4 * 1024;

/// The followed deployment key rollover links, in the state dir.
pub const KEY_CHAIN_FILE: &str = "deployment-keys";

/// Commands buffered for the supervisor; beyond this the device answers "busy".
const COMMAND_QUEUE: usize = 32;
/// Session input waiting for the sessions task; beyond it input is refused (rate-limited).
const SESSION_QUEUE: usize = 256;

/// Whether the broker link is up (connected and subscribed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Down,
    /// The broker refused this device's credentials: it was removed (`coracle device rm`)
    /// or its password changed. The agent keeps running its last committed app and keeps
    /// trying at the backoff's slowest pace; a new bootstrap file is the way back.
    CredentialsRefused,
    /// Up, with the number of connections made so far (1 for the first).
    Up {
        connects: u64,
    },
}

/// Everything the transport needs, resolved from the bootstrap and the agent config.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    pub device: DeviceId,
    pub broker: BrokerAddress,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub credentials: Option<(String, String)>,
    /// The bootstrap's pinned key: the root the rollover chain is walked from.
    pub deployment_key: VerifyingKey,
    /// Where the followed rollover links are kept (`None`: in memory only).
    pub key_chain_file: Option<PathBuf>,
    pub keep_alive: Duration,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub max_events: usize,
}

/// Why the transport could not be set up from the bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("bootstrap broker settings are unusable")]
    Broker(#[from] BrokerError),
    #[error("bootstrap deployment key is unusable")]
    DeploymentKey(#[from] coracle_proto::bootstrap::DeploymentKeyError),
}

impl TransportSettings {
    /// Resolves the settings from the bootstrap file and the agent config.
    pub fn from_bootstrap(
        bootstrap: &Bootstrap,
        config: &AgentConfig,
    ) -> Result<Self, TransportError> {
        let broker = BrokerAddress::parse(&bootstrap.broker_url)?;
        let tls = if broker.tls {
            Some(broker::tls_config(bootstrap)?)
        } else if matches!(bootstrap.auth, coracle_proto::BrokerAuth::ClientCert { .. }) {
            return Err(BrokerError::ClientCertWithoutTls.into());
        } else {
            None
        };
        let credentials = match &bootstrap.auth {
            coracle_proto::BrokerAuth::Password { username, password } => {
                Some((username.clone(), password.clone()))
            }
            coracle_proto::BrokerAuth::ClientCert { .. } => None,
        };
        Ok(Self {
            device: bootstrap.device.clone(),
            broker,
            tls,
            credentials,
            deployment_key: bootstrap.deployment_key()?,
            key_chain_file: Some(config.state_dir().join(KEY_CHAIN_FILE)),
            keep_alive: Duration::from_secs(u64::from(config.mqtt.keep_alive_s)),
            reconnect_min_ms: u64::from(config.mqtt.reconnect_min_ms),
            reconnect_max_ms: u64::from(config.mqtt.reconnect_max_ms),
            max_events: config.limits.offline_events as usize,
        })
    }
}

/// What the transport hands to the supervisor.
#[derive(Debug)]
pub struct Inbox {
    /// The newest admitted desired state (latest wins: an older one still queued is moot).
    pub desired: watch::Receiver<Option<DesiredState>>,
    /// The newest genuine desired state refused as invalid (reported failed; nothing runs
    /// differently because of it).
    pub refused: watch::Receiver<Option<admit::Refused>>,
    pub commands: mpsc::Receiver<CommandRequest>,
    /// Remote session input (`session`), for `sessions::Sessions`.
    pub sessions: mpsc::Receiver<coracle_proto::SessionRequest>,
    pub link: watch::Receiver<Link>,
    /// The newest verified `AgentUpdate` (signature and device checked; its sequence is
    /// the supervisor's to judge, see `ota`).
    pub agent_update: watch::Receiver<Option<AgentUpdate>>,
}

/// Builds the handle, the driver (spawn `driver.run()`) and the inbox.
pub fn transport(settings: TransportSettings) -> (TransportHandle, TransportDriver, Inbox) {
    let (desired_tx, desired) = watch::channel(None);
    let (refused_tx, refused) = watch::channel(None);
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (link_tx, link) = watch::channel(Link::Down);
    let (agent_update_tx, agent_update) = watch::channel(None);
    let (sessions_tx, sessions) = mpsc::channel(SESSION_QUEUE);
    let (handle, driver) = driver::build(
        settings,
        driver::Outlets {
            desired_tx,
            refused_tx,
            commands_tx,
            sessions_tx,
            link_tx,
            agent_update_tx,
        },
    );
    (
        handle,
        driver,
        Inbox {
            desired,
            refused,
            commands,
            sessions,
            link,
            agent_update,
        },
    )
}
