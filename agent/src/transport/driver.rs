//! `TransportDriver`: owns the rumqttc event loop. It admits inbound messages, keeps the
//! outbox moving, renews subscriptions and presence on every connect, and backs off between
//! reconnects (rumqttc's `poll()` would otherwise retry in a tight loop).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coracle_proto::{
    encode, topic, AgentUpdate, CommandOutcome, CommandReply, CommandRequest, DesiredState,
    DeviceId, KeyId, Presence, RejectReason, TopicKind,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, QoS, StateError, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch, Notify};

use super::admit::{admit_agent_update, admit_command, admit_desired, Refused, Rejection};
use super::backoff::Backoff;
use super::handle::{Shared, Tag, TransportHandle};
use super::outbox::Outbox;
use super::progress_gate::ProgressGate;
use super::rate::RateLimit;
use super::trusted_key::TrustedKey;
use super::{Link, TransportSettings, MAX_PACKET_BYTES};

/// rumqttc request queue; beyond it publishes wait in the outbox.
const REQUEST_QUEUE: usize = 64;
/// Rejection events: bursts of 5, then one a minute.
const REJECT_BURST: u32 = 5;
const REJECT_REFILL_MS: u64 = 60_000;
/// Pull progress goes out at most once a second (plus each layer's end).
const PROGRESS_INTERVAL_MS: u64 = 1_000;
/// A device whose credentials are refused says so once, then again at most this often.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(3600);
/// How long a graceful disconnect may take before the driver gives up on it.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);

/// The half of the transport that must be spawned: `tokio::spawn(driver.run())`.
pub struct TransportDriver {
    eventloop: EventLoop,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<Notify>,
    wake: Arc<Notify>,
    device: DeviceId,
    trusted: TrustedKey,
    /// The last desired state signed by a key we do not trust (yet): admitted again once
    /// the `keys` chain moves us to its signer, whichever of the two arrived first.
    held: Option<Vec<u8>>,
    backoff: Backoff,
    connects: u64,
    /// When the refusal of our credentials was last logged.
    refusal_logged: Option<Instant>,
    desired_tx: watch::Sender<Option<DesiredState>>,
    refused_tx: watch::Sender<Option<Refused>>,
    commands_tx: mpsc::Sender<CommandRequest>,
    sessions_tx: mpsc::Sender<coracle_proto::SessionRequest>,
    link_tx: watch::Sender<Link>,
    agent_update_tx: watch::Sender<Option<AgentUpdate>>,
}

/// Where the driver hands what it admits.
pub(super) struct Outlets {
    pub desired_tx: watch::Sender<Option<DesiredState>>,
    pub refused_tx: watch::Sender<Option<Refused>>,
    pub commands_tx: mpsc::Sender<CommandRequest>,
    pub sessions_tx: mpsc::Sender<coracle_proto::SessionRequest>,
    pub link_tx: watch::Sender<Link>,
    pub agent_update_tx: watch::Sender<Option<AgentUpdate>>,
}

impl std::fmt::Debug for TransportDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportDriver")
            .field("device", &self.device)
            .field("connects", &self.connects)
            .finish_non_exhaustive()
    }
}

pub(super) fn build(
    settings: TransportSettings,
    outlets: Outlets,
) -> (TransportHandle, TransportDriver) {
    let Outlets {
        desired_tx,
        refused_tx,
        commands_tx,
        sessions_tx,
        link_tx,
        agent_update_tx,
    } = outlets;
    let device = settings.device.clone();
    let mut options = MqttOptions::new(
        device.as_str(),
        settings.broker.host.clone(),
        settings.broker.port,
    );
    options
        .set_keep_alive(settings.keep_alive)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_clean_session(true)
        .set_last_will(LastWill::new(
            TopicKind::Online.for_device(&device),
            encode(&Presence::Offline),
            QoS::AtLeastOnce,
            TopicKind::Online.retained(),
        ));
    if let Some((username, password)) = &settings.credentials {
        options.set_credentials(username.clone(), password.clone());
    }
    if let Some(tls) = &settings.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
    // No Nagle delay: a remote terminal's keystrokes and echoes are single small packets
    // (with it, each waited for the peer's delayed ACK, ~40 ms).
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let started = Instant::now();
    let trusted = TrustedKey::load(settings.deployment_key, settings.key_chain_file);
    let shared = Arc::new(Mutex::new(Shared {
        client,
        device: device.clone(),
        connected: false,
        stopping: false,
        outbox: Outbox::new(settings.max_events),
        reported: None,
        reported_unsent: false,
        floor: Default::default(),
        unassigned: VecDeque::new(),
        inflight: HashMap::new(),
        rejections: RateLimit::new(REJECT_BURST, REJECT_REFILL_MS, 0),
        progress_gate: ProgressGate::new(PROGRESS_INTERVAL_MS),
        started,
        published_bytes: 0,
        switch_to: None,
        trusted_key: (trusted.epoch(), KeyId::of(trusted.key())),
    }));
    let stop = Arc::new(Notify::new());
    let wake = Arc::new(Notify::new());
    // Jitter seed: differs per device and per start, so a fleet does not reconnect in step.
    let seed = device
        .as_str()
        .bytes()
        .fold(u64::from(std::process::id()), |h, b| {
            h.rotate_left(5) ^ u64::from(b)
        })
        ^ super::handle::unix_now();
    let handle = TransportHandle {
        shared: shared.clone(),
        stop: stop.clone(),
        wake: wake.clone(),
    };
    let driver = TransportDriver {
        eventloop,
        shared,
        stop,
        wake,
        device,
        trusted,
        held: None,
        backoff: Backoff::new(settings.reconnect_min_ms, settings.reconnect_max_ms, seed),
        connects: 0,
        refusal_logged: None,
        desired_tx,
        refused_tx,
        commands_tx,
        sessions_tx,
        link_tx,
        agent_update_tx,
    };
    (handle, driver)
}

