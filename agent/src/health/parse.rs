//! Parsers for the kernel's text files. Each returns `None` on text it does not understand
//! rather than guessing: a missing vital is reported as absent, never as zero.

/// Aggregate CPU jiffies from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    /// Busy share between two readings, in permille of one core times `cores` (so a fully
    /// busy 4-core board reads 4000), saturating at `u16::MAX`.
    pub fn permille_since(&self, earlier: &CpuTimes, cores: u32) -> u16 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0;
        }
        let busy = self.busy.saturating_sub(earlier.busy);
        let permille = busy
            .saturating_mul(1000)
            .saturating_mul(u64::from(cores.max(1)))
            / total;
        u16::try_from(permille).unwrap_or(u16::MAX)
    }
}

/// `cpu  user nice system idle iowait irq softirq steal ...` → busy and total jiffies
/// (idle and iowait count as idle).
pub fn cpu_times(proc_stat: &str) -> Option<CpuTimes> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    // guest and guest_nice (fields 9, 10) are already counted in user and nice.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// `(MemTotal, MemTotal - MemAvailable)` in KiB from `/proc/meminfo`.
pub fn meminfo_kib(meminfo: &str) -> Option<(u32, u32)> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Some((clamp(total), clamp(total.saturating_sub(available))))
}

/// Whole seconds from `/proc/uptime` (`"12345.67 54321.00"`).
pub fn uptime_s(uptime: &str) -> Option<u32> {
    let secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| secs.min(f64::from(u32::MAX)) as u32)
}

/// The 1-minute load average × 100 from `/proc/loadavg`.
pub fn load1_centi(loadavg: &str) -> Option<u16> {
    let load: f64 = loadavg.split_whitespace().next()?.parse().ok()?;
    (load.is_finite() && load >= 0.0)
        .then(|| (load * 100.0).round().min(f64::from(u16::MAX)) as u16)
}

/// A thermal zone's `temp` (millidegrees Celsius) in tenths of a degree.
pub fn thermal_decicelsius(temp: &str) -> Option<i16> {
    let milli: i64 = temp.trim().parse().ok()?;
    i16::try_from(milli / 100).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  4705 356 584 3699176 23060 0 277 0 0 0\n\
                        cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
                        intr 1462898\n";

    const MEMINFO: &str = "MemTotal:        3884000 kB\nMemFree:          412000 kB\n\
                           MemAvailable:    3472000 kB\nBuffers:           10000 kB\n";

    #[test]
    fn cpu_times_count_idle_and_iowait_as_idle() {
        let t = cpu_times(STAT).unwrap();
        assert_eq!(t.total, 4705 + 356 + 584 + 3_699_176 + 23_060 + 277);
        assert_eq!(t.busy, 4705 + 356 + 584 + 277);
        let later = CpuTimes {
            busy: t.busy + 50,
            total: t.total + 100,
        };
        assert_eq!(later.permille_since(&t, 4), 2000);
        assert_eq!(t.permille_since(&t, 4), 0);
        assert_eq!(cpu_times("cpu  1 2\n"), None);
        assert_eq!(cpu_times("intr 5\n"), None);
    }

    #[test]
    fn meminfo_reports_used_as_total_minus_available() {
        assert_eq!(meminfo_kib(MEMINFO), Some((3_884_000, 412_000)));
        assert_eq!(meminfo_kib("MemTotal: 10 kB\n"), None);
    }

    #[test]
    fn uptime_load_and_temperature_parse_or_are_absent() {
        assert_eq!(uptime_s("1209600.42 4000000.00\n"), Some(1_209_600));
        assert_eq!(uptime_s("garbage"), None);
        assert_eq!(load1_centi("0.38 0.40 0.41 1/123 4567\n"), Some(38));
        assert_eq!(load1_centi("-1 0 0"), None);
        assert_eq!(thermal_decicelsius("51234\n"), Some(512));
        assert_eq!(thermal_decicelsius("-5000"), Some(-50));
        assert_eq!(thermal_decicelsius("hot"), None);
    }
}
