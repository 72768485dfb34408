//! The checks of a service's mount, identity, log and health-pace entries (compose `tmpfs`,
//! `shm_size`, `group_add`, `logging`, `healthcheck.start_interval`): one rule for the
//! controller at deploy time and the agent before it acts.

use alloc::format;
use alloc::string::{String, ToString};
use serde::{Deserialize, Serialize};

use crate::desired::ServiceSpec;
use crate::network::EntryKey;
use crate::service_rules::{is_clean_absolute, is_user_part};
use crate::tuning::Tuning;
use crate::validate::InvalidDesired;

/// A fresh tmpfs in the container (compose `tmpfs: PATH[:OPTIONS]`). Always `nosuid` and
/// `nodev`; `noexec` unless `exec` (Docker's defaults).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TmpfsMount {
    pub target: String,
    /// `size=`; `None`: the kernel's default (half the device's memory).
    pub size_bytes: Option<u64>,
    /// `mode=` (octal in compose), at most `0o7777`; `None`: `1777`.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub nr_inodes: Option<u64>,
    pub read_only: bool,
    /// Programs may run from it (`exec`).
    pub exec: bool,
}

impl TmpfsMount {
    /// A tmpfs at `target` with Docker's defaults: no size, mode 1777, root's, `noexec`.
    pub fn at(target: &str) -> Self {
        Self {
            target: target.to_string(),
            size_bytes: None,
            mode: None,
            uid: None,
            gid: None,
            nr_inodes: None,
            read_only: false,
            exec: false,
        }
    }
}

/// The agent's log rotation for one service (compose `logging.options`): the current file's
/// cap (`max-size`) and how many files there are in all, the current one included
/// (`max-file`, Docker's meaning). `None`: the agent's own setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogRotation {
    pub max_bytes: Option<u64>,
    pub max_files: Option<u32>,
}

/// The smallest log file cap: a few lines.
pub const MIN_LOG_BYTES: u64 = 1024;
/// The most log files a service may keep.
pub const MAX_LOG_FILES: u32 = 100;

/// Paths the runtime mounts itself, where a tmpfs would hide them.
const RUNTIME_TREES: &[&str] = &["/proc", "/sys", "/dev"];

impl ServiceSpec {
    /// The `shm_size` of the service, if given.
    pub fn shm_size(&self) -> Option<u64> {
        self.tuning.iter().find_map(|t| match t {
            Tuning::ShmSize(bytes) => Some(*bytes),
            _ => None,
        })
    }

    /// The probe interval during the health check's start period, if given.
    pub fn health_start_interval_ms(&self) -> Option<u32> {
        self.tuning.iter().find_map(|t| match t {
            Tuning::HealthStartInterval(ms) => Some(*ms),
            _ => None,
        })
    }

    /// The memory soft limit in bytes (compose `mem_reservation`), if given.
    pub fn memory_reservation(&self) -> Option<u64> {
        self.tuning.iter().find_map(|t| match t {
            Tuning::MemoryReservation(bytes) => Some(*bytes),
            _ => None,
        })
    }

    /// The service's own log rotation, if given.
    pub fn log_rotation(&self) -> Option<LogRotation> {
        self.tuning.iter().find_map(|t| match t {
            Tuning::Logging(rotation) => Some(*rotation),
            _ => None,
        })
    }

