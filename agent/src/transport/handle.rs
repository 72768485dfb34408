//! `TransportHandle`: the cheap, cloneable side the supervisor publishes through. It shares
//! the outbox and link state with the driver behind one short-held mutex.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use coracle_proto::{
    encode, CommandReply, DeviceId, Event, EventKind, Generation, HealthSample, KeyId,
    PullProgress, ReportedState, TopicKind,
};
use rumqttc::{AsyncClient, QoS};

use super::admit::Rejection;
use super::outbox::Outbox;
use super::progress_gate::ProgressGate;
use super::rate::RateLimit;

/// What a submitted publish was, so its packet id can be matched to an acknowledgement.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tag {
    Event(u64),
    Other,
}

/// State shared by the handle and the driver.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) client: AsyncClient,
    pub(super) device: DeviceId,
    pub(super) connected: bool,
    pub(super) stopping: bool,
    pub(super) outbox: Outbox,
    /// The latest reported state, encoded; republished on every connect (it is retained).
    pub(super) reported: Option<Vec<u8>>,
    /// The latest reported state has not been handed to rumqttc yet (queue was full).
    pub(super) reported_unsent: bool,
    pub(super) floor: Generation,
    /// Submitted publishes in order, waiting for rumqttc to assign their packet ids.
    pub(super) unassigned: VecDeque<Tag>,
    /// Packet id → event sequence number, until the PUBACK.
    pub(super) inflight: HashMap<u16, u64>,
    pub(super) rejections: RateLimit,
    /// At most one pull progress report a second, plus each layer's end.
    pub(super) progress_gate: ProgressGate,
    pub(super) started: Instant,
    pub(super) published_bytes: u64,
    /// New broker credentials to connect with from the next connection on
    /// ([`TransportHandle::switch_credentials`]).
    pub(super) switch_to: Option<(String, String)>,
    /// The deployment key trusted now: its epoch and id (the driver moves it).
    pub(super) trusted_key: (u32, KeyId),
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Seconds since the Unix epoch by the device clock (0 if the clock is before 1970).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Shared {
    /// Hands one publish to rumqttc; false when its request queue is full.
    pub(super) fn publish(&mut self, kind: TopicKind, body: Vec<u8>, tag: Tag) -> bool {
        let topic = kind.for_device(&self.device);
        let len = body.len() + topic.len();
        match self
            .client
            .try_publish(topic, qos(kind.qos()), kind.retained(), body)
        {
            Ok(()) => {
                self.unassigned.push_back(tag);
                self.published_bytes += len as u64;
                true
            }
            Err(err) => {
                tracing::debug!(topic = kind.suffix(), error = %err, "publish deferred");
                false
            }
        }
    }

    /// Sends what the outbox holds, while connected and while rumqttc takes it.
    pub(super) fn flush(&mut self) {
        if !self.connected {
            return;
        }
        if self.reported_unsent {
            if let Some(body) = self.reported.clone() {
                self.reported_unsent = !self.publish(TopicKind::Reported, body, Tag::Other);
            }
        }
        let replies = self.outbox.take_replies();
        let mut replies = replies.into_iter();
        for reply in replies.by_ref() {
            if !self.publish(TopicKind::CmdReply, encode(&reply), Tag::Other) {
                self.outbox.push_reply(reply);
                break;
            }
        }
        replies.for_each(|r| self.outbox.push_reply(r));
        while let Some((seq, event)) = self.outbox.next_unsent() {
            let body = encode(event);
            if !self.publish(TopicKind::Events, body, Tag::Event(seq)) {
                break;
            }
            self.outbox.mark_sent(seq);
        }
    }

    /// Queues an event and sends it if the link is up.
    pub(super) fn push_event(&mut self, event: Event) {
        self.outbox.push_event(event);
        self.flush();
    }

    /// Reports a refused input, rate-limited so a flood costs a few events.
    pub(super) fn reject(&mut self, rejection: Rejection) {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Some(suppressed) = self.rejections.admit(now_ms) else {
            return;
        };
        tracing::warn!(reason = ?rejection.reason, detail = %rejection.detail, suppressed, "input rejected");
        let mut detail = rejection.detail;
        if suppressed > 0 {
            detail.push_str(&format!(" ({suppressed} similar rejections suppressed)"));
        }
        self.push_event(Event {
            at_unix_s: unix_now(),
            kind: EventKind::Rejected {
                reason: rejection.reason,
                detail,
            },
        });
    }
}

