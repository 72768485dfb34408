//! Parsers for the cgroup files that hold a container's usage, for the engine adapter's
//! `stats` (v2 `cpu.stat` / `memory.current`, v1 `cpuacct.usage` /
//! `memory.usage_in_bytes`), and the CPU share between two readings.

/// Cumulative CPU microseconds from a v2 `cpu.stat` (`usage_usec N`).
pub fn cpu_usage_usec_v2(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// Cumulative CPU microseconds from a v1 `cpuacct.usage` (nanoseconds).
pub fn cpu_usage_usec_v1(cpuacct_usage: &str) -> Option<u64> {
    cpuacct_usage
        .trim()
        .parse::<u64>()
        .ok()
        .map(|ns| ns / 1_000)
}

/// Bytes from `memory.current` (v2) or `memory.usage_in_bytes` (v1).
pub fn memory_bytes(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// CPU share between two readings in permille of one core (2000 = two full cores).
pub fn cpu_permille(used_usec: u64, wall_usec: u64) -> u16 {
    if wall_usec == 0 {
        return 0;
    }
    u16::try_from(used_usec.saturating_mul(1000) / wall_usec).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_usage_files_parse() {
        let v2 = "usage_usec 8123456\nuser_usec 6000000\nsystem_usec 2123456\nnr_periods 0\n";
        assert_eq!(cpu_usage_usec_v2(v2), Some(8_123_456));
        assert_eq!(cpu_usage_usec_v2("user_usec 5\n"), None);
        assert_eq!(cpu_usage_usec_v1("8123456789\n"), Some(8_123_456));
        assert_eq!(memory_bytes("53248000\n"), Some(53_248_000));
        assert_eq!(memory_bytes("max\n"), None);
    }

    #[test]
    fn cpu_share_between_readings() {
        assert_eq!(cpu_permille(250_000, 1_000_000), 250);
        assert_eq!(cpu_permille(2_000_000, 1_000_000), 2000);
        assert_eq!(cpu_permille(5, 0), 0);
        assert_eq!(cpu_permille(u64::MAX, 1), u16::MAX);
    }
}
