//! `ServiceSpec::validate`: every field of one service that the agent would otherwise only
//! trip over when it creates the container — after it had already stopped the old one. The
//! controller runs it when an app is deployed, the agent before it touches anything.
//! Errors name the service, the field (as compose spells it) and the bad value.

use alloc::format;
use alloc::string::{String, ToString};

use crate::capability::capability_name;
use crate::desired::{HealthProbe, ServiceSpec, VolumeSource};
use crate::lifecycle::MAX_SIGNAL;
use crate::seccomp::SeccompPolicy;
use crate::validate::InvalidDesired;

/// The longest stop grace period and minimum uptime (an update must end some time).
const MAX_LIFECYCLE_MS: u32 = 3_600_000;

/// Characters of a user or group name (POSIX portable names, as shadow-utils allows).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// An absolute path with no `..` component and no NUL.
pub(crate) fn is_clean_absolute(path: &str) -> bool {
    path.starts_with('/') && !path.contains('\0') && !path.split('/').any(|part| part == "..")
}

/// `name` or `uid` for one half of `user[:group]`.
pub(crate) fn is_user_part(part: &str) -> bool {
    if part.is_empty() || part.len() > 32 {
        return false;
    }
    if part.chars().all(|c| c.is_ascii_digit()) {
        return part.parse::<u32>().is_ok();
    }
    !part.starts_with('-') && part.chars().all(is_name_char)
}

/// Docker's named-volume rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (it becomes a directory name).
fn is_volume_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(is_name_char)
}

/// A cpuset list such as `0-1,3`.
fn is_cpu_list(list: &str) -> bool {
    let number = |n: &str| !n.is_empty() && n.len() <= 4 && n.chars().all(|c| c.is_ascii_digit());
    !list.is_empty()
        && list.split(',').all(|item| match item.split_once('-') {
            Some((a, b)) if number(a) && number(b) => a.parse::<u32>().ok() <= b.parse().ok(),
            Some(_) => false,
            None => number(item),
        })
}

impl ServiceSpec {
    /// The error for a bad value of one of this service's fields.
    pub(crate) fn invalid(
        &self,
        field: &'static str,
        value: String,
        rule: &'static str,
    ) -> InvalidDesired {
        InvalidDesired::Field {
            service: self.name.clone(),
            field,
            value,
            rule,
        }
    }

