//! Local control socket: `coracle-agent status|ps|logs|exec` talk to the running agent over a
//! Unix socket, one request and its reply(s) per connection, as proto frames (a 4-byte
//! length, then a versioned postcard body). The server forwards each request to the supervisor, which owns
//! the state; the socket itself is root-only (mode 0600).

pub mod client;
pub mod server;

use coracle_proto::{ReportedState, ServiceName};
use serde::{Deserialize, Serialize};

/// A request from the local CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalRequest {
    /// The reported state plus link and queue figures.
    Status,
    /// The last `lines` log lines of a service; with `follow`, new lines keep coming.
    Logs {
        service: ServiceName,
        lines: u32,
        follow: bool,
    },
    /// Run `argv` inside the service's running container (no stdin, no tty), killed after
    /// `timeout_ms`; the answer comes when it has ended.
    Exec {
        service: ServiceName,
        argv: Vec<String>,
        timeout_ms: u32,
    },
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalReply {
    Status(Box<AgentStatus>),
    Logs {
        lines: Vec<String>,
    },
    /// How an `Exec` ended: exit code (128 + signal when killed), the last 4 KiB of its
    /// stdout and stderr, and whether the timeout killed it.
    Exec {
        exit_code: i32,
        output: String,
        timed_out: bool,
    },
    Failed {
        reason: String,
    },
}

/// What `status` and `ps` show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub reported: ReportedState,
    pub broker_connected: bool,
    pub queued_events: u64,
    pub dropped_events: u64,
}
