//! `LogThrottle`: at most one log line per period for something a peer can trigger (a
//! refused connection, a failed accept), carrying how many occurrences it stands for. The
//! decision is a pure function of the clock passed in; `SharedThrottle` is the same behind
//! a mutex, for the tasks of one listener.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When to log an event that may repeat thousands of times a second.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    period: Duration,
    last: Option<Instant>,
    /// Occurrences since the last line that was logged.
    pending: u64,
}

impl LogThrottle {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            pending: 0,
        }
    }

    /// Records one occurrence at `now`. `Some(n)`: log now, the line stands for `n`
    /// occurrences (this one included); `None`: stay quiet, it is counted for the next line.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        let due = match self.last {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= self.period,
        };
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// A `LogThrottle` shared by the tasks of one listener.
#[derive(Debug)]
pub struct SharedThrottle(Mutex<LogThrottle>);

impl SharedThrottle {
    pub fn new(period: Duration) -> Self {
        Self(Mutex::new(LogThrottle::new(period)))
    }

    /// See [`LogThrottle::hit`]; the clock is now.
    pub fn hit(&self) -> Option<u64> {
        // A poisoned throttle only means a panic elsewhere while counting; the count is fine.
        let mut throttle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        throttle.hit(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_the_first_hit_then_once_per_period_with_the_count() {
        let start = Instant::now();
        let mut throttle = LogThrottle::new(Duration::from_secs(10));
        let ms = |n: u64| start + Duration::from_millis(n);
        // (time in ms, expected decision)
        let table = [
            (0, Some(1)),
            (1, None),
            (5_000, None),
            (9_999, None),
            (10_000, Some(4)),
            (10_001, None),
            (25_000, Some(2)),
            (60_000, Some(1)),
        ];
        for (at, expected) in table {
            assert_eq!(throttle.hit(ms(at)), expected, "at {at} ms");
        }
    }

    #[test]
    fn a_storm_of_hits_gives_one_line_per_period() {
        let start = Instant::now();
        let mut throttle = LogThrottle::new(Duration::from_secs(1));
        let lines = (0..1_000_000u64)
            .filter_map(|i| throttle.hit(start + Duration::from_micros(i * 4)))
            .count();
        // 4 s of hits, one line a second.
        assert_eq!(lines, 4);
    }
}
