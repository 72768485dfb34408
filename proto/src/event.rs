//! `Event`: things that happened on a device, sent once each (QoS 1), queued while offline.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::ids::{Generation, ServiceName};
use crate::reported::Health;

/// An event with the device's wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the Unix epoch, as the device's clock had it.
    pub at_unix_s: u64,
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    ContainerExited {
        service: ServiceName,
        exit_code: i32,
        oom_killed: bool,
    },
    ContainerRestarted {
        service: ServiceName,
        restart_count: u32,
    },
    HealthChanged {
        service: ServiceName,
        health: Health,
    },
    PullProgress {
        image: Digest,
        done_bytes: u64,
        total_bytes: u64,
        /// True when the bytes come from a delta rather than the full layers.
        delta: bool,
    },
    PullFailed {
        image: Digest,
        reason: String,
    },
    Applied {
        generation: Generation,
    },
    RolledBack {
        generation: Generation,
        service: ServiceName,
        reason: String,
    },
    /// Input the device refused; nothing changed because of it.
    Rejected {
        reason: RejectReason,
        detail: String,
    },
}

/// The class of a refused input, so dashboards can count them without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    Malformed,
    UnsupportedVersion,
    TooLarge,
    UnknownKey,
    BadSignature,
    WrongDevice,
    Replay,
    Invalid,
}
