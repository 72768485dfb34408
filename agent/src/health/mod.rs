//! Device vitals for `HealthSample`: pure parsers of `/proc` and `/sys` text (tested on
//! fixtures) and a `VitalsReader` that reads the real files, with every root configurable.

mod parse;
mod reader;

pub use parse::{cpu_times, load1_centi, meminfo_kib, thermal_decicelsius, uptime_s, CpuTimes};
pub use reader::{VitalsError, VitalsReader};
