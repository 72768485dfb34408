//! Request/response commands on `cmd` and `cmd/reply` (and the local control socket).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::ServiceName;
use crate::sealed::Sealed;

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
    /// A new broker password (`coracle device rotate`), sealed to the device's sealing key
    /// (`ReportedState::sealing_key`) so the broker carries only ciphertext; the plaintext is
    /// [`ROTATED_PASSWORD_LABEL`] then the password's UTF-8. The agent writes it to its
    /// bootstrap file, reconnects with it, and only then replies `Done`; the controller keeps
    /// the old password valid until that reply. Last variant: older agents answer nothing
    /// (they cannot decode it) and the controller's wait times out.
    RotatePassword {
        sealed: Sealed,
    },
    /// A new registry pull token of `epoch` (the controller's schedule), sealed to the
    /// device's sealing key; the plaintext is [`PULL_TOKEN_LABEL`] then the token's UTF-8.
    /// The agent keeps it (0600), pulls with it from then on and replies `Done`; the
    /// controller revokes the token two epochs back only then. Older agents answer nothing.
    RotatePullToken {
        epoch: u32,
        sealed: Sealed,
    },
}

/// What a [`Command::RotatePullToken`] box holds before the token.
pub const PULL_TOKEN_LABEL: &[u8] = b"coracle registry pull token\0";

/// What a [`Command::RotatePassword`] box holds before the password, so a box sealed for
/// another purpose (a direct registry's credential) is never taken for a password.
pub const ROTATED_PASSWORD_LABEL: &[u8] = b"coracle broker password\0";

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
