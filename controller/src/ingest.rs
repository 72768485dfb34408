//! Ingest: turns device messages (reported, health, events, online) into store rows, and
//! pull progress into the store's in-memory board. Runs as one task fed by the MQTT
//! client's channel, storing what has queued up (up to `BATCH` messages) in one
//! transaction. A malformed body is counted and logged at most a few times a minute;
//! nothing a device sends can stop the loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coracle_proto::topic::{self, Direction};
use coracle_proto::{
    DeviceId, Event, HealthSample, Presence, PullProgress, ReportedState, TopicKind,
};
use tokio::sync::mpsc;

use crate::broker::Inbound;
use crate::fleet_events::{FleetEvent, FleetEvents};
use crate::store::{now_unix, Incoming, Store, StoreError, Stored};

/// Messages stored per transaction at most: whatever has queued up meanwhile, so a quiet
/// fleet still gets each message stored at once.
const BATCH: usize = 128;

/// Why a message was dropped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("message on an unexpected topic")]
    Topic(#[from] topic::TopicError),
    #[error("{kind:?} body from device {device} cannot be decoded")]
    Decode {
        device: DeviceId,
        kind: TopicKind,
        #[source]
        source: coracle_proto::DecodeError,
    },
    #[error("{kind:?} body from device {device} names device {claimed}")]
    WrongDevice {
        device: DeviceId,
        kind: TopicKind,
        claimed: DeviceId,
    },
    #[error("cannot store a message from device {device}")]
    Store {
        device: DeviceId,
        #[source]
        source: StoreError,
    },
}

fn decode<T: serde::de::DeserializeOwned>(
    device: &DeviceId,
    kind: TopicKind,
    body: &[u8],
) -> Result<T, IngestError> {
    named(device, kind, coracle_proto::decode(body))
}

/// Names the device and topic of a decoding failure.
fn named<T>(
    device: &DeviceId,
    kind: TopicKind,
    decoded: Result<T, coracle_proto::DecodeError>,
) -> Result<T, IngestError> {
    decoded.map_err(|source| IngestError::Decode {
        device: device.clone(),
        kind,
        source,
    })
}

/// A device message, decoded: what to store, and what its fleet event will say.
enum Decoded {
    Reported(ReportedState),
    Progress(DeviceId, PullProgress),
    Health(DeviceId, HealthSample, i64),
    Event(DeviceId, Event),
    Presence(DeviceId, bool),
}

/// The message decoded; `None` when there is nothing to store: another direction, an
/// empty retained clear, a command reply.
fn decode_message(msg: &Inbound) -> Result<Option<Decoded>, IngestError> {
    let (device, kind) = topic::parse(&msg.topic)?;
    if kind.direction() != Direction::DeviceToController || msg.payload.is_empty() {
        return Ok(None);
    }
    Ok(Some(match kind {
        TopicKind::Reported => {
            let state = named(&device, kind, ReportedState::decode(&msg.payload))?;
            if state.device != device {
                return Err(IngestError::WrongDevice {
                    device,
                    kind,
                    claimed: state.device,
                });
            }
            Decoded::Reported(state)
        }
        TopicKind::Progress => {
            let progress = decode(&device, kind, &msg.payload)?;
            Decoded::Progress(device, progress)
        }
        TopicKind::Health => {
            let sample = named(&device, kind, HealthSample::decode(&msg.payload))?;
            Decoded::Health(device, sample, now_unix())
        }
        TopicKind::Events => {
            let event = decode(&device, kind, &msg.payload)?;
            Decoded::Event(device, event)
        }
        TopicKind::Online => {
            let presence: Presence = decode(&device, kind, &msg.payload)?;
            Decoded::Presence(device, presence == Presence::Online)
        }
        // Command replies are awaited by whoever sent the command, not stored.
        TopicKind::CmdReply
        | TopicKind::Desired
        | TopicKind::Cmd
        | TopicKind::Keys
        | TopicKind::AgentUpdate
        | TopicKind::Session
        | TopicKind::SessionOut => return Ok(None),
    }))
}

impl Decoded {
    fn incoming(&self) -> Incoming<'_> {
        match self {
            Decoded::Reported(state) => Incoming::Reported(state),
            Decoded::Progress(device, _) => Incoming::Exists(device),
            Decoded::Health(device, sample, at_unix) => Incoming::Health {
                device,
                at_unix: *at_unix,
                sample,
            },
            Decoded::Event(device, event) => Incoming::Event { device, event },
            Decoded::Presence(device, online) => Incoming::Presence {
                device,
                online: *online,
            },
        }
    }

    fn device(&self) -> &DeviceId {
        match self {
            Decoded::Reported(state) => &state.device,
            Decoded::Progress(device, _)
            | Decoded::Health(device, ..)
            | Decoded::Event(device, _)
            | Decoded::Presence(device, _) => device,
        }
    }

    /// The fleet event of a stored message (none for a removed device's message).
    fn stored(self, stored: Stored, store: &Store) -> Option<FleetEvent> {
        match (self, stored) {
            (Decoded::Reported(state), Stored::Reported { known: true }) => {
                store.progress.settle(&state);
                Some(FleetEvent::Reported {
                    device: state.device,
                })
            }
            (Decoded::Progress(device, progress), Stored::Exists(true)) => store
                .progress
                .record(&device, progress, now_unix())
                .then(|| store.progress.latest(&device))
                .flatten()
                .map(|progress| FleetEvent::Progress { device, progress }),
            (
                Decoded::Health(device, ..),
                Stored::Health {
                    known: true,
                    revived,
                },
            ) => Some(match revived {
                true => FleetEvent::Presence {
                    device,
                    online: true,
                },
                false => FleetEvent::Health { device },
            }),
            (Decoded::Event(device, _), Stored::Event(Some(_))) => {
                Some(FleetEvent::Event { device })
            }
            (Decoded::Presence(device, online), Stored::Presence { known: true }) => {
                Some(FleetEvent::Presence { device, online })
            }
            _ => None,
        }
    }
}

