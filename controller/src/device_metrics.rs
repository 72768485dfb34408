//! Per-device Prometheus gauges on `GET /api/v1/metrics` (behind an API token, unlike the
//! anonymous fleet counts on `/metrics`, since they name devices). Every device gives the
//! same fixed set of series, so the exposition grows linearly with the fleet and never with
//! what devices send; past [`DEVICE_SERIES_CAP`] devices the rest are counted, not listed.
//! Per-service numbers stay in the API and `coracle top`: a label per service would
//! multiply the series by whatever apps are deployed.

use std::collections::HashMap;
use std::fmt::Write;

use coracle_proto::DeviceId;

use crate::store::{DeviceRecord, HealthPoint, Store, StoreError};

/// Devices listed at most (in id order); a larger fleet should be scraped per shard.
pub const DEVICE_SERIES_CAP: usize = 10_000;

/// One per-device gauge: its name, help, and how to read it (`None`: no value, no line).
struct Gauge {
    name: &'static str,
    help: &'static str,
    read: fn(&DeviceRecord, Option<&HealthPoint>) -> Option<f64>,
}

fn sample<T>(
    point: Option<&HealthPoint>,
    f: impl Fn(&coracle_proto::HealthSample) -> T,
) -> Option<T> {
    point.map(|p| f(&p.sample))
}

const GAUGES: &[Gauge] = &[
    Gauge {
        name: "coracle_device_online",
        help: "1 while the device's presence is online.",
        read: |d, _| Some(f64::from(u8::from(d.online))),
    },
    Gauge {
        name: "coracle_device_last_seen_timestamp_seconds",
        help: "When the controller last heard from the device (Unix time).",
        read: |d, _| d.last_seen_unix.map(|t| t as f64),
    },
    Gauge {
        name: "coracle_device_applied_generation",
        help: "The desired-state generation the device last reported as applied.",
        read: |d, _| d.applied_generation.map(|g| g as f64),
    },
    Gauge {
        name: "coracle_device_cpu_cores",
        help: "CPU busy in the last sample, in cores (2.5 = two and a half cores busy).",
        read: |_, p| sample(p, |s| f64::from(s.cpu_permille) / 1000.0),
    },
    Gauge {
        name: "coracle_device_memory_used_bytes",
        help: "Memory in use in the last sample.",
        read: |_, p| sample(p, |s| f64::from(s.mem_used_kib) * 1024.0),
    },
    Gauge {
        name: "coracle_device_memory_total_bytes",
        help: "Memory of the device.",
        read: |_, p| sample(p, |s| f64::from(s.mem_total_kib) * 1024.0),
    },
    Gauge {
        name: "coracle_device_disk_free_bytes",
        help: "Free space on the agent's data filesystem in the last sample.",
        read: |_, p| sample(p, |s| f64::from(s.disk_free_mib) * 1_048_576.0),
    },
    Gauge {
        name: "coracle_device_disk_total_bytes",
        help: "Size of the agent's data filesystem.",
        read: |_, p| sample(p, |s| f64::from(s.disk_total_mib) * 1_048_576.0),
    },
    Gauge {
        name: "coracle_device_load1",
        help: "One-minute load average in the last sample.",
        read: |_, p| sample(p, |s| f64::from(s.load1_centi) / 100.0),
    },
    Gauge {
        name: "coracle_device_temperature_celsius",
        help: "SoC temperature in the last sample (only boards with a sensor).",
        read: |_, p| {
            p.and_then(|p| p.sample.temp_decicelsius)
                .map(|t| f64::from(t) / 10.0)
        },
    },
    Gauge {
        name: "coracle_device_containers",
        help: "Containers in the last sample.",
        read: |_, p| sample(p, |s| s.containers.len() as f64),
    },
    Gauge {
        name: "coracle_device_container_restarts",
        help: "Restarts of the device's containers since they were deployed, summed.",
        read: |_, p| {
            sample(p, |s| {
                s.containers.iter().map(|c| f64::from(c.restarts)).sum()
            })
        },
    },
];

