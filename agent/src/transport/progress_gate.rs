//! `ProgressGate`: how often pull progress may go out. At most one report per interval per
//! device (the gate lives in the transport's shared state, so pulls running side by side
//! share it), plus every report that ends a layer, so the controller always sees a layer
//! finish. Pure over a caller-supplied millisecond clock.

/// Rate limit for pull progress reports.
#[derive(Debug, Clone)]
pub struct ProgressGate {
    interval_ms: u64,
    last_sent_ms: Option<u64>,
}

impl ProgressGate {
    /// At most one report per `interval_ms`, besides layer ends.
    pub fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms,
            last_sent_ms: None,
        }
    }

    /// Whether a report at `now_ms` goes out; `ends_layer` reports always do.
    pub fn admit(&mut self, now_ms: u64, ends_layer: bool) -> bool {
        let due = self
            .last_sent_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= self.interval_ms);
        if due || ends_layer {
            self.last_sent_ms = Some(now_ms);
        }
        due || ends_layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_a_second_plus_every_layer_end() {
        let mut gate = ProgressGate::new(1_000);
        // (now ms, ends a layer, sent)
        let table = [
            (0, false, true),
            (10, false, false),
            (999, false, false),
            (1_000, false, true),
            (1_500, true, true),
            (1_600, false, false),
            (2_499, false, false),
            (2_500, false, true),
            (2_501, true, true),
            (2_502, true, true),
            (3_501, false, false),
            (3_502, false, true),
        ];
        for (i, (now, end, sent)) in table.into_iter().enumerate() {
            assert_eq!(gate.admit(now, end), sent, "row {i}");
        }
    }

    #[test]
    fn a_flood_of_chunks_costs_one_report_per_interval() {
        let mut gate = ProgressGate::new(1_000);
        // A 40 MB pull in 64 KiB chunks over 44 s: 640 chunks (one per 68.75 ms), 43
        // reports (the first chunk at or after each second since the last report).
        let sent = (0..640u64)
            .filter(|chunk| gate.admit(chunk * 44_000 / 640, false))
            .count();
        assert_eq!(sent, 43);
    }
}
