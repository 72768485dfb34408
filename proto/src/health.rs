//! `HealthSample`: the periodic, compact device vitals. Idle traffic is a product feature on
//! metered links, so units are chosen to be small varints (permille, KiB, MiB, deci-°C).

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::Generation;

/// One sample of the device's vitals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSample {
    pub uptime_s: u32,
    /// CPU busy share since the last sample, 0..=1000 per core summed (1000 = one core).
    pub cpu_permille: u16,
    pub mem_used_kib: u32,
    pub mem_total_kib: u32,
    pub disk_free_mib: u32,
    pub disk_total_mib: u32,
    /// SoC temperature in tenths of a degree Celsius, when the board has a sensor.
    pub temp_decicelsius: Option<i16>,
    /// 1-minute load average × 100.
    pub load1_centi: u16,
    pub containers: Vec<ContainerSample>,
    /// The committed generation whose services the containers' `service` indexes count,
    /// so the controller can name them. 0 from agents before it was sent.
    #[serde(default)]
    pub generation: Generation,
}

/// Per-container vitals; `service` indexes the services of the committed desired state
/// (`HealthSample::generation`), which saves sending names every interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSample {
    pub service: u8,
    pub cpu_permille: u16,
    pub mem_kib: u32,
    pub restarts: u16,
    /// KiB received and sent in the container's own network namespace since it started
    /// (cumulative, so a lost sample loses nothing); 0 for host networking.
    #[serde(default)]
    pub net_rx_kib: u64,
    #[serde(default)]
    pub net_tx_kib: u64,
}

/// [`ContainerSample`] before network counters, as older agents send it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSampleV1 {
    pub service: u8,
    pub cpu_permille: u16,
    pub mem_kib: u32,
    pub restarts: u16,
}

/// [`HealthSample`] before `generation` and network counters; see [`HealthSample::decode`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSampleV1 {
    pub uptime_s: u32,
    pub cpu_permille: u16,
    pub mem_used_kib: u32,
    pub mem_total_kib: u32,
    pub disk_free_mib: u32,
    pub disk_total_mib: u32,
    pub temp_decicelsius: Option<i16>,
    pub load1_centi: u16,
    pub containers: Vec<ContainerSampleV1>,
}

impl From<HealthSampleV1> for HealthSample {
    fn from(old: HealthSampleV1) -> Self {
        Self {
            uptime_s: old.uptime_s,
            cpu_permille: old.cpu_permille,
            mem_used_kib: old.mem_used_kib,
            mem_total_kib: old.mem_total_kib,
            disk_free_mib: old.disk_free_mib,
            disk_total_mib: old.disk_total_mib,
            temp_decicelsius: old.temp_decicelsius,
            load1_centi: old.load1_centi,
            containers: old
                .containers
                .into_iter()
                .map(|c| ContainerSample {
                    service: c.service,
                    cpu_permille: c.cpu_permille,
                    mem_kib: c.mem_kib,
                    restarts: c.restarts,
                    net_rx_kib: 0,
                    net_tx_kib: 0,
                })
                .collect(),
            generation: Generation(0),
        }
    }
}

impl HealthSample {
    /// Decodes a coracle body holding a health sample, in the current layout or, when the
    /// body ends where a newer field would start, as older agents sent it. A V1 body never
    /// decodes as the current layout: every container and the sample itself need more
    /// fields than it has.
    pub fn decode(body: &[u8]) -> Result<Self, crate::codec::DecodeError> {
        let current = crate::codec::decode::<Self>(body);
        if !crate::codec::ended_early(&current) {
            return current;
        }
        crate::codec::decode::<HealthSampleV1>(body).map(Self::from)
    }
}
