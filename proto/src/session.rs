//! Remote sessions (issue 19): `logs -f` and `exec` multiplexed by id over the device's own
//! MQTT connection, so a device behind NAT needs nothing new. The controller sends
//! [`SessionRequest`]s on `session`, the device answers with [`SessionEvent`]s on
//! `session/out`.
//!
//! Flow control is a byte window: the device has at most [`OUTPUT_WINDOW`] bytes of output
//! unacknowledged, the controller acknowledges what it has passed on ([`SessionInput::Ack`]).
//! Liveness: the controller sends something at least every [`KEEPALIVE_SECS`]; a device
//! that hears nothing for [`CLIENT_GONE_SECS`] ends the session, so a vanished client
//! never leaves a device streaming. Older agents do not subscribe to `session`: they
//! answer nothing and the controller's open times out.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::ServiceName;

/// Output bytes a device may have in flight per session before it waits for an `Ack`.
pub const OUTPUT_WINDOW: u32 = 256 * 1024;
/// Largest output chunk in one message.
pub const MAX_CHUNK: usize = 16 * 1024;
/// The controller sends a keepalive (or other input) at least this often.
pub const KEEPALIVE_SECS: u64 = 5;
/// A device ends a session after hearing nothing from the controller for this long.
pub const CLIENT_GONE_SECS: u64 = 20;
/// Sessions one device runs at once; one more is refused with `TooManySessions`.
pub const MAX_SESSIONS_PER_DEVICE: usize = 8;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// What a session does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionKind {
    /// A service's log: lines since `since_unix_ns` (all when `None`), at most the last
    /// `tail` of them (all when `None`), each prefixed with its RFC 3339 time when
    /// `timestamps`; then, with `follow`, new lines as the container writes them.
    Logs {
        service: ServiceName,
        since_unix_ns: Option<i64>,
        tail: Option<u32>,
        timestamps: bool,
        follow: bool,
    },
    /// `argv` in the service's running container: with `tty`, on a pseudo-terminal of that
    /// size (stdout only); without, on pipes (stdout and stderr apart).
    Exec {
        service: ServiceName,
        argv: Vec<String>,
        tty: Option<WindowSize>,
    },
}

/// Controller → device, on `session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    pub session: u32,
    pub input: SessionInput,
}

/// What the controller sends within a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionInput {
    Open(SessionKind),
    Stdin(Vec<u8>),
    /// End of stdin (the exec'd process reads EOF).
    CloseStdin,
    Resize(WindowSize),
    /// `bytes` more of the output were passed on: the window opens by that much.
    Ack {
        bytes: u32,
    },
    /// The client is still there.
    Keepalive,
    /// The client went away: stop and kill what the session started.
    Close,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Device → controller, on `session/out`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub session: u32,
    pub output: SessionOutput,
}

/// What the device sends within a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOutput {
    /// The session runs (for exec: the process started).
    Opened,
    /// Output; `seq` counts chunks from 0, so a lost one is noticed.
    Data {
        seq: u32,
        stream: OutputStream,
        data: Vec<u8>,
    },
    /// The end: the exec'd process's exit code (128 + signal), 0 for a log that ended.
    Exited { code: i32 },
    /// The session could not start or broke off.
    Failed(SessionFailure),
}

/// Why a session failed, named so the operator sees what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionFailure {
    NoSuchService,
    NotRunning,
    TooManySessions,
    /// No message from the controller for [`CLIENT_GONE_SECS`] (or no activity for the
    /// device's idle limit).
    TimedOut,
    /// Anything else, as the device words it.
    Other(String),
}

impl core::fmt::Display for SessionFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SessionFailure::NoSuchService => f.write_str("no such service on the device"),
            SessionFailure::NotRunning => f.write_str("the service's container is not running"),
            SessionFailure::TooManySessions => write!(
                f,
                "the device already runs {MAX_SESSIONS_PER_DEVICE} sessions"
            ),
            SessionFailure::TimedOut => f.write_str("the session timed out"),
            SessionFailure::Other(reason) => f.write_str(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    #[test]
    fn session_messages_round_trip_through_the_codec() {
        let open = SessionRequest {
            session: 7,
            input: SessionInput::Open(SessionKind::Exec {
                service: "web".to_string().try_into().unwrap(),
                argv: alloc::vec!["sh".into()],
                tty: Some(WindowSize {
                    rows: 40,
                    cols: 120,
                }),
            }),
        };
        assert_eq!(decode::<SessionRequest>(&encode(&open)).unwrap(), open);
        let out = SessionEvent {
            session: 7,
            output: SessionOutput::Data {
                seq: 3,
                stream: OutputStream::Stderr,
                data: alloc::vec![0, 255, 10],
            },
        };
        assert_eq!(decode::<SessionEvent>(&encode(&out)).unwrap(), out);
    }

    #[test]
    fn a_full_chunk_fits_one_protocol_body() {
        let out = SessionEvent {
            session: u32::MAX,
            output: SessionOutput::Data {
                seq: u32::MAX,
                stream: OutputStream::Stdout,
                data: alloc::vec![0xff; MAX_CHUNK],
            },
        };
        assert!(encode(&out).len() < crate::codec::MAX_BODY_BYTES);
    }
}
