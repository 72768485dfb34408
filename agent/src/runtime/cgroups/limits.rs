//! The limit computation: resources in, `(controller, file, value)` writes out, for either
//! cgroup version. Pure, so it is table-tested without a kernel; `apply` in `mod.rs` does the
//! writes in the order returned (order matters: v1 needs memory before memory+swap, and the
//! period before the quota).

use crate::runtime::spec::{DeviceAccess, Resources};

use super::CgroupVersion;

/// One cgroup file write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitWrite {
    /// Controller that owns the file (v1: the hierarchy's directory name).
    pub controller: &'static str,
    pub file: &'static str,
    pub value: String,
}

/// Devices the container may use, and how: one device, or a pattern (OCI
/// `linux.resources.devices` allow rules and Docker's `--device-cgroup-rule` may leave the
/// type or either number out, v1's `a` and `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// `'c'` (char), `'b'` (block) or `'a'` (both).
    pub kind: char,
    /// `None`: any major (`*`).
    pub major: Option<u64>,
    /// `None`: any minor (`*`).
    pub minor: Option<u64>,
    pub access: DeviceAccess,
}

impl DeviceRule {
    /// Every device with every access (`a *:* rwm`): a privileged container's only rule.
    pub const EVERY: Self = Self {
        kind: 'a',
        major: None,
        minor: None,
        access: DeviceAccess::ALL,
    };

    /// This rule grants all of [`Self::EVERY`]: no other rule can add anything.
    pub fn is_every_device(&self) -> bool {
        *self == Self::EVERY
    }

    /// One device by type and numbers.
    pub fn new(kind: char, major: u64, minor: u64, access: DeviceAccess) -> Self {
        Self::pattern(kind, Some(major), Some(minor), access)
    }

    /// Devices matching a type (`'a'`: both) and numbers (`None`: any).
    pub fn pattern(
        kind: char,
        major: Option<u64>,
        minor: Option<u64>,
        access: DeviceAccess,
    ) -> Self {
        Self {
            kind,
            major,
            minor,
            access,
        }
    }

    /// The v1 `devices.allow` forms, `c 10:* rw` (without the access letters). The kernel
    /// reads any line starting with `a` as "allow every device, every access", so an `a`
    /// rule narrower than [`Self::EVERY`] is written as a `c` and a `b` rule.
    fn v1_patterns(&self) -> Vec<String> {
        let number = |n: Option<u64>| n.map_or("*".to_string(), |n| n.to_string());
        let numbers = format!("{}:{}", number(self.major), number(self.minor));
        match self.kind {
            'a' if !self.is_every_device() => {
                vec![format!("c {numbers}"), format!("b {numbers}")]
            }
            kind => vec![format!("{kind} {numbers}")],
        }
    }
}

/// The cpu period used for millicore quotas (100 ms, the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Devices every container gets: null, zero, full, random, urandom, tty, ptmx and pts.
pub const DEFAULT_DEVICES: &[(char, u64, Option<u64>)] = &[
    ('c', 1, Some(3)),
    ('c', 1, Some(5)),
    ('c', 1, Some(7)),
    ('c', 1, Some(8)),
    ('c', 1, Some(9)),
    ('c', 5, Some(0)),
    ('c', 5, Some(2)),
    ('c', 136, None),
];

