//! Health: device vitals for `HealthSample` (pure parsers of `/proc` and `/sys` text, tested
//! on fixtures, and a `VitalsReader` over the real files with every root configurable), and
//! container health checks (`CheckState`: Docker's interval/retries/start-period rules, pure;
//! `probe`: TCP and HTTP probes), cgroup usage parsers and
//! network-namespace counters for per-container samples.

pub mod cgroup;
mod check;
pub mod net_counters;
mod parse;
pub mod probe;
mod reader;

pub use check::CheckState;
pub use parse::{cpu_times, load1_centi, meminfo_kib, thermal_decicelsius, uptime_s, CpuTimes};
pub use reader::{VitalsError, VitalsReader};
