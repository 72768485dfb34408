//! A service's `tuning` (compose `sysctls`, `ulimits`, `oom_score_adj`, `hostname`) on the
//! runtime spec. The values were validated with the desired state; the runtime checks the
//! sysctls again before any process exists (`runtime::init::kernel_params`).

use coracle_proto::tuning::rlimit_name;
use coracle_proto::Tuning;

use crate::runtime::spec::{ContainerSpec, Rlimit};

/// Puts each entry where the runtime reads it; a ulimit replaces the image default of the
/// same resource.
pub fn apply(spec: &mut ContainerSpec, tuning: &[Tuning]) {
    for entry in tuning {
        match entry {
            Tuning::Sysctl { name, value } => {
                spec.sysctl.insert(name.clone(), value.clone());
            }
            Tuning::Ulimit { name, soft, hard } => {
                // An unknown name was refused by validation; nothing to set then.
                let Some(kind) = rlimit_name(name) else {
                    continue;
                };
                spec.process.rlimits.retain(|r| r.kind != kind);
                spec.process.rlimits.push(Rlimit {
                    kind: kind.to_string(),
                    soft: *soft,
                    hard: *hard,
                });
            }
            Tuning::OomScoreAdj(value) => spec.process.oom_score_adj = Some(*value),
            Tuning::Hostname(name) => spec.hostname = Some(name.clone()),
            // Networking entries are the network manager's (`crate::network`).
            Tuning::Network(_)
            | Tuning::Publish(_)
            | Tuning::Expose { .. }
            | Tuning::Dns(_)
            | Tuning::DnsSearch(_)
            | Tuning::DnsOption(_)
            | Tuning::ExtraHost { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::Rootfs;

    #[test]
    fn each_entry_lands_in_the_runtime_spec() {
        let mut spec = ContainerSpec::new(Rootfs::Directory("/".into()), vec!["true".into()]);
        spec.hostname = Some("web".into());
        apply(
            &mut spec,
            &[
                Tuning::Sysctl {
                    name: "net.core.somaxconn".into(),
                    value: "1024".into(),
                },
                Tuning::Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 4096,
                },
                Tuning::OomScoreAdj(300),
                Tuning::Hostname("gw".into()),
            ],
        );
        assert_eq!(spec.sysctl["net.core.somaxconn"], "1024");
        assert_eq!(
            spec.process.rlimits,
            [Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 4096
            }]
        );
        assert_eq!(spec.process.oom_score_adj, Some(300));
        assert_eq!(spec.hostname.as_deref(), Some("gw"));
    }
}