/// Computes the writes that put `resources` (and, on v1, the device allow-list) in force.
pub fn plan(
    resources: &Resources,
    devices: &[DeviceRule],
    version: CgroupVersion,
) -> Vec<LimitWrite> {
    let mut out = Vec::new();
    let mut put = |controller, file, value: String| {
        out.push(LimitWrite {
            controller,
            file,
            value,
        })
    };
    match version {
        CgroupVersion::V1 => {
            if let Some(max) = resources.memory_max {
                put("memory", "memory.limit_in_bytes", max.to_string());
                let swap = resources.memory_swap.unwrap_or(0);
                put(
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    max.saturating_add(swap).to_string(),
                );
            }
            // Docker's `--memory-reservation` on v1, as runc writes it.
            if let Some(low) = resources.memory_reservation {
                put("memory", "memory.soft_limit_in_bytes", low.to_string());
            }
            let cpu = CpuBandwidth::of(resources);
            if let Some(period) = cpu.period_us {
                put("cpu", "cpu.cfs_period_us", period.to_string());
            }
            if let Some(quota) = cpu.quota_us {
                put("cpu", "cpu.cfs_quota_us", quota.to_string());
            }
            // OCI shares are v1's own unit: written as given, never through a weight.
            let shares = resources
                .cpu_shares
                .filter(|&s| s != 0)
                .or(resources.cpu_weight.map(weight_to_shares));
            if let Some(shares) = shares {
                put("cpu", "cpu.shares", shares.to_string());
            }
            if let Some(p) = resources.pids_max {
                put("pids", "pids.max", p.to_string());
            }
            if let Some(w) = resources.io_weight {
                put(
                    "blkio",
                    "blkio.weight",
                    (10 + (w.clamp(1, 10_000) - 1) * 990 / 9_999).to_string(),
                );
            }
            put_cpuset(resources, &mut put);
            // v1 has a devices controller; on v2 the same list is an eBPF program (`device_bpf`).
            put("devices", "devices.deny", "a".into());
            // The container's own rules first, in their order (OCI wants the list applied
            // in order; v1 `devices.list` shows it so), then the standard devices.
            // Only the bits the service asked for: `r` alone makes writes and mknod EPERM.
            for rule in devices {
                let letters = rule.access.letters();
                if letters.is_empty() {
                    continue;
                }
                for pattern in rule.v1_patterns() {
                    put("devices", "devices.allow", format!("{pattern} {letters}"));
                }
            }
            for (kind, major, minor) in DEFAULT_DEVICES {
                let minor = minor.map_or("*".to_string(), |m| m.to_string());
                put(
                    "devices",
                    "devices.allow",
                    format!("{kind} {major}:{minor} rwm"),
                );
            }
        }
        CgroupVersion::V2 => {
            if let Some(max) = resources.memory_max {
                put("memory", "memory.max", max.to_string());
                put(
                    "memory",
                    "memory.swap.max",
                    resources.memory_swap.unwrap_or(0).to_string(),
                );
            }
            // runc's v2 mapping of the reservation: memory the kernel reclaims from this
            // cgroup only after unprotected memory elsewhere. Effective only as far as the
            // ancestors' own `memory.low` (or the `memory_recursiveprot` mount option) allow,
            // as under Docker.
            if let Some(low) = resources.memory_reservation {
                put("memory", "memory.low", low.to_string());
            }
            if let Some(max) = CpuBandwidth::of(resources).v2_max() {
                put("cpu", "cpu.max", max);
            }
            let weight = resources
                .cpu_shares
                .filter(|&s| s != 0)
                .map(shares_to_weight)
                .or(resources.cpu_weight);
            if let Some(w) = weight {
                put("cpu", "cpu.weight", w.clamp(1, 10_000).to_string());
            }
            if let Some(p) = resources.pids_max {
                put("pids", "pids.max", p.to_string());
            }
            if let Some(w) = resources.io_weight {
                put("io", "io.weight", format!("default {}", w.clamp(1, 10_000)));
            }
            put_cpuset(resources, &mut put);
        }
    }
    out
}

fn put_cpuset(resources: &Resources, put: &mut impl FnMut(&'static str, &'static str, String)) {
    if let Some(cpus) = &resources.cpuset_cpus {
        put("cpuset", "cpuset.cpus", cpus.clone());
    }
    if let Some(mems) = &resources.cpuset_mems {
        put("cpuset", "cpuset.mems", mems.clone());
    }
}

/// The CPU quota and period to write, in µs: an OCI bundle's exactly as given (a value of
/// 0 means unset, as in runc), else `cpu_millicores` over the kernel's default period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuBandwidth {
    /// -1 (or any negative) is "no limit".
    quota_us: Option<i64>,
    period_us: Option<u64>,
}

impl CpuBandwidth {
    fn of(resources: &Resources) -> Self {
        let given = Self {
            quota_us: resources.cpu_quota_us.filter(|&q| q != 0),
            period_us: resources.cpu_period_us.filter(|&p| p != 0),
        };
        if given.quota_us.is_some() || given.period_us.is_some() {
            return given;
        }
        let quota = resources.cpu_millicores.map(quota_us);
        Self {
            quota_us: quota.map(|q| i64::try_from(q).unwrap_or(i64::MAX)),
            period_us: quota.map(|_| CPU_PERIOD_US),
        }
    }

