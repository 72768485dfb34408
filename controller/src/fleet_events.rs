//! The fleet event bus: one `FleetEvent` per change that observers care about — a stored
//! device message (from `ingest`), a presence change (also from the `presence` sweep) and
//! a rollout's move (from `rollout::driver`). The SSE stream sends each as JSON; the
//! rollout driver wakes on device reports. Producers and consumers depend on this module
//! only, never on each other.

use std::sync::Arc;
use std::time::Duration;

use coracle_proto::DeviceId;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::net::SharedThrottle;
use crate::store::{DeviceStatus, LatestProgress, RolloutPhase};

/// The bus every producer sends on; observers `subscribe()`. With other controllers on the
/// same database, what this one makes also goes to the relay (`event_relay`), and what
/// they make arrives through `deliver_remote`.
#[derive(Debug, Clone)]
pub struct FleetEvents {
    local: broadcast::Sender<FleetEvent>,
    relay: Option<mpsc::Sender<FleetEvent>>,
    /// Events the relay had no room for, logged at most once a minute.
    relay_full: Arc<SharedThrottle>,
}

impl FleetEvents {
    /// A bus keeping up to `capacity` events for its slowest observer.
    pub fn new(capacity: usize) -> Self {
        Self {
            local: broadcast::channel(capacity).0,
            relay: None,
            relay_full: Arc::new(SharedThrottle::new(Duration::from_secs(60))),
        }
    }

    /// Also hands the events this controller makes to `relay`.
    pub fn with_relay(mut self, relay: mpsc::Sender<FleetEvent>) -> Self {
        self.relay = Some(relay);
        self
    }

    /// An event this controller made: to its observers, and to the other controllers.
    pub fn send(&self, event: FleetEvent) {
        if let Some(relay) = &self.relay {
            // Pull progress reaches every controller from the broker itself.
            let relayed = matches!(event, FleetEvent::Progress { .. })
                || relay.try_send(event.clone()).is_ok();
            if !relayed {
                if let Some(missed) = self.relay_full.hit() {
                    tracing::warn!(missed, "fleet event relay behind: other controllers miss events (their streams show them late or not at all)");
                }
            }
        }
        let _ = self.local.send(event);
    }

    /// An event another controller made: to this controller's observers only.
    pub fn deliver_remote(&self, event: FleetEvent) {
        let _ = self.local.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.local.subscribe()
    }
}

/// What changed in the fleet (also what the SSE stream sends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FleetEvent {
    Reported {
        device: DeviceId,
    },
    Health {
        device: DeviceId,
    },
    Event {
        device: DeviceId,
    },
    Presence {
        device: DeviceId,
        online: bool,
    },
    /// A device's pull progress (kept in memory, not stored).
    Progress {
        device: DeviceId,
        progress: LatestProgress,
    },
    /// A rollout changed phase, started a wave, or a device's progress changed.
    Rollout {
        rollout: i64,
        change: RolloutChange,
    },
}

/// One rollout transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RolloutChange {
    Phase {
        phase: RolloutPhase,
        reason: Option<String>,
    },
    Wave {
        wave: usize,
        devices: Vec<DeviceId>,
    },
    Device {
        device: DeviceId,
        status: DeviceStatus,
        generation: Option<u64>,
        reason: Option<String>,
    },
}