    /// Checks one of these entries; returns the key it must be unique under (`None`: not
    /// one of them).
    pub(crate) fn validate_extra_entry(
        &self,
        entry: &Tuning,
    ) -> Result<Option<EntryKey>, InvalidDesired> {
        let bad = |field, value, rule| self.invalid(field, value, rule);
        let key = match entry {
            Tuning::Tmpfs(tmpfs) => {
                let target = &tmpfs.target;
                if !is_clean_absolute(target) || target == "/" || target.contains([',', ':']) {
                    return Err(bad(
                        "tmpfs",
                        target.clone(),
                        "must be an absolute path without \"..\", ',' or ':', other than /",
                    ));
                }
                let trimmed = target.trim_end_matches('/');
                let under = |tree: &str| {
                    trimmed == tree
                        || trimmed
                            .strip_prefix(tree)
                            .is_some_and(|r| r.starts_with('/'))
                };
                if RUNTIME_TREES.iter().any(|tree| under(tree)) {
                    return Err(bad(
                        "tmpfs",
                        target.clone(),
                        "is in /proc, /sys or /dev, which the runtime mounts itself (use shm_size for /dev/shm)",
                    ));
                }
                if self
                    .volumes
                    .iter()
                    .any(|v| v.target.trim_end_matches('/') == trimmed)
                {
                    return Err(bad("tmpfs", target.clone(), "is also a volume's target"));
                }
                if tmpfs.size_bytes == Some(0) {
                    return Err(bad(
                        "tmpfs",
                        format!("{target}: size=0"),
                        "must have a size above 0 (leave size out for the kernel's default)",
                    ));
                }
                if tmpfs.mode.is_some_and(|m| m > 0o7777) {
                    return Err(bad(
                        "tmpfs",
                        format!("{target}: mode={:o}", tmpfs.mode.unwrap_or_default()),
                        "must have a mode of at most 7777 (octal)",
                    ));
                }
                ("tmpfs", trimmed.to_string())
            }
            Tuning::ShmSize(bytes) => {
                if *bytes == 0 {
                    return Err(bad("shm_size", "0".into(), "must be above 0"));
                }
                ("shm_size", String::new())
            }
            Tuning::GroupAdd(group) => {
                if !is_user_part(group) {
                    return Err(bad(
                        "group_add",
                        group.clone(),
                        "must be a group name (letters, digits, '_', '.', '-') or a GID",
                    ));
                }
                ("group_add", group.clone())
            }
            Tuning::Logging(rotation) => {
                if rotation.max_bytes.is_some_and(|b| b < MIN_LOG_BYTES) {
                    return Err(bad(
                        "logging",
                        format!("max-size {}", rotation.max_bytes.unwrap_or_default()),
                        "must be at least 1k",
                    ));
                }
                if rotation
                    .max_files
                    .is_some_and(|n| !(1..=MAX_LOG_FILES).contains(&n))
                {
                    return Err(bad(
                        "logging",
                        format!("max-file {}", rotation.max_files.unwrap_or_default()),
                        "must be from 1 to 100",
                    ));
                }
                ("logging", String::new())
            }
            Tuning::HealthStartInterval(ms) => {
                if self.health.is_none() {
                    return Err(bad(
                        "healthcheck.start_interval",
                        format!("{ms} ms"),
                        "needs a health check",
                    ));
                }
                if *ms == 0 {
                    return Err(bad(
                        "healthcheck.start_interval",
                        "0 ms".into(),
                        "must be above 0",
                    ));
                }
                ("healthcheck.start_interval", String::new())
            }
            _ => return Ok(None),
        };
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{VolumeMount, VolumeSource};
    use alloc::vec;
    use alloc::vec::Vec;

    fn checked(tuning: Vec<Tuning>) -> Result<(), InvalidDesired> {
        let mut spec = crate::samples::desired_with_services(1).services.remove(0);
        spec.tuning = tuning;
        spec.validate()
    }

    fn tmpfs(target: &str) -> TmpfsMount {
        TmpfsMount {
            size_bytes: Some(64 << 20),
            mode: Some(0o1777),
            uid: Some(1000),
            exec: true,
            ..TmpfsMount::at(target)
        }
    }

    #[test]
    fn good_entries_pass() {
        let mut spec = crate::samples::desired_with_services(1).services.remove(0);
        assert!(spec.health.is_some(), "the sample has a health check");
        spec.tuning = vec![
            Tuning::Tmpfs(tmpfs("/run")),
            Tuning::Tmpfs(tmpfs("/tmp/cache")),
            Tuning::ShmSize(128 << 20),
            Tuning::GroupAdd("dialout".into()),
            Tuning::GroupAdd("997".into()),
            Tuning::Logging(LogRotation {
                max_bytes: Some(10 << 20),
                max_files: Some(3),
            }),
            Tuning::HealthStartInterval(1000),
        ];
        spec.validate().unwrap();
        assert_eq!(spec.shm_size(), Some(128 << 20));
        assert_eq!(spec.health_start_interval_ms(), Some(1000));
        assert_eq!(spec.log_rotation().and_then(|r| r.max_files), Some(3));
    }

    #[test]
    fn each_bad_entry_is_named() {
        let rotation = |max_bytes, max_files| {
            Tuning::Logging(LogRotation {
                max_bytes,
                max_files,
            })
        };
        let mut zero_size = tmpfs("/run");
        zero_size.size_bytes = Some(0);
        let mut big_mode = tmpfs("/run");
        big_mode.mode = Some(0o17777);
        let cases: Vec<(Vec<Tuning>, &str)> = vec![
            (
                vec![Tuning::Tmpfs(tmpfs("run"))],
                "tmpfs: \"run\" must be an absolute",
            ),
            (vec![Tuning::Tmpfs(tmpfs("/"))], "other than /"),
            (vec![Tuning::Tmpfs(tmpfs("/a/../etc"))], "without \"..\""),
            (vec![Tuning::Tmpfs(tmpfs("/a:b"))], "':'"),
            (vec![Tuning::Tmpfs(tmpfs("/dev/shm"))], "use shm_size"),
            (
                vec![Tuning::Tmpfs(tmpfs("/proc/x"))],
                "runtime mounts itself",
            ),
            (vec![Tuning::Tmpfs(zero_size)], "size above 0"),
            (vec![Tuning::Tmpfs(big_mode)], "mode=17777"),
            (
                vec![Tuning::Tmpfs(tmpfs("/run")), Tuning::Tmpfs(tmpfs("/run/"))],
                "tmpfs: \"/run\" is given twice",
            ),
            (vec![Tuning::ShmSize(0)], "shm_size: \"0\" must be above 0"),
            (
                vec![Tuning::ShmSize(1), Tuning::ShmSize(2)],
                "shm_size: \"\" is given twice",
            ),
            (vec![Tuning::GroupAdd("-x".into())], "group_add: \"-x\""),
            (vec![Tuning::GroupAdd("a b".into())], "group name"),
            (
                vec![
                    Tuning::GroupAdd("gpio".into()),
                    Tuning::GroupAdd("gpio".into()),
                ],
                "group_add: \"gpio\" is given twice",
            ),
            (
                vec![rotation(Some(10), None)],
                "logging: \"max-size 10\" must be at least 1k",
            ),
            (
                vec![rotation(None, Some(0))],
                "logging: \"max-file 0\" must be from 1",
            ),
            (vec![rotation(None, Some(101))], "max-file 101"),
            (
                vec![Tuning::HealthStartInterval(0)],
                "healthcheck.start_interval",
            ),
        ];
        for (tuning, words) in cases {
            let err = checked(tuning).unwrap_err().to_string();
            assert!(err.contains(words), "{err} lacks {words}");
        }
    }

    #[test]
    fn the_new_entries_are_tagged_after_extra_host() {
        // postcard writes a variant's index first: these must stay 11.. (ExtraHost is 10).
        let tags: Vec<u8> = [
            Tuning::Tmpfs(tmpfs("/run")),
            Tuning::ShmSize(1),
            Tuning::GroupAdd("g".into()),
            Tuning::Logging(LogRotation {
                max_bytes: None,
                max_files: None,
            }),
            Tuning::HealthStartInterval(1),
            Tuning::MemoryReservation(1),
            Tuning::ExtraHostGateway("h".into()),
            Tuning::Privileged {
                no_new_privileges: false,
            },
        ]
        .iter()
        .map(|t| postcard::to_allocvec(t).unwrap()[0])
        .collect();
        assert_eq!(tags, [11, 12, 13, 14, 15, 16, 17, 18]);
        let extra_host = Tuning::ExtraHost {
            name: "h".into(),
            address: [10, 0, 0, 1],
        };
        assert_eq!(postcard::to_allocvec(&extra_host).unwrap()[0], 10);
    }

    #[test]
    fn tmpfs_and_volume_targets_differ_and_start_interval_needs_a_check() {
        let mut spec = crate::samples::desired_with_services(1).services.remove(0);
        spec.volumes.push(VolumeMount {
            source: VolumeSource::Named("data".into()),
            target: "/data".into(),
            read_only: false,
        });
        spec.tuning = vec![Tuning::Tmpfs(tmpfs("/data"))];
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("is also a volume's target"), "{err}");
        spec.tuning = vec![Tuning::HealthStartInterval(500)];
        spec.health = None;
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("needs a health check"), "{err}");
    }
}
