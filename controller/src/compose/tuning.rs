//! A service's kernel and process settings from Compose's keys: `sysctls` (a map or a
//! `NAME=VALUE` list), `ulimits` (`nofile: 1024` or `{soft, hard}`), `oom_score_adj`,
//! `hostname`, `group_add` (names or GIDs, resolved in the image by the agent) and
//! `privileged` (with `security_opt: [no-new-privileges]` if given). Which
//! sysctls a container may set, the ulimit names and the ranges are checked by
//! `ServiceSpec::validate` (one rule for controller and agent).

use coracle_proto::Tuning;

use super::labels;
use super::lenient::{scalar_f64, scalar_u64};
use super::model::{ComposeService, Scalar, Ulimit};
use super::seccomp;
use super::FieldResult;

/// The service's tuning entries, in a stable order; an error names the compose key.
pub(super) fn tuning(s: &ComposeService) -> FieldResult<Vec<Tuning>> {
    let mut out = Vec::new();
    if let Some(sysctls) = &s.sysctls {
        let pairs = labels::pairs(sysctls).map_err(|_| {
            (
                "sysctls",
                "every entry needs a name (NAME=VALUE or NAME: VALUE)".to_string(),
            )
        })?;
        out.extend(
            pairs
                .into_iter()
                .map(|(name, value)| Tuning::Sysctl { name, value }),
        );
    }
    for (name, limit) in s.ulimits.iter().flatten() {
        let (soft, hard) = match limit {
            Ulimit::Both(value) => {
                let v = limit_value(name, value)?;
                (v, v)
            }
            Ulimit::Pair { soft, hard } => (limit_value(name, soft)?, limit_value(name, hard)?),
        };
        out.push(Tuning::Ulimit {
            name: name.clone(),
            soft,
            hard,
        });
    }
    if let Some(value) = &s.oom_score_adj {
        out.push(Tuning::OomScoreAdj(whole_i32(value).ok_or_else(|| {
            (
                "oom_score_adj",
                format!("{value} is not a whole number from -1000 to 1000"),
            )
        })?));
    }
    if let Some(hostname) = &s.hostname {
        out.push(Tuning::Hostname(hostname.clone()));
    }
    for group in &s.group_add {
        if !matches!(group, Scalar::Int(_) | Scalar::String(_)) {
            return Err(("group_add", format!("{group} is not a group name or GID")));
        }
        out.push(Tuning::GroupAdd(group.to_string()));
    }
    if s.privileged == Some(true) {
        out.push(Tuning::Privileged {
            no_new_privileges: seccomp::asks_no_new_privileges(&s.security_opt),
        });
    }
    Ok(out)
}

/// A limit: a whole number, or `-1` / `unlimited` for no limit.
fn limit_value(name: &str, value: &Scalar) -> FieldResult<u64> {
    if matches!(value, Scalar::String(s) if s == "unlimited") || whole_i32(value) == Some(-1) {
        return Ok(u64::MAX);
    }
    scalar_u64(value).ok_or_else(|| {
        (
            "ulimits",
            format!("{name}: {value} is not a whole number, -1 or unlimited"),
        )
    })
}

/// A whole number that may be negative (YAML reads `-500` as a float here).
fn whole_i32(value: &Scalar) -> Option<i32> {
    let v = scalar_f64(value)?;
    (v.fract() == 0.0 && v >= f64::from(i32::MIN) && v <= f64::from(i32::MAX)).then_some(v as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> ComposeService {
        serde_yaml::from_str(&format!("image: x\n{yaml}")).unwrap()
    }

    #[test]
    fn every_form_of_each_key_is_read() {
        let s = service(
            "sysctls:\n  net.core.somaxconn: 1024\n  kernel.shmmax: '68719476736'\n\
             ulimits:\n  nofile: {soft: 1024, hard: 4096}\n  nproc: 64\n  memlock: -1\n\
             oom_score_adj: -500\nhostname: gw\ngroup_add: [dialout, 997]\n",
        );
        let read = tuning(&s).unwrap();
        let sysctl = |name: &str, value: &str| Tuning::Sysctl {
            name: name.into(),
            value: value.into(),
        };
        let ulimit = |name: &str, soft, hard| Tuning::Ulimit {
            name: name.into(),
            soft,
            hard,
        };
        assert_eq!(
            read,
            [
                sysctl("kernel.shmmax", "68719476736"),
                sysctl("net.core.somaxconn", "1024"),
                ulimit("memlock", u64::MAX, u64::MAX),
                ulimit("nofile", 1024, 4096),
                ulimit("nproc", 64, 64),
                Tuning::OomScoreAdj(-500),
                Tuning::Hostname("gw".into()),
                Tuning::GroupAdd("dialout".into()),
                Tuning::GroupAdd("997".into()),
            ]
        );
        let list = service("sysctls: [net.ipv4.ip_forward=1]\n");
        assert_eq!(tuning(&list).unwrap(), [sysctl("net.ipv4.ip_forward", "1")]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = tuning(&service("ulimits:\n  nofile: lots\n")).unwrap_err();
        assert_eq!(err.0, "ulimits");
        assert!(err.1.contains("nofile: lots"), "{}", err.1);
        let err = tuning(&service("oom_score_adj: 1.5\n")).unwrap_err();
        assert_eq!(err.0, "oom_score_adj");
        let err = tuning(&service("group_add: [1.5]\n")).unwrap_err();
        assert_eq!(err.0, "group_add");
    }

    #[test]
    fn privileged_true_is_one_entry_and_false_is_none() {
        let privileged = |no_new_privileges| Tuning::Privileged { no_new_privileges };
        assert_eq!(
            tuning(&service("privileged: true\n")).unwrap(),
            [privileged(false)]
        );
        assert_eq!(
            tuning(&service(
                "privileged: 'true'\nsecurity_opt: [no-new-privileges]\n"
            ))
            .unwrap(),
            [privileged(true)]
        );
        assert_eq!(tuning(&service("privileged: false\n")).unwrap(), []);
    }
}
