//! Request/response commands on `cmd` and `cmd/reply` (and the local control socket).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::ServiceName;

/// A request to a device; `id` pairs it with its reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub id: u32,
    pub command: Command,
}

/// What the device is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The last `lines` log lines of a service, at most `max_bytes` in all.
    LogsTail {
        service: ServiceName,
        lines: u32,
        max_bytes: u32,
    },
    Restart {
        service: ServiceName,
    },
    /// Re-run health checks and publish a fresh reported state now.
    Recheck,
}

/// The reply to the request with the same `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    pub id: u32,
    pub outcome: CommandOutcome,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    Logs { lines: Vec<String>, truncated: bool },
    Done,
    Failed { reason: String },
}

/// Device presence, published retained on `online` and as the MQTT last will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presence {
    Online,
    Offline,
}
