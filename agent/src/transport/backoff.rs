//! Reconnect backoff: exponential with full jitter, so a fleet that lost its broker does not
//! come back in lockstep. rumqttc's `poll()` retries at once on error; the driver sleeps
//! `next()` between attempts.

use std::time::Duration;

/// Exponential backoff state with a small xorshift generator for the jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// Backoff between `min_ms` and `max_ms`; `seed` varies the jitter per device.
    pub fn new(min_ms: u64, max_ms: u64, seed: u64) -> Self {
        Self {
            min_ms: min_ms.max(1),
            max_ms: max_ms.max(min_ms.max(1)),
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt: uniform in [ceiling/2, ceiling], where the
    /// ceiling doubles per failure up to `max_ms`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min_ms
            .saturating_mul(1u64.checked_shl(self.failures.min(40)).unwrap_or(u64::MAX))
            .min(self.max_ms);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        Duration::from_millis(half + self.random() % (ceiling - half + 1))
    }

    /// The delay at the cap, still jittered: for a refusal that retrying soon cannot change.
    pub fn slowest(&mut self) -> Duration {
        self.failures = 64;
        self.next_delay()
    }

    /// A connection succeeded: start from `min_ms` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    fn random(&mut self) -> u64 {
        // xorshift64: plenty for jitter, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowest_waits_at_the_cap() {
        let mut b = Backoff::new(100, 1_000, 7);
        for _ in 0..20 {
            let d = b.slowest().as_millis() as u64;
            assert!((500..=1_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn delays_grow_with_jitter_and_cap_and_reset() {
        let mut b = Backoff::new(100, 1_000, 42);
        let ceilings = [100, 200, 400, 800, 1_000, 1_000];
        for ceiling in ceilings {
            let d = b.next_delay().as_millis() as u64;
            assert!(
                (ceiling / 2..=ceiling).contains(&d),
                "{d} not in [{}, {ceiling}]",
                ceiling / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn different_seeds_spread_the_fleet() {
        let delays: std::collections::BTreeSet<_> = (1..20)
            .map(|seed| {
                let mut b = Backoff::new(1_000, 60_000, seed * 7919);
                (0..5).for_each(|_| {
                    b.next_delay();
                });
                b.next_delay()
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