    /// Checks this service's fields on their own (`DesiredState::validate` adds the checks
    /// across services: duplicates, dependencies).
    pub fn validate(&self) -> Result<(), InvalidDesired> {
        let bad = |field: &'static str, value: &str, rule: &'static str| InvalidDesired::Field {
            service: self.name.clone(),
            field,
            value: value.to_string(),
            rule,
        };
        if let SeccompPolicy::Profile(profile) = &self.seccomp {
            profile
                .validate()
                .map_err(|source| InvalidDesired::SeccompProfile {
                    service: self.name.clone(),
                    source,
                })?;
        }
        for (field, args) in [("entrypoint", &self.entrypoint), ("command", &self.command)] {
            if let Some(arg) = args.iter().find(|a| a.contains('\0')) {
                return Err(bad(field, arg, "must not contain a NUL byte"));
            }
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(bad(
                    "environment",
                    name,
                    "must be a name without '=' or NUL",
                ));
            }
            if value.contains('\0') {
                return Err(bad("environment", name, "has a value with a NUL byte"));
            }
        }
        if let Some(dir) = &self.working_dir {
            if !is_clean_absolute(dir) {
                return Err(bad(
                    "working_dir",
                    dir,
                    "must be an absolute path without \"..\"",
                ));
            }
        }
        if let Some(user) = &self.user {
            let mut parts = user.splitn(2, ':');
            let user_ok = parts.next().is_some_and(is_user_part);
            if !user_ok || !parts.next().is_none_or(is_user_part) {
                return Err(bad(
                    "user",
                    user,
                    "must be NAME or UID, optionally :GROUP or :GID",
                ));
            }
        }
        self.validate_resources()?;
        self.validate_health()?;
        self.validate_lifecycle()?;
        self.validate_tuning()?;
        for volume in &self.volumes {
            if !is_clean_absolute(&volume.target) || volume.target == "/" {
                let rule = "must have an absolute target without \"..\", other than /";
                return Err(bad("volumes", &volume.target, rule));
            }
            match &volume.source {
                VolumeSource::Named(name) if !is_volume_name(name) => {
                    let rule = "is not a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)";
                    return Err(bad("volumes", name, rule));
                }
                VolumeSource::HostPath(path) if !is_clean_absolute(path) => {
                    return Err(bad(
                        "volumes",
                        path,
                        "must be an absolute host path without \"..\"",
                    ));
                }
                _ => {}
            }
        }
        for device in &self.devices {
            for path in [&device.host_path, &device.container_path] {
                if !is_clean_absolute(path) {
                    return Err(bad(
                        "devices",
                        path,
                        "must be an absolute path without \"..\"",
                    ));
                }
            }
            let rwm = device
                .permissions
                .chars()
                .all(|c| matches!(c, 'r' | 'w' | 'm'));
            if device.permissions.is_empty() || !rwm {
                let rule = "permissions must be a non-empty subset of \"rwm\"";
                return Err(bad("devices", &device.permissions, rule));
            }
        }
        for (field, names) in [("cap_add", &self.cap_add), ("cap_drop", &self.cap_drop)] {
            if let Some(name) = names.iter().find(|n| capability_name(n).is_none()) {
                return Err(InvalidDesired::UnknownCapability {
                    service: self.name.clone(),
                    field,
                    name: name.clone(),
                });
            }
        }
        if self.depends_on.iter().any(|d| d.service == self.name) {
            return Err(InvalidDesired::DependencyCycle {
                service: self.name.clone(),
            });
        }
        Ok(())
    }

    fn validate_resources(&self) -> Result<(), InvalidDesired> {
        let bad = |field, value, rule| self.invalid(field, value, rule);
        let r = &self.resources;
        if let Some(m) = r.cpu_millicores.filter(|m| *m == 0 || *m > 1_024_000) {
            return Err(bad(
                "cpus",
                format!("{m}m"),
                "must be between 1m and 1024 CPUs",
            ));
        }
        if let Some(m) = r.memory_max_bytes.filter(|m| *m < 1 << 20) {
            return Err(bad(
                "mem_limit",
                format!("{m} bytes"),
                "must be at least 1 MiB",
            ));
        }
        if let (Some(max), Some(swap)) = (r.memory_max_bytes, r.memory_swap_max_bytes) {
            if swap < max {
                return Err(bad(
                    "memswap_limit",
                    format!("{swap} bytes"),
                    "must be at least mem_limit",
                ));
            }
        }
        if let Some(low) = self.memory_reservation() {
            if low < 1 << 20 {
                return Err(bad(
                    "mem_reservation",
                    format!("{low} bytes"),
                    "must be at least 1 MiB",
                ));
            }
            // Docker's rule: a soft limit above the hard one would never be reached.
            if r.memory_max_bytes.is_some_and(|max| low > max) {
                return Err(bad(
                    "mem_reservation",
                    format!("{low} bytes"),
                    "must be at most mem_limit",
                ));
            }
        }
        for (field, weight) in [("cpu_weight", r.cpu_weight), ("io_weight", r.io_weight)] {
            if let Some(w) = weight.filter(|w| !(1..=10_000).contains(w)) {
                return Err(bad(field, w.to_string(), "must be between 1 and 10000"));
            }
        }
        if r.pids_max == Some(0) {
            return Err(bad("pids_limit", "0".into(), "must be greater than 0"));
        }
        if let Some(list) = r.cpuset_cpus.as_deref().filter(|l| !is_cpu_list(l)) {
            return Err(bad(
                "cpuset",
                list.into(),
                "must be a CPU list such as 0-1,3",
            ));
        }
        Ok(())
    }

    fn validate_lifecycle(&self) -> Result<(), InvalidDesired> {
        let bad = |field, value, rule| self.invalid(field, value, rule);
        let l = &self.lifecycle;
        if let Some(n) = l.stop_signal.filter(|n| !(1..=MAX_SIGNAL).contains(n)) {
            return Err(bad(
                "stop_signal",
                n.to_string(),
                "must be a signal between 1 and 31",
            ));
        }
        if let Some(ms) = l.stop_grace_ms.filter(|ms| *ms > MAX_LIFECYCLE_MS) {
            return Err(bad(
                "stop_grace_period",
                format!("{ms} ms"),
                "must be at most 1 hour",
            ));
        }
        if let Some(ms) = l.min_uptime_ms.filter(|ms| *ms > MAX_LIFECYCLE_MS) {
            return Err(bad(
                "deploy.update_config.monitor",
                format!("{ms} ms"),
                "must be at most 1 hour",
            ));
        }
        Ok(())
    }

    fn validate_health(&self) -> Result<(), InvalidDesired> {
        let Some(health) = &self.health else {
            return Ok(());
        };
        let bad = |value: String, rule: &'static str| InvalidDesired::Field {
            service: self.name.clone(),
            field: "healthcheck",
            value,
            rule,
        };
        if health.interval_ms == 0 || health.timeout_ms == 0 {
            let value = format!(
                "interval {} ms, timeout {} ms",
                health.interval_ms, health.timeout_ms
            );
            return Err(bad(value, "must have a non-zero interval and timeout"));
        }
        match &health.probe {
            HealthProbe::Exec(argv) if argv.is_empty() => {
                Err(bad(String::new(), "test must be a non-empty command"))
            }
            HealthProbe::Exec(argv) => match argv.iter().find(|a| a.contains('\0')) {
                Some(arg) => Err(bad(arg.clone(), "test must not contain a NUL byte")),
                None => Ok(()),
            },
            HealthProbe::Http { port: 0, .. } | HealthProbe::Tcp { port: 0 } => {
                Err(bad("0".into(), "port must be between 1 and 65535"))
            }
            HealthProbe::Http { path, .. }
                if !path.starts_with('/')
                    || path
                        .chars()
                        .any(|c| c.is_ascii_whitespace() || c.is_control()) =>
            {
                Err(bad(
                    path.clone(),
                    "path must start with / and hold no spaces",
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::desired::{DeviceMapping, HealthCheck, VolumeMount};
    use crate::samples;
    use crate::tuning::Tuning;

    fn service() -> ServiceSpec {
        samples::desired_with_services(1).services.remove(0)
    }

    #[test]
    fn each_bad_field_is_named_with_its_value() {
        type Edit = fn(&mut ServiceSpec);
        // (change, expected message)
        let table: &[(Edit, &str)] = &[
            (
                |s| s.cap_add = vec!["NOT_A_CAP".into()],
                "service db: cap_add: unknown capability \"NOT_A_CAP\"",
            ),
            (
                |s| s.cap_drop = vec!["chown".into(), "fly".into()],
                "cap_drop: unknown capability \"fly\"",
            ),
            (
                |s| s.user = Some("a:b:c".into()),
                "user: \"a:b:c\" must be NAME or UID",
            ),
            (
                |s| s.user = Some("99999999999".into()),
                "user: \"99999999999\"",
            ),
            (|s| s.user = Some(":0".into()), "user: \":0\""),
            (
                |s| s.volumes[0].target = "/data/../etc".into(),
                "volumes: \"/data/../etc\" must have an absolute target",
            ),
            (|s| s.volumes[0].target = "data".into(), "volumes: \"data\""),
            (|s| s.volumes[0].target = "/".into(), "other than /"),
            (
                |s| s.volumes[0].source = VolumeSource::Named("../../etc".into()),
                "volumes: \"../../etc\" is not a volume name",
            ),
            (
                |s| s.volumes[0].source = VolumeSource::HostPath("/srv/../etc".into()),
                "volumes: \"/srv/../etc\"",
            ),
            (
                |s| {
                    s.devices = vec![DeviceMapping {
                        host_path: "dev/i2c-1".into(),
                        container_path: "/dev/i2c-1".into(),
                        permissions: "rw".into(),
                    }]
                },
                "devices: \"dev/i2c-1\"",
            ),
            (
                |s| {
                    s.devices = vec![DeviceMapping {
                        host_path: "/dev/i2c-1".into(),
                        container_path: "/dev/i2c-1".into(),
                        permissions: "rwx".into(),
                    }]
                },
                "devices: \"rwx\" permissions",
            ),
            (|s| s.resources.cpu_millicores = Some(0), "cpus: \"0m\""),
            (
                |s| s.resources.memory_max_bytes = Some(1000),
                "mem_limit: \"1000 bytes\" must be at least 1 MiB",
            ),
            (
                |s| s.tuning.push(Tuning::MemoryReservation(1000)),
                "mem_reservation: \"1000 bytes\" must be at least 1 MiB",
            ),
            (
                |s| {
                    s.resources.memory_max_bytes = Some(64 << 20);
                    s.tuning.push(Tuning::MemoryReservation(65 << 20));
                },
                "mem_reservation: \"68157440 bytes\" must be at most mem_limit",
            ),
            (
                |s| {
                    s.tuning.push(Tuning::MemoryReservation(8 << 20));
                    s.tuning.push(Tuning::MemoryReservation(8 << 20));
                },
                "mem_reservation: \"\" is given twice",
            ),
            (
                |s| s.resources.cpuset_cpus = Some("3-1".into()),
                "cpuset: \"3-1\"",
            ),
            (|s| s.resources.pids_max = Some(0), "pids_limit"),
            (
                |s| s.env.push(("A=B".into(), "x".into())),
                "environment: \"A=B\"",
            ),
            (
                |s| s.command.push("a\0b".into()),
                "command: \"a\\0b\" must not contain a NUL byte",
            ),
            (
                |s| s.working_dir = Some("app".into()),
                "working_dir: \"app\"",
            ),
            (
                |s| s.health.as_mut().unwrap().interval_ms = 0,
                "healthcheck: \"interval 0 ms, timeout 2000 ms\"",
            ),
            (
                |s| s.health.as_mut().unwrap().probe = HealthProbe::Tcp { port: 0 },
                "healthcheck: \"0\" port",
            ),
            (
                |s| {
                    s.health.as_mut().unwrap().probe = HealthProbe::Http {
                        port: 80,
                        path: "/a b".into(),
                    }
                },
                "healthcheck: \"/a b\" path",
            ),
            (
                |s| s.health.as_mut().unwrap().probe = HealthProbe::Exec(vec![]),
                "test must be a non-empty command",
            ),
            (
                |s| s.lifecycle.stop_signal = Some(32),
                "stop_signal: \"32\" must be a signal",
            ),
            (|s| s.lifecycle.stop_signal = Some(0), "stop_signal: \"0\""),
            (
                |s| s.lifecycle.stop_grace_ms = Some(3_600_001),
                "stop_grace_period: \"3600001 ms\"",
            ),
            (
                |s| s.lifecycle.min_uptime_ms = Some(u32::MAX),
                "deploy.update_config.monitor",
            ),
        ];
        for (edit, want) in table {
            let mut spec = service();
            edit(&mut spec);
            let got = spec.validate().unwrap_err().to_string();
            assert!(got.contains(want), "{got:?} lacks {want:?}");
        }
    }

    #[test]
    fn what_docker_accepts_passes() {
        let mut spec = service();
        spec.cap_add = vec!["NET_ADMIN".into(), "cap_sys_time".into()];
        spec.cap_drop = vec!["ALL".into()];
        spec.user = Some("1000:100".into());
        spec.working_dir = Some("/srv/app".into());
        spec.resources.cpuset_cpus = Some("0-1,3".into());
        // A reservation may equal the limit, as Docker allows.
        spec.resources.memory_max_bytes = Some(64 << 20);
        spec.tuning.push(Tuning::MemoryReservation(64 << 20));
        spec.volumes.push(VolumeMount {
            source: VolumeSource::HostPath("/etc/ssl".into()),
            target: "/etc/ssl".into(),
            read_only: true,
        });
        spec.health = Some(HealthCheck {
            probe: HealthProbe::Exec(vec!["/bin/true".into()]),
            interval_ms: 1,
            timeout_ms: 1,
            retries: 0,
            start_period_ms: 0,
        });
        spec.validate().unwrap();
        for user in ["www-data", "nobody:nogroup", "0", "app.user:0"] {
            spec.user = Some(user.into());
            spec.validate().unwrap_or_else(|e| panic!("{user}: {e}"));
        }
    }
}