/// Decodes and stores one message; the fleet event it makes, if any (none for a removed
/// device's message or an empty retained clear).
pub fn ingest(store: &Store, msg: &Inbound) -> Result<Option<FleetEvent>, IngestError> {
    let Some(decoded) = decode_message(msg)? else {
        return Ok(None);
    };
    let stored = store.store_one(decoded.incoming());
    finish(store, decoded, stored)
}

/// Decodes and stores `msgs` in one transaction; each message's fleet event or error, in
/// order. If the transaction fails, each message is stored by itself, so one message the
/// store refuses costs only itself.
pub fn ingest_many(
    store: &Store,
    msgs: &[Inbound],
) -> Vec<Result<Option<FleetEvent>, IngestError>> {
    let decoded: Vec<Result<Option<Decoded>, IngestError>> =
        msgs.iter().map(decode_message).collect();
    let incoming: Vec<Incoming<'_>> = decoded
        .iter()
        .flatten()
        .flatten()
        .map(Decoded::incoming)
        .collect();
    let stored: Vec<Result<Stored, StoreError>> = match store.store_incoming(&incoming) {
        Ok(all) => all.into_iter().map(Ok).collect(),
        Err(_) => incoming.iter().map(|one| store.store_one(*one)).collect(),
    };
    let mut stored = stored.into_iter();
    decoded
        .into_iter()
        .map(|decoded| {
            let Some(decoded) = decoded? else {
                return Ok(None);
            };
            // One result per incoming message, in the same order.
            let outcome = stored.next().unwrap_or(Ok(Stored::Exists(false)));
            finish(store, decoded, outcome)
        })
        .collect()
}

fn finish(
    store: &Store,
    decoded: Decoded,
    stored: Result<Stored, StoreError>,
) -> Result<Option<FleetEvent>, IngestError> {
    match stored {
        Ok(stored) => Ok(decoded.stored(stored, store)),
        Err(source) => Err(IngestError::Store {
            device: decoded.device().clone(),
            source,
        }),
    }
}

/// Lets through `burst` log lines per `window`, counting the rest.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    burst: u32,
    started: Instant,
    seen: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(window: Duration, burst: u32) -> Self {
        Self {
            window,
            burst,
            started: Instant::now(),
            seen: 0,
            suppressed: 0,
        }
    }

    /// Whether to log now; when a new window opens, returns how many were suppressed.
    pub fn allow(&mut self, now: Instant) -> (bool, u64) {
        let mut dropped = 0;
        if now.duration_since(self.started) >= self.window {
            dropped = std::mem::take(&mut self.suppressed);
            self.started = now;
            self.seen = 0;
        }
        self.seen += 1;
        if self.seen <= self.burst {
            (true, dropped)
        } else {
            self.suppressed += 1;
            (false, dropped)
        }
    }
}

/// The ingest loop; ends when the MQTT client's channel closes. Observers (SSE, rollouts)
/// get each stored message on `notify`.
pub async fn run(
    store: Arc<Store>,
    mut inbound: mpsc::Receiver<Inbound>,
    notify: FleetEvents,
    counters: Arc<crate::metrics::IngestCounters>,
) {
    let mut limiter = LogLimiter::new(Duration::from_secs(60), 10);
    let mut batch = Vec::with_capacity(BATCH);
    while inbound.recv_many(&mut batch, BATCH).await > 0 {
        // Store calls are short; blocking_in_place keeps the runtime's other tasks moving.
        let results = tokio::task::block_in_place(|| ingest_many(&store, &batch));
        for (msg, result) in batch.drain(..).zip(results) {
            note(&msg, result, &notify, &counters, &mut limiter);
        }
    }
}

