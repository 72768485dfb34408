//! `HealthSample`: the periodic, compact device vitals. Idle traffic is a product feature on
//! metered links, so units are chosen to be small varints (permille, KiB, MiB, deci-°C).

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

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
}

/// Per-container vitals; `service` indexes the services of the applied desired state, which
/// saves sending names every interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSample {
    pub service: u8,
    pub cpu_permille: u16,
    pub mem_kib: u32,
    pub restarts: u16,
}