/// Renders the per-device gauges of at most `cap` devices.
pub fn render(store: &Store, cap: usize) -> Result<String, StoreError> {
    let devices = store.list_devices()?;
    let health = store.latest_health()?;
    Ok(render_rows(&devices, &health, cap))
}

fn render_rows(
    devices: &[DeviceRecord],
    health: &HashMap<DeviceId, HealthPoint>,
    cap: usize,
) -> String {
    let listed = &devices[..devices.len().min(cap)];
    let mut out = String::with_capacity(listed.len() * GAUGES.len() * 64);
    for gauge in GAUGES {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge",
            name = gauge.name,
            help = gauge.help
        );
        for device in listed {
            if let Some(value) = (gauge.read)(device, health.get(&device.id)) {
                let _ = writeln!(
                    out,
                    "{}{{device=\"{}\"}} {value}",
                    gauge.name,
                    escape_label(device.id.as_str())
                );
            }
        }
    }
    let name = "coracle_metrics_devices_omitted";
    let _ = writeln!(
        out,
        "# HELP {name} Devices left out of this exposition past the {cap}-device cap.\n\
         # TYPE {name} gauge\n{name} {}",
        devices.len() - listed.len()
    );
    out
}

/// A label value as the exposition format quotes it.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewDevice;
    use coracle_proto::samples;

    fn fleet(n: usize) -> Store {
        let store = Store::in_memory().unwrap();
        for i in 0..n {
            let id: DeviceId = format!("pi-{i:05}").parse().unwrap();
            store
                .add_device(&NewDevice {
                    id: id.clone(),
                    tags: Default::default(),
                    password_sha256: [0; 32],
                })
                .unwrap();
            // Several points per device: only the newest counts.
            for minute in 0..3 {
                let mut sample = samples::health_sample();
                sample.cpu_permille = minute * 100;
                store
                    .add_health(&id, 60 * i64::from(minute), &sample)
                    .unwrap();
            }
        }
        store
    }

    fn series(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn every_device_gets_the_same_series_from_its_newest_sample() {
        let store = fleet(3);
        let text = render(&store, DEVICE_SERIES_CAP).unwrap();
        // Every gauge but the applied generation (nothing applied yet) for every device,
        // plus the omitted count.
        let expected = 3 * (GAUGES.len() - 1) + 1;
        assert_eq!(series(&text).len(), expected, "{text}");
        assert!(text.contains("coracle_device_cpu_cores{device=\"pi-00002\"} 0.2\n"));
        assert!(text.contains("coracle_device_temperature_celsius{device=\"pi-00000\"} 51.2\n"));
        assert!(text.contains("coracle_device_container_restarts{device=\"pi-00001\"} 1\n"));
        assert!(text.contains("coracle_metrics_devices_omitted 0\n"));
    }

    #[test]
    fn the_exposition_stays_bounded_past_the_cap() {
        let store = fleet(25);
        let text = render(&store, 10).unwrap();
        let listed: std::collections::BTreeSet<&str> = series(&text)
            .iter()
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert_eq!(listed.len(), 10);
        assert!(text.contains("coracle_metrics_devices_omitted 15\n"));
    }

    #[test]
    fn ten_thousand_devices_give_a_fixed_number_of_series_each() {
        let devices: Vec<DeviceRecord> = (0..10_000)
            .map(|i| DeviceRecord {
                id: format!("pi-{i:05}").parse().unwrap(),
                created_unix: 0,
                tags: Default::default(),
                online: i % 2 == 0,
                last_seen_unix: Some(1_700_000_000),
                desired_generation: Some(3),
                applied_generation: Some(3),
            })
            .collect();
        let health = devices
            .iter()
            .map(|d| {
                let point = HealthPoint {
                    bucket_unix: 0,
                    sample: samples::health_sample(),
                    services: vec!["web".into(), "worker".into()],
                };
                (d.id.clone(), point)
            })
            .collect();
        let text = render_rows(&devices, &health, DEVICE_SERIES_CAP);
        assert_eq!(series(&text).len(), 10_000 * GAUGES.len() + 1);
        // Bounded per device: no line grows with what a device sends.
        let longest = text.lines().map(str::len).max().unwrap();
        assert!(longest < 120, "longest line is {longest} bytes");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
