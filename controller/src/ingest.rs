//! Ingest: turns device messages (reported, health, events, online) into store rows, and
//! pull progress into the store's in-memory board. Runs as
//! one task fed by the MQTT client's channel. A malformed body is counted and logged at
//! most a few times a minute; nothing a device sends can stop the loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coracle_proto::topic::{self, Direction};
use coracle_proto::{
    DeviceId, Event, HealthSample, Presence, PullProgress, ReportedState, TopicKind,
};
use tokio::sync::mpsc;

use crate::broker::Inbound;
use crate::fleet_events::{FleetEvent, FleetEvents};
use crate::store::{now_unix, Store, StoreError};

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

/// Decodes and stores one message; the fleet event it makes, if any (none for a removed
/// device's message or an empty retained clear).
pub fn ingest(store: &Store, msg: &Inbound) -> Result<Option<FleetEvent>, IngestError> {
    let (device, kind) = topic::parse(&msg.topic)?;
    if kind.direction() != Direction::DeviceToController || msg.payload.is_empty() {
        return Ok(None);
    }
    let stored = |result: Result<bool, StoreError>| {
        result.map_err(|source| IngestError::Store {
            device: device.clone(),
            source,
        })
    };
    let event = match kind {
        TopicKind::Reported => {
            let state = named(&device, kind, ReportedState::decode(&msg.payload))?;
            if state.device != device {
                return Err(IngestError::WrongDevice {
                    device,
                    kind,
                    claimed: state.device,
                });
            }
            let known = stored(store.put_reported(&state))?;
            if known {
                store.progress.settle(&state);
            }
            known.then(|| FleetEvent::Reported {
                device: device.clone(),
            })
        }
        TopicKind::Progress => {
            let progress: PullProgress = decode(&device, kind, &msg.payload)?;
            let known = stored(store.device_exists(&device))?;
            (known && store.progress.record(&device, progress, now_unix()))
                .then(|| store.progress.latest(&device))
                .flatten()
                .map(|progress| FleetEvent::Progress {
                    device: device.clone(),
                    progress,
                })
        }
        TopicKind::Health => {
            let sample = named(&device, kind, HealthSample::decode(&msg.payload))?;
            let known = stored(store.add_health(&device, now_unix(), &sample))?;
            // Health samples are the heartbeat: one from a device marked offline by the
            // sweep (not by its last will, which is followed by a fresh `online`) revives it.
            let revived = known && stored(store.mark_heard(&device))?;
            known.then(|| match revived {
                true => FleetEvent::Presence {
                    device: device.clone(),
                    online: true,
                },
                false => FleetEvent::Health {
                    device: device.clone(),
                },
            })
        }
        TopicKind::Events => {
            let event: Event = decode(&device, kind, &msg.payload)?;
            let id = store
                .add_event(&device, &event)
                .map_err(|source| IngestError::Store {
                    device: device.clone(),
                    source,
                })?;
            id.map(|_| FleetEvent::Event {
                device: device.clone(),
            })
        }
        TopicKind::Online => {
            let presence: Presence = decode(&device, kind, &msg.payload)?;
            let online = presence == Presence::Online;
            stored(store.set_presence(&device, online))?.then(|| FleetEvent::Presence {
                device: device.clone(),
                online,
            })
        }
        // Command replies are awaited by whoever sent the command, not stored.
        TopicKind::CmdReply
        | TopicKind::Desired
        | TopicKind::Cmd
        | TopicKind::Keys
        | TopicKind::AgentUpdate
        | TopicKind::Session
        | TopicKind::SessionOut => None,
    };
    Ok(event)
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
    while let Some(msg) = inbound.recv().await {
        // SQLite calls are short; blocking_in_place keeps the runtime's other tasks moving.
        let result = tokio::task::block_in_place(|| ingest(&store, &msg));
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
