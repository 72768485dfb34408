//! A service's cgroup limits from Compose's keys: `mem_limit`, `memswap_limit`, `cpus`,
//! `cpu_shares`, `cpuset`, `pids_limit` and `deploy.resources.limits` (`cpus`, `memory`,
//! `pids`); the memory soft limit from `mem_reservation` and
//! `deploy.resources.reservations.memory`. A value given both ways must agree, as Docker
//! Compose requires of limits.

use coracle_proto::{Resources, Tuning};

use super::lenient::{scalar_f64, scalar_u64};
use super::model::{ComposeService, Scalar};
use super::{units, FieldResult};

/// The service's `Resources`; an error names the compose key.
pub(super) fn resources(s: &ComposeService) -> FieldResult<Resources> {
    let limits = s
        .deploy
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.limits.as_ref());
    let limit = |name, value: fn(&super::model::Limits) -> Option<&Scalar>| {
        ("limits", name, limits.and_then(value))
    };
    let memory = either(
        ("mem_limit", s.mem_limit.as_ref()),
        limit("memory", |l| l.memory.as_ref()),
        memory_bytes,
    )?;
    let cpus = either(
        ("cpus", s.cpus.as_ref()),
        limit("cpus", |l| l.cpus.as_ref()),
        millicores,
    )?
    .flatten();
    let pids = either(
        ("pids_limit", s.pids_limit.as_ref()),
        limit("pids", |l| l.pids.as_ref()),
        pids_max,
    )?
    .flatten();
    let swap = s
        .memswap_limit
        .as_ref()
        .map(|v| match scalar_f64(v) {
            Some(-1.0) => Ok(None),
            _ => memory_bytes(v).map(Some),
        })
        .transpose()
        .map_err(|e| ("memswap_limit", e))?
        .flatten();
    let cpu_weight = s
        .cpu_shares
        .as_ref()
        .map(cpu_weight)
        .transpose()
        .map_err(|e| ("cpu_shares", e))?;
    Ok(Resources {
        memory_max_bytes: memory,
        memory_swap_max_bytes: swap,
        cpu_millicores: cpus,
        cpu_weight,
        pids_max: pids,
        cpuset_cpus: s.cpuset.clone(),
        ..Resources::default()
    })
}

/// The service's memory soft limit (`mem_reservation`, or
/// `deploy.resources.reservations.memory`, as Docker Compose maps it outside swarm), sent
/// as its own tuning entry. `reservations.cpus` is read and dropped: Docker Compose drops
/// it too ("Cpu reservation is a swarm option"), as a CPU reservation only steers swarm's
/// placement and sets nothing on the container; a device runs what it is sent.
pub(super) fn reservation(s: &ComposeService) -> FieldResult<Option<Tuning>> {
    let reservations = s
        .deploy
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.reservations.as_ref());
    let memory = either(
        ("mem_reservation", s.mem_reservation.as_ref()),
        (
            "reservations",
            "memory",
            reservations.and_then(|r| r.memory.as_ref()),
        ),
        memory_bytes,
    )?;
    if let Some(cpus) = reservations.and_then(|r| r.cpus.as_ref()) {
        millicores(cpus).map_err(|e| ("deploy", format!("resources.reservations.cpus: {e}")))?;
    }
    Ok(memory.map(Tuning::MemoryReservation))
}

/// A value that `key` and `deploy.resources.SECTION.NAME` may both give; they must agree.
fn either<T: PartialEq + std::fmt::Debug>(
    (key, direct): (&'static str, Option<&Scalar>),
    (section, name, deploy): (&'static str, &'static str, Option<&Scalar>),
    parse: fn(&Scalar) -> Result<T, String>,
) -> FieldResult<Option<T>> {
    let direct = direct.map(parse).transpose().map_err(|e| (key, e))?;
    let deployed = deploy
        .map(parse)
        .transpose()
        .map_err(|e| ("deploy", format!("resources.{section}.{name}: {e}")))?;
    match (direct, deployed) {
        (Some(a), Some(b)) if a != b => Err((
            key,
            format!("{a:?} differs from deploy.resources.{section} ({b:?}): give one"),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

fn memory_bytes(v: &Scalar) -> Result<u64, String> {
    units::bytes(&v.to_string())
}

/// CPUs as millicores; Docker's `0` (no limit) is none.
fn millicores(v: &Scalar) -> Result<Option<u32>, String> {
    match scalar_f64(v) {
        Some(0.0) => Ok(None),
        Some(c) if c > 0.0 && c <= 1024.0 => Ok(Some((c * 1000.0).round() as u32)),
        _ => Err(format!("{v} is not a number of CPUs between 0 and 1024")),
    }
}

/// A process limit; Compose's `-1` (unlimited) is none.
fn pids_max(v: &Scalar) -> Result<Option<u32>, String> {
    if scalar_f64(v) == Some(-1.0) {
        return Ok(None);
    }
    scalar_u64(v)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| format!("{v} is not a number of processes above 0 (or -1)"))
}

/// Docker's shares (2..=262144) on cgroup v2's weight scale (1..=10000), as runc maps them.
fn cpu_weight(v: &Scalar) -> Result<u16, String> {
    let shares = scalar_u64(v)
        .filter(|s| (2..=262_144).contains(s))
        .ok_or_else(|| format!("{v} is not between 2 and 262144"))?;
    let weight = 1 + ((shares - 2) * 9999) / 262_142;
    Ok(u16::try_from(weight).expect("at most 10000 for shares at most 262144"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_shares_map_onto_the_cgroup_v2_weight_as_runc_does() {
        assert_eq!(cpu_weight(&Scalar::Int(2)), Ok(1));
        assert_eq!(cpu_weight(&Scalar::Int(1024)), Ok(39));
        assert_eq!(cpu_weight(&Scalar::Int(262_144)), Ok(10_000));
        assert!(cpu_weight(&Scalar::Int(1)).is_err());
    }

    #[test]
    fn cpus_are_a_number_or_a_string() {
        assert_eq!(millicores(&Scalar::Float(0.5)), Ok(Some(500)));
        assert_eq!(millicores(&Scalar::String("1.5".into())), Ok(Some(1500)));
        assert_eq!(millicores(&Scalar::Int(2)), Ok(Some(2000)));
        assert_eq!(millicores(&Scalar::Int(0)), Ok(None));
        assert!(millicores(&Scalar::String("lots".into())).is_err());
        assert!(millicores(&Scalar::Float(-1.0)).is_err());
    }
}