/// The supervisor's side of the transport. Publishing never blocks: while the link is down
/// events and replies wait in the outbox, the reported state is kept for the next connect
/// and health samples are skipped.
#[derive(Debug, Clone)]
pub struct TransportHandle {
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) stop: Arc<tokio::sync::Notify>,
    /// Cuts the driver's backoff short (new credentials to try).
    pub(super) wake: Arc<tokio::sync::Notify>,
}

impl TransportHandle {
    pub(super) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding this lock would already have aborted (panic = "abort").
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes the reported state (retained), now or on the next connect.
    pub fn publish_reported(&self, reported: &ReportedState) {
        let body = encode(reported);
        let mut shared = self.lock();
        shared.reported = Some(body);
        shared.reported_unsent = true;
        shared.flush();
    }

    /// The deployment key desired states are checked against now: its epoch along the
    /// controller's rollover chain (0: the bootstrap's key) and id, for the reported state.
    pub fn trusted_key(&self) -> (u32, KeyId) {
        self.lock().trusted_key
    }

    /// Publishes a health sample if the link is up; returns whether it was sent.
    pub fn publish_health(&self, sample: &HealthSample) -> bool {
        let mut shared = self.lock();
        shared.connected && shared.publish(TopicKind::Health, encode(sample), Tag::Other)
    }

    /// Publishes pull progress if the link is up and the rate allows (one a second, plus
    /// every report that ends a layer); returns whether it was sent. Callable from any
    /// thread (the engine's blocking pull calls it), never waits on the supervisor loop.
    pub fn publish_progress(&self, progress: &PullProgress) -> bool {
        let mut shared = self.lock();
        let now_ms = u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        shared.connected
            && shared.progress_gate.admit(now_ms, progress.stored)
            && shared.publish(TopicKind::Progress, encode(progress), Tag::Other)
    }

    /// Queues an event; it is sent until the broker acknowledges it.
    pub fn publish_event(&self, event: Event) {
        self.lock().push_event(event);
    }

    /// Sends a command reply, now or on the next connect.
    /// Connects with `username`/`password` from now on: a clean DISCONNECT (no last will),
    /// then a reconnect with them at once. `Link` goes `Down`, then `Up` again, or
    /// `CredentialsRefused` when the broker refuses them.
    pub fn switch_credentials(&self, username: String, password: String) {
        let mut shared = self.lock();
        shared.switch_to = Some((username, password));
        if !shared.connected {
            // Down (or refused): the next attempt, made now, uses the new credentials.
            drop(shared);
            self.wake.notify_one();
            return;
        }
        if let Err(err) = shared.client.try_disconnect() {
            tracing::debug!(error = %err, "disconnect for new credentials not queued");
            drop(shared);
            self.wake.notify_one();
        }
    }

    /// Publishes remote session output if the link is up and rumqttc takes it; `false`
    /// otherwise (the session waits and tries again: its output window bounds what waits).
    pub fn publish_session(&self, event: &coracle_proto::SessionEvent) -> bool {
        let mut shared = self.lock();
        shared.connected && shared.publish(TopicKind::SessionOut, encode(event), Tag::Other)
    }

    pub fn reply(&self, reply: CommandReply) {
        let mut shared = self.lock();
        shared.outbox.push_reply(reply);
        shared.flush();
    }

    /// Sets the lowest generation still accepted (see `AgentState::replay_floor`).
    pub fn set_replay_floor(&self, floor: Generation) {
        self.lock().floor = floor;
    }

    /// Events waiting for an acknowledgement, and events dropped for lack of room.
    pub fn queued_events(&self) -> (usize, u64) {
        let shared = self.lock();
        (shared.outbox.event_count(), shared.outbox.dropped_events())
    }

    /// Bytes of topic + body handed to the broker so far (for the traffic measurement).
    pub fn published_bytes(&self) -> u64 {
        self.lock().published_bytes
    }

    /// Says goodbye: publishes Offline (retained) and disconnects; the driver then returns.
    pub fn shutdown(&self) {
        let mut shared = self.lock();
        shared.stopping = true;
        if shared.connected {
            let body = encode(&coracle_proto::Presence::Offline);
            shared.publish(TopicKind::Online, body, Tag::Other);
        }
        if let Err(err) = shared.client.try_disconnect() {
            tracing::debug!(error = %err, "disconnect request not queued");
        }
        drop(shared);
        self.stop.notify_one();
    }
}