impl TransportDriver {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs until `TransportHandle::shutdown`. Never returns on broker errors: it backs off
    /// and reconnects.
    pub async fn run(mut self) {
        loop {
            let polled = tokio::select! {
                polled = self.eventloop.poll() => polled,
                () = self.stop.notified() => {
                    if self.lock().connected {
                        self.say_goodbye().await;
                    }
                    return;
                }
            };
            match polled {
                Ok(event) => self.on_event(event),
                Err(err) => {
                    if self.lock().stopping {
                        return;
                    }
                    let delay = self.on_link_down(&err);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.wake.notified() => self.take_pending_credentials(),
                        () = self.stop.notified() => return,
                    }
                }
            }
        }
    }

    /// Lets the Offline presence and the DISCONNECT reach the broker.
    async fn say_goodbye(&mut self) {
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        self.link_tx.send_replace(Link::Down);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => self.on_connected(),
            Event::Incoming(Packet::Publish(publish)) => {
                self.on_publish(&publish.topic, &publish.payload)
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let mut shared = self.lock();
                if let Some(seq) = shared.inflight.remove(&ack.pkid) {
                    shared.outbox.ack(seq);
                }
                shared.flush();
            }
            Event::Incoming(Packet::SubAck(ack)) => self.on_subscribed(
                ack.return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure)),
            ),
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let mut shared = self.lock();
                if let Some(Tag::Event(seq)) = shared.unassigned.pop_front() {
                    shared.inflight.insert(pkid, seq);
                }
            }
            Event::Outgoing(Outgoing::Disconnect) => self.on_disconnect_sent(),
            Event::Incoming(_) | Event::Outgoing(_) => {}
        }
    }

    /// Our DISCONNECT is out. For new credentials: take them and drop the connection, so
    /// the next poll connects with them at once (no backoff: nothing failed).
    fn on_disconnect_sent(&mut self) {
        let mut shared = self.lock();
        if shared.stopping {
            return;
        }
        let Some((username, password)) = shared.switch_to.take() else {
            return;
        };
        shared.connected = false;
        shared.unassigned.clear();
        shared.inflight.clear();
        shared.outbox.resend_unacked();
        drop(shared);
        self.eventloop
            .mqtt_options
            .set_credentials(username, password);
        self.eventloop.clean();
        tracing::info!(device = %self.device, "reconnecting with new broker credentials");
        self.link_tx.send_replace(Link::Down);
    }

    /// Credentials switched while the link was down take effect at the next attempt.
    fn take_pending_credentials(&mut self) {
        let pending = self.lock().switch_to.take();
        if let Some((username, password)) = pending {
            self.eventloop
                .mqtt_options
                .set_credentials(username, password);
        }
    }

    fn on_connected(&mut self) {
        self.backoff.reset();
        self.connects += 1;
        let mut shared = self.lock();
        shared.connected = true;
        shared.unassigned.clear();
        shared.inflight.clear();
        shared.outbox.resend_unacked();
        // Clean session: the broker forgot our subscriptions, so renew them every time, in
        // one SUBSCRIBE whose SUBACK marks the link up. The key chain first, so a retained
        // rollover usually arrives before the desired state it signs.
        let filters = [
            TopicKind::Keys,
            TopicKind::Desired,
            TopicKind::Cmd,
            TopicKind::AgentUpdate,
            TopicKind::Session,
        ]
        .map(|kind| rumqttc::SubscribeFilter::new(kind.for_device(&self.device), QoS::AtLeastOnce));
        if let Err(err) = shared.client.try_subscribe_many(filters) {
            tracing::error!(error = %err, "subscribe not queued");
        }
        shared.publish(TopicKind::Online, encode(&Presence::Online), Tag::Other);
        shared.reported_unsent = shared.reported.is_some();
        shared.flush();
    }

    /// The subscriptions are in place: from now on nothing addressed to us is missed.
    fn on_subscribed(&mut self, refused: bool) {
        if refused {
            tracing::error!(device = %self.device, "broker refused a subscription (check its ACL)");
        }
        tracing::info!(device = %self.device, connects = self.connects, "broker link up");
        self.link_tx.send_replace(Link::Up {
            connects: self.connects,
        });
    }

    /// The broker refused our user name and password: say what that means, and retry only
    /// at the slowest pace (nothing but a new enrolment will change the answer).
    fn on_credentials_refused(&mut self, code: ConnectReturnCode) -> Duration {
        let now = Instant::now();
        if self
            .refusal_logged
            .is_none_or(|last| now.duration_since(last) >= REFUSED_LOG_EVERY)
        {
            self.refusal_logged = Some(now);
            tracing::error!(
                device = %self.device,
                answer = ?code,
                "the broker refused this device's credentials: it was removed from the fleet (coracle device rm) or its password changed; the running containers are kept, and the device reconnects once it is enrolled again (coracle device add, then start the agent with the new bootstrap file)"
            );
        }
        self.link_tx.send_replace(Link::CredentialsRefused);
        self.backoff.slowest()
    }

    /// Marks the link down and returns how long to wait before the next attempt.
    fn on_link_down(&mut self, err: &ConnectionError) -> Duration {
        self.take_pending_credentials();
        if let ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) = err
        {
            self.lock().connected = false;
            return self.on_credentials_refused(*code);
        }
        let delay = self.backoff.next_delay();
        let mut shared = self.lock();
        let was_up = shared.connected;
        shared.connected = false;
        shared.unassigned.clear();
        shared.inflight.clear();
        shared.outbox.resend_unacked();
        if let ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(len),
        )) = err
        {
            shared.reject(Rejection {
                reason: RejectReason::TooLarge,
                detail: format!(
                    "incoming MQTT packet of {len} bytes exceeds the {MAX_PACKET_BYTES}-byte limit"
                ),
                refused: None,
            });
        }
        drop(shared);
        if was_up {
            tracing::warn!(device = %self.device, error = %err, delay_ms = delay.as_millis() as u64, "broker link down");
            self.link_tx.send_replace(Link::Down);
        } else {
            tracing::debug!(device = %self.device, error = %err, delay_ms = delay.as_millis() as u64, "broker unreachable");
        }
        delay
    }

    fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        let kind = match topic::parse(topic) {
            Ok((device, kind)) if device == self.device => kind,
            _ => {
                tracing::debug!(topic, "publish on a foreign topic ignored");
                return;
            }
        };
        match kind {
            TopicKind::Desired => self.on_desired(payload),
            TopicKind::AgentUpdate => self.on_agent_update(payload),
            TopicKind::Keys => match self.trusted.follow(payload) {
                Ok(true) => {
                    self.lock().trusted_key = (self.trusted.epoch(), KeyId::of(self.trusted.key()));
                    if let Some(held) = self.held.take() {
                        self.on_desired(&held);
                    }
                }
                Ok(false) => {}
                Err(rejection) => self.lock().reject(rejection),
            },
            TopicKind::Cmd => match admit_command(payload) {
                Ok(request) => {
                    if let Err(mpsc::error::TrySendError::Full(request)) =
                        self.commands_tx.try_send(request)
                    {
                        let mut shared = self.lock();
                        shared.outbox.push_reply(CommandReply {
                            id: request.id,
                            outcome: CommandOutcome::Failed {
                                reason: "agent busy: too many commands queued".to_string(),
                            },
                        });
                        shared.flush();
                    }
                }
                Err(rejection) => self.lock().reject(rejection),
            },
            TopicKind::Session => match coracle_proto::decode(payload) {
                Ok(request) => {
                    if self.sessions_tx.try_send(request).is_err() {
                        self.lock().reject(Rejection {
                            reason: RejectReason::Malformed,
                            detail: "session input dropped: the sessions queue is full".into(),
                            refused: None,
                        });
                    }
                }
                Err(err) => {
                    self.lock()
                        .reject(Rejection::new(err.reject_reason(), "session input", &err))
                }
            },
            _ => tracing::debug!(topic, "publish on a device-to-controller topic ignored"),
        }
    }

    fn on_agent_update(&mut self, payload: &[u8]) {
        match admit_agent_update(payload, self.trusted.key(), &self.device) {
            Ok(update) => {
                tracing::info!(version = %update.version, sequence = update.sequence, "agent update admitted");
                self.agent_update_tx.send_replace(Some(update));
            }
            Err(rejection) => self.lock().reject(rejection),
        }
    }

    fn on_desired(&mut self, payload: &[u8]) {
        let floor = self.lock().floor;
        match admit_desired(payload, self.trusted.key(), &self.device, floor) {
            Ok(desired) => {
                self.held = None;
                tracing::info!(generation = %desired.generation, services = desired.services.len(), "desired state admitted");
                self.desired_tx.send_replace(Some(desired));
            }
            Err(rejection) => {
                if rejection.reason == RejectReason::UnknownKey {
                    self.held = Some(payload.to_vec());
                }
                if let Some(refused) = &rejection.refused {
                    self.refused_tx.send_replace(Some(refused.clone()));
                }
                self.lock().reject(rejection)
            }
        }
    }
}