/// Counts, announces or logs one message's outcome.
fn note(
    msg: &Inbound,
    result: Result<Option<FleetEvent>, IngestError>,
    notify: &FleetEvents,
    counters: &crate::metrics::IngestCounters,
    limiter: &mut LogLimiter,
) {
    match result {
        Ok(None) => {}
        Ok(Some(done)) => {
            counters.stored();
            if let FleetEvent::Presence { device, online } = &done {
                tracing::info!(device = %device, online, "device presence changed");
            }
            notify.send(done);
        }
        Err(err) => {
            counters.dropped();
            let (log, dropped) = limiter.allow(Instant::now());
            if log {
                tracing::warn!(topic = %msg.topic, error = %crate::api::error::error_chain(&err), suppressed = dropped, "device message dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::samples;

    fn setup() -> (Store, DeviceId) {
        Store::with_test_device(samples::device().as_str())
    }

    fn msg(kind: TopicKind, device: &DeviceId, payload: Vec<u8>) -> Inbound {
        Inbound {
            topic: kind.for_device(device),
            payload,
        }
    }

    #[test]
    fn each_device_topic_is_decoded_and_stored() {
        let (store, id) = setup();
        let mut reported = samples::reported_state(1);
        reported.device = id.clone();
        let cases = [
            (TopicKind::Reported, coracle_proto::encode(&reported)),
            (
                TopicKind::Health,
                coracle_proto::encode(&samples::health_sample()),
            ),
            (
                TopicKind::Events,
                coracle_proto::encode(&samples::events()[0]),
            ),
            (TopicKind::Online, coracle_proto::encode(&Presence::Online)),
        ];
        for (kind, body) in cases {
            let done = ingest(&store, &msg(kind, &id, body)).unwrap();
            assert!(done.is_some(), "{kind:?}");
        }
        assert!(store.device(&id).unwrap().online);
        assert_eq!(store.events(&id, 10).unwrap().len(), 1);
        assert_eq!(store.health_history(&id).unwrap().len(), 1);
        assert_eq!(store.reported(&id).unwrap(), Some(reported));
        // The last will says offline.
        let will = msg(
            TopicKind::Online,
            &id,
            coracle_proto::encode(&Presence::Offline),
        );
        ingest(&store, &will).unwrap();
        assert!(!store.device(&id).unwrap().online);
    }

    #[test]
    fn malformed_bodies_are_errors_and_nothing_is_stored() {
        let (store, id) = setup();
        for body in [vec![9, 9, 9], vec![1, 0xff, 0xff, 0xff], vec![1]] {
            let err = ingest(&store, &msg(TopicKind::Reported, &id, body)).unwrap_err();
            assert!(matches!(err, IngestError::Decode { .. }), "{err}");
        }
        assert_eq!(store.reported(&id).unwrap(), None);
        let err = ingest(
            &store,
            &Inbound {
                topic: "elsewhere/x".into(),
                payload: vec![1],
            },
        )
        .unwrap_err();
        assert!(matches!(err, IngestError::Topic(_)));
    }

    #[test]
    fn a_device_cannot_report_for_another() {
        let (store, id) = setup();
        let mut reported = samples::reported_state(1);
        reported.device = "other".parse().unwrap();
        let err = ingest(
            &store,
            &msg(TopicKind::Reported, &id, coracle_proto::encode(&reported)),
        )
        .unwrap_err();
        assert!(matches!(err, IngestError::WrongDevice { .. }));
    }

    #[test]
    fn a_batch_stores_each_good_message_and_names_each_bad_one() {
        let (store, id) = setup();
        let gone: DeviceId = "pi-removed".parse().unwrap();
        let mut reported = samples::reported_state(1);
        reported.device = id.clone();
        let health = coracle_proto::encode(&samples::health_sample());
        let batch = [
            msg(TopicKind::Health, &id, health.clone()),
            msg(TopicKind::Reported, &id, vec![9, 9, 9]),
            msg(TopicKind::Reported, &id, coracle_proto::encode(&reported)),
            msg(TopicKind::Health, &gone, health),
            msg(TopicKind::Desired, &id, vec![1]),
            msg(
                TopicKind::Events,
                &id,
                coracle_proto::encode(&samples::events()[0]),
            ),
        ];
        let results = ingest_many(&store, &batch);
        assert_eq!(results.len(), batch.len());
        // The new device was offline: its first sample brings it online.
        assert!(matches!(
            &results[0],
            Ok(Some(FleetEvent::Presence { online: true, .. }))
        ));
        assert!(matches!(&results[1], Err(IngestError::Decode { .. })));
        assert!(matches!(&results[2], Ok(Some(FleetEvent::Reported { .. }))));
        // A removed device's message and one for the device are stored as nothing.
        assert!(matches!(&results[3], Ok(None)));
        assert!(matches!(&results[4], Ok(None)));
        assert!(matches!(&results[5], Ok(Some(FleetEvent::Event { .. }))));
        assert_eq!(store.reported(&id).unwrap(), Some(reported));
        assert_eq!(store.health_history(&id).unwrap().len(), 1);
        assert_eq!(store.events(&id, 10).unwrap().len(), 1);
    }

    #[test]
    fn log_limiter_lets_a_burst_through_then_counts() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(60), 2);
        assert_eq!(limiter.allow(start), (true, 0));
        assert_eq!(limiter.allow(start), (true, 0));
        assert_eq!(limiter.allow(start), (false, 0));
        assert_eq!(limiter.allow(start), (false, 0));
        assert_eq!(limiter.allow(start + Duration::from_secs(61)), (true, 2));
    }
}
