//! Prometheus metrics: counters kept by ingest, gauges read from the store at scrape time,
//! rendered in the text exposition format on `GET /metrics` (API listener, no token, no
//! device data beyond counts).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::registry::DeltaMetrics;
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
pub fn render(
    store: &Store,
    counters: &IngestCounters,
    deltas: &DeltaMetrics,
    rollout_passes: u64,
) -> Result<String, StoreError> {
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
    metric(
        "coracle_rollout_driver_passes_total",
        "counter",
        "Evaluations of every active rollout by the driver (about one a second, and on reports).",
        rollout_passes,
    );
    render_deltas(&mut out, deltas);
    Ok(out)
}

/// The registry's delta work: encodes since start, their verdicts, bytes saved, the queue,
/// and how device requests were served.
fn render_deltas(out: &mut String, d: &DeltaMetrics) {
    let rows: [(&str, &str, &str, u64); 6] = [
        (
            "coracle_registry_deltas_encoded_total",
            "counter",
            "Delta encodes run (background or on request) since start.",
            d.encoded,
        ),
        (
            "coracle_registry_deltas_not_worth_total",
            "counter",
            "Encodes whose delta was not smaller than the full layer.",
            d.not_worth,
        ),
        (
            "coracle_registry_deltas_failed_total",
            "counter",
            "Delta encodes that failed (bad layer, disk).",
            d.failed,
        ),
        (
            "coracle_registry_delta_bytes_saved_total",
            "counter",
            "Full layer bytes minus delta bytes, summed over deltas encoded since start.",
            d.bytes_saved,
        ),
        (
            "coracle_registry_delta_queue_length",
            "gauge",
            "Delta pairs waiting for a background worker.",
            d.queued,
        ),
        (
            "coracle_registry_deltas_in_flight",
            "gauge",
            "Delta pairs being encoded now.",
            d.in_flight,
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let name = "coracle_registry_delta_requests_total";
    let _ = writeln!(
        out,
        "# HELP {name} Device delta requests by how the verdict was found.\n# TYPE {name} counter"
    );
    for (served, value) in [
        ("cache", d.requests_cached),
        ("waited", d.requests_waited),
        ("encoded", d.requests_encoded),
        ("timed_out", d.requests_timed_out),
    ] {
        let _ = writeln!(out, "{name}{{served=\"{served}\"}} {value}");
    }
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
        let deltas = DeltaMetrics {
            encoded: 3,
            requests_cached: 2,
            ..DeltaMetrics::default()
        };
        let text = render(&store, &counters, &deltas, 12).unwrap();
        assert!(text.contains("coracle_rollout_driver_passes_total 12\n"));
        assert!(text.contains("coracle_registry_deltas_encoded_total 3\n"));
        assert!(text.contains("coracle_registry_delta_requests_total{served=\"cache\"} 2\n"));
        assert!(text.contains("coracle_devices 0\n"));
        assert!(text.contains("coracle_ingest_messages_total 1\n"));
        assert!(text.contains("coracle_ingest_dropped_total 2\n"));
        assert!(text.contains("# TYPE coracle_devices_online gauge\n"));
    }
}
