//! Backoff for failed actions, per subject (an image or a service): a pull that fails, or a
//! container that cannot be created, is retried at 1 s, 2 s, 4 s … up to 5 min instead of
//! on every tick, so a persistent failure costs neither CPU nor a log or event storm. The
//! other subjects keep moving meanwhile. Freed disk space, or a new generation, makes them
//! due at once.

use std::collections::BTreeMap;

use crate::reconcile::backoff_ms;

/// Failure counts, next attempt times and last errors per subject.
#[derive(Debug, Default)]
pub struct Retry {
    failing: BTreeMap<String, (u32, u64, String)>,
}

impl Retry {
    /// True when the subject may be tried at `now_ms`.
    pub fn due(&self, subject: &str, now_ms: u64) -> bool {
        self.failing
            .get(subject)
            .is_none_or(|&(_, next, _)| now_ms >= next)
    }

    /// Records a failure and why; returns how many in a row.
    pub fn failed(&mut self, subject: String, now_ms: u64, error: String) -> u32 {
        let entry = self
            .failing
            .entry(subject)
            .or_insert((0, now_ms, String::new()));
        entry.1 = now_ms.saturating_add(backoff_ms(entry.0));
        entry.0 += 1;
        entry.2 = error;
        entry.0
    }

    /// One failing subject and its last error, for the reported update status.
    pub fn first_failure(&self) -> Option<String> {
        self.failing.iter().next().map(|(subject, (n, _, error))| {
            format!("{subject}: {error} (failed {n} times, retrying)")
        })
    }

    /// Something changed that may cure the failures (disk space was freed): every failing
    /// subject is due at `now_ms`. Failure counts stay, so one that fails again waits longer.
    pub fn wake_all(&mut self, now_ms: u64) {
        for (_, next, _) in self.failing.values_mut() {
            *next = (*next).min(now_ms);
        }
    }

    /// The subject worked: forget its failures.
    pub fn succeeded(&mut self, subject: &str) {
        self.failing.remove(subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_and_success_clears() {
        let mut retry = Retry::default();
        let s = "image x".to_string();
        assert!(retry.due(&s, 0));
        assert_eq!(retry.failed(s.clone(), 0, "refused".into()), 1);
        assert_eq!(
            retry.first_failure().as_deref(),
            Some("image x: refused (failed 1 times, retrying)")
        );
        assert!(!retry.due(&s, 999) && retry.due(&s, 1_000));
        assert_eq!(retry.failed(s.clone(), 1_000, "refused".into()), 2);
        assert!(!retry.due(&s, 2_999) && retry.due(&s, 3_000));
        assert!(retry.due("service y", 0), "other subjects are not blocked");
        retry.wake_all(1_500);
        assert!(retry.due(&s, 1_500), "freed disk makes it due at once");
        assert_eq!(retry.failed(s.clone(), 1_500, "refused".into()), 3);
        assert!(
            !retry.due(&s, 5_499) && retry.due(&s, 5_500),
            "and the backoff goes on"
        );
        retry.succeeded(&s);
        assert!(retry.due(&s, 1_001));
        assert_eq!(retry.first_failure(), None);
    }
}
