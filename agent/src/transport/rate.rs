//! A token bucket for things a peer can trigger (rejection events): a flood of garbage
//! costs the metered link a handful of events, and the count of the suppressed ones.

/// Token bucket over a caller-supplied millisecond clock.
#[derive(Debug, Clone)]
pub struct RateLimit {
    capacity: u32,
    refill_every_ms: u64,
    tokens: u32,
    last_refill_ms: u64,
    suppressed: u64,
}

impl RateLimit {
    /// Allows bursts of `capacity`, then one per `refill_every_ms`.
    pub fn new(capacity: u32, refill_every_ms: u64, now_ms: u64) -> Self {
        Self {
            capacity,
            refill_every_ms: refill_every_ms.max(1),
            tokens: capacity,
            last_refill_ms: now_ms,
            suppressed: 0,
        }
    }

    /// `Some(n)` when allowed, where `n` is how many were suppressed since the last allowed
    /// one; `None` when this one is suppressed.
    pub fn admit(&mut self, now_ms: u64) -> Option<u64> {
        let earned = now_ms.saturating_sub(self.last_refill_ms) / self.refill_every_ms;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(self.capacity);
            self.last_refill_ms = now_ms;
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_and_counts_the_suppressed() {
        let mut rate = RateLimit::new(3, 1_000, 0);
        let got: Vec<_> = (0..5).map(|_| rate.admit(10)).collect();
        assert_eq!(got, [Some(0), Some(0), Some(0), None, None]);
        assert_eq!(rate.admit(999), None);
        assert_eq!(rate.admit(1_010), Some(3));
        assert_eq!(rate.admit(1_020), None);
    }
}
