//! Health-check bookkeeping with Docker's semantics, pure: a probe runs every `interval`;
//! `retries` consecutive failures make a container unhealthy, one success healthy; failures
//! within `start_period` after start do not count; during it, probes run every
//! `start_interval` when one is given.

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

    /// True when a probe should start now (none running, interval passed). While the
    /// container is still starting within `start_period`, the interval is `start_interval`
    /// when one is given (compose `healthcheck.start_interval`).
    pub fn due(&self, check: &HealthCheck, start_interval_ms: Option<u32>, now_ms: u64) -> bool {
        let starting = self.health == Health::Starting
            && now_ms < self.started_ms + u64::from(check.start_period_ms);
        let interval = match start_interval_ms {
            Some(fast) if starting => fast,
            _ => check.interval_ms,
        };
        !self.in_flight
            && self
                .last_probe_ms
                .is_none_or(|last| now_ms >= last + u64::from(interval))
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
        assert!(s.due(&c, None, 0));
        s.probing(0);
        assert!(!s.due(&c, None, 5_000), "one probe at a time");
        // Failures in the start period do not count.
        assert_eq!(s.record(&c, false, 100), None);
        assert_eq!(s.health, Health::Starting);
        assert!(!s.due(&c, None, 999) && s.due(&c, None, 1_000));
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
    fn start_interval_paces_probes_only_while_starting_in_the_start_period() {
        let c = check();
        let fast = Some(200);
        let mut s = CheckState::new(0);
        s.probing(0);
        assert_eq!(s.record(&c, false, 50), None);
        assert!(!s.due(&c, fast, 199) && s.due(&c, fast, 200));
        assert!(!s.due(&c, None, 200), "the plain interval without it");
        // After the start period, the plain interval.
        s.probing(4_900);
        assert_eq!(s.record(&c, false, 4_950), None);
        assert!(!s.due(&c, fast, 5_100) && s.due(&c, fast, 5_900));
        // Healthy within the start period: the plain interval too.
        let mut s = CheckState::new(0);
        s.probing(0);
        assert_eq!(s.record(&c, true, 10), Some(Health::Healthy));
        assert!(!s.due(&c, fast, 200) && s.due(&c, fast, 1_000));
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
