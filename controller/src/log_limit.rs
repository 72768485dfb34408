//! `CallsiteLimit`: a `tracing` filter that lets through at most `burst` events per period
//! from each log statement of a crate whose logging we cannot change. `mqtt5` logs once
//! per failed accept and once per client that misbehaves; a peer must not be able to turn
//! that into a log storm (issue 17: 757,814 lines in 4 s). Our own code throttles at the
//! source (`net::throttle`); this is the net under the crates we do not own. It also mutes
//! the few lines of theirs that are false for Coracle ([`MUTED`]): `mqtt5` announces
//! "Anonymous authentication enabled" for the provider it builds by default, which Coracle
//! replaces with its own (device passwords, no anonymous connects) before any client is
//! accepted (issue 17).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// Per-callsite budget for events whose target starts with `prefix`.
#[derive(Debug)]
pub struct CallsiteLimit {
    prefix: &'static str,
    spent: Mutex<Budgets<Identifier>>,
}

/// Per key (a log statement): when its current period began and how many events it used.
#[derive(Debug)]
struct Budgets<K> {
    period: Duration,
    burst: u32,
    spent: HashMap<K, (Instant, u32)>,
}

impl<K: Hash + Eq> Budgets<K> {
    /// Whether one more event for `key` fits its budget at `now`.
    fn admit(&mut self, key: K, now: Instant) -> bool {
        let (start, used) = self.spent.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= self.period {
            *start = now;
            *used = 0;
        }
        *used += 1;
        *used <= self.burst
    }
}

impl CallsiteLimit {
    pub fn new(prefix: &'static str, period: Duration, burst: u32) -> Self {
        Self {
            prefix,
            spent: Mutex::new(Budgets {
                period,
                burst,
                spent: HashMap::new(),
            }),
        }
    }

    fn limited(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && meta.target().starts_with(self.prefix)
    }

    fn admit(&self, callsite: Identifier, now: Instant) -> bool {
        // Counting cannot panic half way; a poisoned map still holds usable counts.
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        spent.admit(callsite, now)
    }
}

/// Messages of the limited crates that are not true of Coracle's setup.
pub const MUTED: &[&str] = &["Anonymous authentication enabled"];

/// Finds whether an event's message is one of [`MUTED`].
struct MutedMessage(bool);

impl Visit for MutedMessage {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 |= MUTED.contains(&value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 |= MUTED.contains(&format!("{value:?}").as_str());
        }
    }
}

impl<S> Filter<S> for CallsiteLimit {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        !self.limited(meta) || self.admit(meta.callsite(), Instant::now())
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        if !self.limited(event.metadata()) {
            return true;
        }
        let mut muted = MutedMessage(false);
        event.record(&mut muted);
        !muted.0
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // Limited callsites are asked about every event; the rest are always on.
        if self.limited(meta) {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_statement_gets_its_burst_per_period_and_others_their_own() {
        let mut budgets = Budgets {
            period: Duration::from_secs(10),
            burst: 3,
            spent: HashMap::new(),
        };
        let start = Instant::now();
        let passed = (0..100_000)
            .filter(|i| budgets.admit("accept error", start + Duration::from_micros(*i)))
            .count();
        assert_eq!(passed, 3);
        assert!(budgets.admit("connect timeout", start));
        assert!(budgets.admit("accept error", start + Duration::from_secs(10)));
    }
}
