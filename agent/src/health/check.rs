//! Health-check bookkeeping with Docker's semantics, pure: a probe runs every `interval`;
//! `retries` consecutive failures make a container unhealthy, one success healthy; failures
//! within `start_period` after start do not count.

use coracle_proto::{Health, HealthCheck};

/// One container's check state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckState {
    pub health: Health,
    /// What the last failed probe said, until one passes.
    pub last_failure: Option<String>,
    failures: u32,
    started_ms: u64,
    last_probe_ms: Option<u64>,
    in_flight: bool,
}

impl CheckState {
    /// A container that started at `started_ms`: no verdict yet.
    pub fn new(started_ms: u64) -> Self {
        Self {
            health: Health::Starting,
            last_failure: None,
            failures: 0,
            started_ms,
            last_probe_ms: None,
            in_flight: false,
        }
    }

    /// True when a probe should start now (none running, interval passed).
    pub fn due(&self, check: &HealthCheck, now_ms: u64) -> bool {
        !self.in_flight
            && self
                .last_probe_ms
                .is_none_or(|last| now_ms >= last + u64::from(check.interval_ms))
    }

    /// A probe started.
    pub fn probing(&mut self, now_ms: u64) {
        self.in_flight = true;
        self.last_probe_ms = Some(now_ms);
    }

    /// A probe ended at `now_ms`; returns the new health if it changed.
    pub fn record(&mut self, check: &HealthCheck, ok: bool, now_ms: u64) -> Option<Health> {
        self.in_flight = false;
        let before = self.health;
        if ok {
            self.failures = 0;
            self.health = Health::Healthy;
        } else if now_ms >= self.started_ms + u64::from(check.start_period_ms)
            || self.health == Health::Healthy
        {
            self.failures += 1;
            if self.failures >= check.retries.max(1) {
                self.health = Health::Unhealthy;
            }
        }
        (self.health != before).then_some(self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::HealthProbe;

    fn check() -> HealthCheck {
        HealthCheck {
            probe: HealthProbe::Tcp { port: 80 },
            interval_ms: 1_000,
            timeout_ms: 500,
            retries: 3,
            start_period_ms: 5_000,
        }
    }

    #[test]
    fn docker_semantics_table() {
        let c = check();
        let mut s = CheckState::new(0);
        assert!(s.due(&c, 0));
        s.probing(0);
        assert!(!s.due(&c, 5_000), "one probe at a time");
        // Failures in the start period do not count.
        assert_eq!(s.record(&c, false, 100), None);
        assert_eq!(s.health, Health::Starting);
        assert!(!s.due(&c, 999) && s.due(&c, 1_000));
        assert_eq!(s.record(&c, true, 1_100), Some(Health::Healthy));
        // After that, `retries` consecutive failures make it unhealthy.
        assert_eq!(s.record(&c, false, 2_000), None);
        assert_eq!(s.record(&c, false, 3_000), None);
        assert_eq!(
            s.record(&c, true, 4_000),
            None,
            "a success resets the count"
        );
        for t in [5_000, 6_000] {
            assert_eq!(s.record(&c, false, t), None);
        }
        assert_eq!(s.record(&c, false, 7_000), Some(Health::Unhealthy));
        assert_eq!(s.record(&c, true, 8_000), Some(Health::Healthy));
    }

    #[test]
    fn failures_after_start_period_count_without_a_first_success() {
        let c = check();
        let mut s = CheckState::new(0);
        for t in [5_000, 6_000] {
            assert_eq!(s.record(&c, false, t), None);
        }
        assert_eq!(s.record(&c, false, 7_000), Some(Health::Unhealthy));
    }
}
