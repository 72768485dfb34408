//! The health sample published every `health_interval`: the device's vitals (free disk
//! also feeds the `DiskLow` condition and, when it grows, wakes failed actions — a pull
//! refused for lack of space is retried at once), plus each container's CPU share and
//! memory from the engine's cumulative readings, and its network counters.

use std::collections::BTreeMap;

use coracle_proto::ServiceName;

use super::{blocking, report, ContainerStats, Supervisor};
use crate::health::cgroup;
use report::Usage;

/// Free disk growing by more than this between two health samples retries failed actions.
const FREED_MIB: u32 = 1;

impl Supervisor {
    /// Samples and publishes; notices freed disk.
    pub(super) async fn publish_health(&mut self) {
        let mut sample = self.vitals.sample();
        if sample.disk_total_mib > 0 {
            // A pull refused for lack of disk need not wait out its backoff once space
            // was freed.
            if sample.disk_free_mib > self.disk_free_mib.saturating_add(FREED_MIB) {
                self.retry.wake_all(self.now_ms());
            }
            self.disk_free_mib = sample.disk_free_mib;
        }
        let engine = self.engine.clone();
        let usage = match blocking(move || engine.stats()).await {
            Ok(stats) => self.usage_since_last(stats),
            Err(err) => {
                tracing::debug!(error = %err, "container stats unavailable");
                Default::default()
            }
        };
        sample.containers = report::container_samples(&self.state, &self.tracker, &usage);
        sample.generation = self.state.committed_generation();
        self.transport.publish_health(&sample);
    }

    /// What each container used, its CPU share from cumulative readings.
    fn usage_since_last(&mut self, stats: Vec<ContainerStats>) -> BTreeMap<ServiceName, Usage> {
        let now_usec = self.now_ms().saturating_mul(1000);
        let mut usage = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for s in stats {
            let cpu = match self.last_cpu.get(&s.service) {
                Some(&(used, at)) if s.cpu_usage_usec >= used => {
                    cgroup::cpu_permille(s.cpu_usage_usec - used, now_usec.saturating_sub(at))
                }
                _ => 0, // first reading, or a restarted container
            };
            let mem_kib = u32::try_from(s.memory_bytes / 1024).unwrap_or(u32::MAX);
            usage.insert(
                s.service.clone(),
                Usage {
                    cpu_permille: cpu,
                    mem_kib,
                    net_rx_kib: s.net_rx_bytes / 1024,
                    net_tx_kib: s.net_tx_bytes / 1024,
                },
            );
            seen.insert(s.service, (s.cpu_usage_usec, now_usec));
        }
        self.last_cpu = seen;
        usage
    }
}
