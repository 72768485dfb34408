//! `Lifecycle`: how a service's container is stopped and how long a new one must stay up
//! before its generation commits (issue 15). One struct, the last field of `ServiceSpec`,
//! so the wire layout grows once (see `legacy`). Signals travel as numbers: the generic
//! Linux numbering, which x86_64, arm64 and 32-bit ARM share for every name below.

use serde::{Deserialize, Serialize};

/// Stop signal, grace period, init and minimum uptime of one service; `Default` is
/// Docker's behaviour (SIGTERM, 10 s, no init) and the agent's default uptime gate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// compose `stop_signal`, as a number (`signal_number`); `None`: SIGTERM.
    pub stop_signal: Option<u8>,
    /// compose `stop_grace_period`; `None`: 10 s.
    pub stop_grace_ms: Option<u32>,
    /// compose `init: true`: the agent's own init runs as PID 1, forwards signals to the
    /// service's process and reaps orphans.
    pub init: bool,
    /// compose `deploy.update_config.monitor`: how long a new container without a health
    /// check must stay up before its generation commits; `None`: `DEFAULT_MIN_UPTIME_MS`.
    pub min_uptime_ms: Option<u32>,
}

/// Docker's `stop_grace_period` default.
pub const DEFAULT_STOP_GRACE_MS: u32 = 10_000;
/// Minimum uptime of a container without a health check before its generation commits.
pub const DEFAULT_MIN_UPTIME_MS: u32 = 10_000;
/// SIGTERM.
pub const DEFAULT_STOP_SIGNAL: u8 = 15;
/// The highest standard signal (SIGSYS). Real-time signals are refused: nothing stops
/// on them in practice, and the runtime signals through `nix::Signal`, which has none.
pub const MAX_SIGNAL: u8 = 31;

impl Lifecycle {
    pub fn stop_signal(&self) -> u8 {
        self.stop_signal.unwrap_or(DEFAULT_STOP_SIGNAL)
    }

    pub fn stop_grace_ms(&self) -> u32 {
        self.stop_grace_ms.unwrap_or(DEFAULT_STOP_GRACE_MS)
    }

    pub fn min_uptime_ms(&self) -> u32 {
        self.min_uptime_ms.unwrap_or(DEFAULT_MIN_UPTIME_MS)
    }
}

/// Signal names in number order (1 = HUP), without the `SIG` prefix.
const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// Docker's reading of a stop signal: `SIGUSR1`, `USR1` (any case), `IOT`, `POLL`, or a
/// number 1..=31.
pub fn signal_number(text: &str) -> Option<u8> {
    if let Ok(n) = text.parse::<u8>() {
        return (1..=MAX_SIGNAL).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let name = match name {
        "IOT" => "ABRT",
        "POLL" => "IO",
        "CLD" => "CHLD",
        other => other,
    };
    if let Some(i) = SIGNALS.iter().position(|s| *s == name) {
        return u8::try_from(i + 1).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers_read_as_docker_reads_them() {
        for (text, want) in [
            ("SIGTERM", Some(15)),
            ("TERM", Some(15)),
            ("sigint", Some(2)),
            ("SIGUSR1", Some(10)),
            ("USR2", Some(12)),
            ("SIGQUIT", Some(3)),
            ("9", Some(9)),
            ("31", Some(31)),
            ("SIGRTMIN+3", None),
            ("IOT", Some(6)),
            ("0", None),
            ("65", None),
            ("-1", None),
            ("SIGNOPE", None),
            ("", None),
            ("32", None),
        ] {
            assert_eq!(signal_number(text), want, "{text}");
        }
    }
}
