//! Prometheus metrics: counters kept by ingest, gauges read from the store at scrape time,
//! rendered in the text exposition format on `GET /metrics` (API listener, no token, no
//! device data beyond counts).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{Store, StoreError};

/// Counters the ingest loop bumps.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub stored: AtomicU64,
    pub dropped: AtomicU64,
}

impl IngestCounters {
    pub fn stored(&self) {
        self.stored.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Renders every metric.
pub fn render(store: &Store, counters: &IngestCounters) -> Result<String, StoreError> {
    let devices = store.list_devices()?;
    let online = devices.iter().filter(|d| d.online).count();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "coracle_devices",
        "gauge",
        "Enrolled devices.",
        devices.len() as u64,
    );
    metric(
        "coracle_devices_online",
        "gauge",
        "Devices whose presence is online.",
        online as u64,
    );
    metric(
        "coracle_ingest_messages_total",
        "counter",
        "Device messages decoded and stored.",
        counters.stored.load(Ordering::Relaxed),
    );
    metric(
        "coracle_ingest_dropped_total",
        "counter",
        "Device messages dropped as malformed or unstorable.",
        counters.dropped.load(Ordering::Relaxed),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_in_exposition_format() {
        let store = Store::in_memory().unwrap();
        let counters = IngestCounters::default();
        counters.stored();
        counters.dropped();
        counters.dropped();
        let text = render(&store, &counters).unwrap();
        assert!(text.contains("coracle_devices 0\n"));
        assert!(text.contains("coracle_ingest_messages_total 1\n"));
        assert!(text.contains("coracle_ingest_dropped_total 2\n"));
        assert!(text.contains("# TYPE coracle_devices_online gauge\n"));
    }
}
