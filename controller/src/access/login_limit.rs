//! `LoginLimit`: failed dashboard logins per source address. After `MAX_FAILURES` wrong
//! tokens within `WINDOW`, the address gets 429 without its token being checked until the
//! window has passed. The admin token is 256 random bits, so this is not what keeps it
//! safe; it keeps a guessing client from costing CPU and log lines without end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it the oldest window is forgotten.
const MAX_ADDRESSES: usize = 4096;

/// Failed logins per source address; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct LoginLimit {
    failures: Arc<Mutex<HashMap<IpAddr, (Instant, u32)>>>,
}

impl LoginLimit {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        // Each operation is a few map calls that cannot panic; a poisoned map is consistent.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` may try a login at `now`.
    pub fn allows(&self, ip: IpAddr, now: Instant) -> bool {
        match self.lock().get(&ip) {
            Some((start, count)) => {
                now.saturating_duration_since(*start) >= WINDOW || *count < MAX_FAILURES
            }
            None => true,
        }
    }

    /// Counts a failed login from `ip` at `now`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.lock();
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&ip) {
            failures.retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            if failures.len() >= MAX_ADDRESSES {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        let (start, count) = failures.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_a_minute_lock_out_that_address_until_the_minute_passes() {
        let limit = LoginLimit::default();
        let start = Instant::now();
        let attacker = IpAddr::from([192, 0, 2, 1]);
        let operator = IpAddr::from([192, 0, 2, 2]);
        for n in 0..MAX_FAILURES {
            assert!(limit.allows(attacker, start), "attempt {n}");
            limit.failed(attacker, start + Duration::from_secs(u64::from(n)));
        }
        assert!(!limit.allows(attacker, start + Duration::from_secs(30)));
        assert!(limit.allows(operator, start + Duration::from_secs(30)));
        assert!(limit.allows(attacker, start + WINDOW));
    }

    #[test]
    fn the_table_stays_bounded() {
        let limit = LoginLimit::default();
        let now = Instant::now();
        for n in 0..(MAX_ADDRESSES as u32 + 100) {
            limit.failed(IpAddr::from(n.to_be_bytes()), now);
        }
        assert!(limit.lock().len() <= MAX_ADDRESSES);
    }
}