    /// v2's `cpu.max`, "QUOTA PERIOD" in one write: no quota is `max`, no period the
    /// kernel's default (what a fresh cgroup has, and runc's choice).
    fn v2_max(&self) -> Option<String> {
        if self.quota_us.is_none() && self.period_us.is_none() {
            return None;
        }
        let quota = match self.quota_us {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        Some(format!(
            "{quota} {}",
            self.period_us.unwrap_or(CPU_PERIOD_US)
        ))
    }
}

fn quota_us(millicores: u64) -> u64 {
    // The kernel refuses quotas under 1 ms.
    (millicores.saturating_mul(CPU_PERIOD_US) / 1000).max(1000)
}

/// v2 weight (1..=10000, default 100) to v1 shares (2..=262144, default 1024); the inverse
/// of the linear conversion compose's `cpu_shares` goes through (in the controller).
pub fn weight_to_shares(weight: u64) -> u64 {
    2 + (weight.clamp(1, 10_000) - 1) * 262_142 / 9_999
}

/// v1 shares (2..=262144) to a v2 weight (1..=10000) as crun (>= 1.23) and runc (>= 1.3.2)
/// convert OCI `cpu.shares`: a quadratic in log2(shares) that keeps the defaults
/// (1024 → 100) and both ends, where the older linear map made 1024 a weight of 39.
pub fn shares_to_weight(shares: u64) -> u64 {
    let l = (shares.clamp(2, 262_144) as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    // In range by construction (10^0..=10^4); the clamp only guards float edges.
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Resources {
        Resources {
            memory_max: Some(64 << 20),
            memory_swap: Some(16 << 20),
            memory_reservation: Some(32 << 20),
            cpu_millicores: Some(500),
            cpu_weight: Some(100),
            pids_max: Some(32),
            cpu_quota_us: None,
            cpu_period_us: None,
            cpu_shares: None,
            io_weight: Some(10_000),
            cpuset_cpus: Some("0".into()),
            cpuset_mems: Some("0".into()),
        }
    }

    fn pairs(writes: &[LimitWrite]) -> Vec<(&str, &str)> {
        writes.iter().map(|w| (w.file, w.value.as_str())).collect()
    }

    #[test]
    fn v2_plan_writes_each_limit_in_its_unified_file() {
        let writes = plan(&full(), &[], CgroupVersion::V2);
        assert_eq!(
            pairs(&writes),
            [
                ("memory.max", "67108864"),
                ("memory.swap.max", "16777216"),
                ("memory.low", "33554432"),
                ("cpu.max", "50000 100000"),
                ("cpu.weight", "100"),
                ("pids.max", "32"),
                ("io.weight", "default 10000"),
                ("cpuset.cpus", "0"),
                ("cpuset.mems", "0"),
            ]
        );
    }

    #[test]
    fn v1_plan_orders_memory_before_memsw_and_period_before_quota() {
        let writes = plan(
            &full(),
            &[DeviceRule::new('c', 89, 1, DeviceAccess::ALL)],
            CgroupVersion::V1,
        );
        let got = pairs(&writes);
        assert_eq!(
            got[..10],
            [
                ("memory.limit_in_bytes", "67108864"),
                ("memory.memsw.limit_in_bytes", "83886080"),
                ("memory.soft_limit_in_bytes", "33554432"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("cpu.shares", "2597"),
                ("pids.max", "32"),
                ("blkio.weight", "1000"),
                ("cpuset.cpus", "0"),
                ("cpuset.mems", "0"),
            ]
        );
        assert_eq!(got[10], ("devices.deny", "a"));
        assert!(got.contains(&("devices.allow", "c 136:* rwm")));
        // The container's rules come first, in order, then the standard devices.
        assert_eq!(got[11], ("devices.allow", "c 89:1 rwm"));
    }

    #[test]
    fn v1_device_rules_carry_only_the_granted_access() {
        let read_only = DeviceAccess::parse("r").unwrap();
        let rw = DeviceAccess::parse("wr").unwrap();
        let devices = [
            DeviceRule::new('c', 10, 200, read_only),
            DeviceRule::new('b', 8, 0, rw),
            DeviceRule::new('c', 4, 1, DeviceAccess::NONE),
        ];
        let writes = plan(&Resources::default(), &devices, CgroupVersion::V1);
        let got = pairs(&writes);
        let deny = got
            .iter()
            .position(|w| *w == ("devices.deny", "a"))
            .unwrap();
        assert_eq!(
            got[deny + 1..deny + 3],
            [
                ("devices.allow", "c 10:200 r"),
                ("devices.allow", "b 8:0 rw")
            ]
        );
        assert!(!got.iter().any(|(_, v)| v.starts_with("c 4:1")), "{got:?}");
    }

    #[test]
    fn v1_every_device_is_one_wildcard_rule() {
        let writes = plan(
            &Resources::default(),
            &[DeviceRule::EVERY],
            CgroupVersion::V1,
        );
        let got = pairs(&writes);
        assert_eq!(got[0], ("devices.deny", "a"));
        assert_eq!(got[1], ("devices.allow", "a *:* rwm"));
    }

    #[test]
    fn v1_wildcard_rules_write_a_and_stars() {
        let mknod = DeviceAccess::parse("m").unwrap();
        let devices = [
            DeviceRule::pattern('c', Some(10), None, mknod),
            DeviceRule::pattern('a', None, None, DeviceAccess::parse("r").unwrap()),
            DeviceRule::pattern('b', None, Some(0), mknod),
        ];
        let writes = plan(&Resources::default(), &devices, CgroupVersion::V1);
        let got = pairs(&writes);
        // `a *:* r` would be every device with every access on v1: two rules instead.
        assert_eq!(
            got[1..5],
            [
                ("devices.allow", "c 10:* m"),
                ("devices.allow", "c *:* r"),
                ("devices.allow", "b *:* r"),
                ("devices.allow", "b *:0 m")
            ]
        );
    }

    #[test]
    fn no_resources_means_no_limit_writes() {
        assert!(plan(&Resources::default(), &[], CgroupVersion::V2).is_empty());
        assert!(plan(&Resources::default(), &[], CgroupVersion::V1)
            .iter()
            .all(|w| w.controller == "devices"));
    }

    #[test]
    fn tiny_cpu_quota_is_raised_to_the_kernel_minimum() {
        let r = Resources {
            cpu_millicores: Some(1),
            ..Resources::default()
        };
        assert_eq!(
            pairs(&plan(&r, &[], CgroupVersion::V2)),
            [("cpu.max", "1000 100000")]
        );
    }

    #[test]
    fn weight_and_shares_convert_both_ways_at_the_ends() {
        for (weight, shares) in [(1, 2), (10_000, 262_144)] {
            assert_eq!(weight_to_shares(weight), shares);
            assert_eq!(shares_to_weight(shares), weight);
        }
    }

    #[test]
    fn shares_become_a_weight_by_crun_s_formula() {
        for (shares, weight) in [(0, 1), (2, 1), (3, 2), (512, 59), (1024, 100), (2048, 174)] {
            assert_eq!(shares_to_weight(shares), weight, "{shares}");
        }
        assert_eq!(shares_to_weight(1 << 30), 10_000);
    }

    /// An OCI bundle's cpu section, as `bundle::resources` maps it.
    fn oci_cpu(quota: Option<i64>, period: Option<u64>, shares: Option<u64>) -> Resources {
        Resources {
            cpu_quota_us: quota,
            cpu_period_us: period,
            cpu_shares: shares,
            ..Resources::default()
        }
    }

    #[test]
    fn v1_plan_writes_oci_period_quota_and_shares_as_given() {
        let r = oci_cpu(Some(25_000), Some(50_000), Some(512));
        let writes = plan(&r, &[], CgroupVersion::V1);
        assert_eq!(
            pairs(&writes)[..3],
            [
                ("cpu.cfs_period_us", "50000"),
                ("cpu.cfs_quota_us", "25000"),
                ("cpu.shares", "512"),
            ]
        );
        let unlimited = oci_cpu(Some(-1), Some(250_000), None);
        assert_eq!(
            pairs(&plan(&unlimited, &[], CgroupVersion::V1))[..2],
            [("cpu.cfs_period_us", "250000"), ("cpu.cfs_quota_us", "-1")]
        );
        let period_only = oci_cpu(Some(0), Some(20_000), Some(0));
        assert_eq!(
            pairs(&plan(&period_only, &[], CgroupVersion::V1))[0],
            ("cpu.cfs_period_us", "20000")
        );
        assert!(!pairs(&plan(&period_only, &[], CgroupVersion::V1))
            .iter()
            .any(|(f, _)| *f == "cpu.cfs_quota_us" || *f == "cpu.shares"));
    }

    #[test]
    fn v2_plan_writes_oci_period_in_cpu_max_and_shares_as_a_weight() {
        let r = oci_cpu(Some(25_000), Some(50_000), Some(512));
        assert_eq!(
            pairs(&plan(&r, &[], CgroupVersion::V2)),
            [("cpu.max", "25000 50000"), ("cpu.weight", "59")]
        );
        for (quota, period, want) in [
            (Some(-1), Some(250_000), "max 250000"),
            (None, Some(20_000), "max 20000"),
            (Some(30_000), None, "30000 100000"),
        ] {
            assert_eq!(
                pairs(&plan(&oci_cpu(quota, period, None), &[], CgroupVersion::V2)),
                [("cpu.max", want)]
            );
        }
    }
}
