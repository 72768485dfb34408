//! `coracle top [DEVICE]`: what the fleet (busiest devices first) or one device's services
//! use now, from the latest health samples. Network rates come from the last two samples'
//! cumulative counters.

use clap::Args;
use serde::Serialize;

use super::output::{local_time, print_json};
use super::progress::bytes;
use super::{ApiArgs, ApiClient};
use crate::api::devices::DeviceDetail;
use crate::api::overview::FleetRow;
use crate::store::HealthPoint;

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// One device's services instead of the whole fleet.
    device: Option<String>,
}

/// One service's line of `coracle top DEVICE`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceUsage {
    pub service: String,
    pub cpu_permille: u16,
    pub mem_kib: u32,
    pub restarts: u16,
    /// KiB through the container's network namespace since it started.
    pub net_rx_kib: u64,
    pub net_tx_kib: u64,
    /// Bytes per second over the last two samples; `None` with one sample or after the
    /// container restarted (its counters started again).
    pub net_rx_bytes_per_s: Option<u64>,
    pub net_tx_bytes_per_s: Option<u64>,
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    match &args.device {
        None => {
            let mut rows: Vec<FleetRow> = api.get("read the fleet", "/fleet")?;
            rows.sort_by_key(|r| {
                std::cmp::Reverse(r.health.as_ref().map_or(0, |h| h.cpu_permille))
            });
            if args.api.json {
                return print_json(&rows);
            }
            print!("{}", fleet_table(&rows));
        }
        Some(device) => {
            let detail: DeviceDetail = api.get("read the device", &format!("/devices/{device}"))?;
            let points: Vec<HealthPoint> = api.get(
                "read the device's health samples",
                &format!("/devices/{device}/health?points=2"),
            )?;
            let usage = service_usage(&points);
            if args.api.json {
                return print_json(&usage);
            }
            let seen = points.last().map(|p| p.bucket_unix);
            println!(
                "{device}: {} (sampled {})",
                if detail.device.online {
                    "online"
                } else {
                    "offline"
                },
                local_time(seen)
            );
            print!("{}", service_table(&usage));
        }
    }
    Ok(())
}

/// Per-service usage from the newest point, rates against the one before it.
pub fn service_usage(points: &[HealthPoint]) -> Vec<ServiceUsage> {
    let Some(last) = points.last() else {
        return Vec::new();
    };
    let before = points.len().checked_sub(2).map(|i| &points[i]);
    last.sample
        .containers
        .iter()
        .map(|c| {
            let name = last.service_name(c.service);
            let earlier = before.and_then(|b| {
                let same = b.service_name(c.service) == name;
                let elapsed = last.bucket_unix - b.bucket_unix;
                let prior = b
                    .sample
                    .containers
                    .iter()
                    .find(|p| p.service == c.service)?;
                (same && elapsed > 0).then_some((prior, elapsed as u64))
            });
            let rate = |now: u64, then: u64, elapsed: u64| {
                now.checked_sub(then).map(|kib| kib * 1024 / elapsed)
            };
            ServiceUsage {
                service: name,
                cpu_permille: c.cpu_permille,
                mem_kib: c.mem_kib,
                restarts: c.restarts,
                net_rx_kib: c.net_rx_kib,
                net_tx_kib: c.net_tx_kib,
                net_rx_bytes_per_s: earlier
                    .and_then(|(p, dt)| rate(c.net_rx_kib, p.net_rx_kib, dt)),
                net_tx_bytes_per_s: earlier
                    .and_then(|(p, dt)| rate(c.net_tx_kib, p.net_tx_kib, dt)),
            }
        })
        .collect()
}

fn percent(permille: u16) -> String {
    format!("{:.1}%", f64::from(permille) / 10.0)
}

fn per_second(rate: Option<u64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{}/s", bytes(r)))
}

fn service_table(rows: &[ServiceUsage]) -> String {
    let mut out = format!(
        "{:<20} {:>7} {:>9} {:>8} {:>11} {:>11}\n",
        "SERVICE", "CPU", "MEMORY", "RESTARTS", "NET IN", "NET OUT"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<20} {:>7} {:>9} {:>8} {:>11} {:>11}\n",
            r.service,
            percent(r.cpu_permille),
            bytes(u64::from(r.mem_kib) * 1024),
            r.restarts,
            per_second(r.net_rx_bytes_per_s),
            per_second(r.net_tx_bytes_per_s),
        ));
    }
    out
}

fn fleet_table(rows: &[FleetRow]) -> String {
    let mut out = format!(
        "{:<24} {:<11} {:>7} {:>17} {:>9} {:>5} {:>10} {:>8}\n",
        "DEVICE", "STATUS", "CPU", "MEMORY", "DISK FREE", "LOAD", "CONTAINERS", "RESTARTS"
    );
    for r in rows {
        let status = serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let status = if r.device.online {
            status
        } else {
            "offline".into()
        };
        let (cpu, memory, disk, load, containers) = match &r.health {
            Some(h) => (
                percent(h.cpu_permille),
                format!(
                    "{}/{}",
                    bytes(u64::from(h.mem_used_kib) * 1024),
                    bytes(u64::from(h.mem_total_kib) * 1024)
                ),
                bytes(u64::from(h.disk_free_mib) * 1_048_576),
                format!("{:.2}", f64::from(h.load1_centi) / 100.0),
                h.containers.len().to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        let restarts: u32 = r.services.iter().map(|s| s.restarts).sum();
        out.push_str(&format!(
            "{:<24} {:<11} {:>7} {:>17} {:>9} {:>5} {:>10} {:>8}\n",
            r.device.id.as_str(),
            status,
            cpu,
            memory,
            disk,
            load,
            containers,
            restarts
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::samples;

    fn point(at: i64, rx_kib: u64, names: &[&str]) -> HealthPoint {
        let mut sample = samples::health_sample();
        for c in &mut sample.containers {
            c.net_rx_kib = rx_kib;
            c.net_tx_kib = rx_kib / 2;
        }
        HealthPoint {
            bucket_unix: at,
            sample,
            services: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn services_are_named_and_rates_come_from_two_samples() {
        let usage = service_usage(&[
            point(0, 100, &["web", "db"]),
            point(60, 160, &["web", "db"]),
        ]);
        assert_eq!(usage.len(), 2);
        assert_eq!(usage[0].service, "web");
        assert_eq!(usage[1].service, "db");
        assert_eq!(usage[0].net_rx_bytes_per_s, Some(60 * 1024 / 60));
        assert_eq!(usage[0].net_tx_bytes_per_s, Some(30 * 1024 / 60));
        let table = service_table(&usage);
        assert!(table.contains("web"), "{table}");
        assert!(table.contains("1.0 KB/s"), "{table}");
    }

    #[test]
    fn no_rate_from_one_sample_a_restart_or_a_renamed_slot() {
        let one = service_usage(&[point(0, 100, &["web", "db"])]);
        assert_eq!(one[0].net_rx_bytes_per_s, None);
        let restarted =
            service_usage(&[point(0, 500, &["web", "db"]), point(60, 10, &["web", "db"])]);
        assert_eq!(restarted[0].net_rx_bytes_per_s, None);
        let redeployed = service_usage(&[
            point(0, 100, &["api", "db"]),
            point(60, 160, &["web", "db"]),
        ]);
        assert_eq!(redeployed[0].net_rx_bytes_per_s, None);
        assert_eq!(redeployed[1].net_rx_bytes_per_s, Some(1024));
        let unnamed = service_usage(&[point(60, 160, &[])]);
        assert_eq!(unnamed[0].service, "#0");
        assert!(service_usage(&[]).is_empty());
    }
}
