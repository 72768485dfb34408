//! The rollout decision as plain functions: given the plan, the phase and what each targeted
//! device reports, `decide` says what to do next. It never does I/O and never reads a
//! clock (`now` is an argument), so every situation is a row in a table test.
//!
//! Waves are cumulative: `1,10%,100%` over 50 devices means the first 1, then up to 5,
//! then all 50. A wave advances when every device in it has been healthy on the new
//! generation for the health window; the rollout pauses when the failures among devices
//! started so far exceed the threshold (and asks for the failed wave to be rolled back
//! when the plan says so).

use std::fmt;
use std::str::FromStr;

/// One wave's cumulative size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveSize {
    Count(u32),
    /// 1..=100 percent of the targeted devices (rounded up, at least one).
    Percent(u8),
}

/// A failure threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    Count(u32),
    Percent(u8),
}

/// Why a wave or threshold spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaveSpecError {
    #[error("wave {item:?} must be a count (e.g. 1) or a percentage (e.g. 10%)")]
    Item { item: String },
    #[error("percentage {item:?} must be between 1% and 100%")]
    Percent { item: String },
    #[error("waves must grow: {item:?} is not larger than the wave before it")]
    NotGrowing { item: String },
    #[error("the last wave must be 100% so every targeted device is reached")]
    LastNotAll,
}

fn parse_size(item: &str) -> Result<(bool, u32), WaveSpecError> {
    let bad = || WaveSpecError::Item { item: item.into() };
    match item.strip_suffix('%') {
        Some(p) => {
            let p: u32 = p.parse().map_err(|_| bad())?;
            if !(1..=100).contains(&p) {
                return Err(WaveSpecError::Percent { item: item.into() });
            }
            Ok((true, p))
        }
        None => Ok((false, item.parse().map_err(|_| bad())?)),
    }
}

/// Parses `1,10%,100%`.
pub fn parse_waves(spec: &str) -> Result<Vec<WaveSize>, WaveSpecError> {
    let mut waves = Vec::new();
    for item in spec.split(',').map(str::trim) {
        let (percent, n) = parse_size(item)?;
        if !percent && n == 0 {
            return Err(WaveSpecError::Item { item: item.into() });
        }
        let wave = if percent {
            WaveSize::Percent(n as u8)
        } else {
            WaveSize::Count(n)
        };
        if let (Some(WaveSize::Percent(a)), WaveSize::Percent(b)) = (waves.last(), wave) {
            if b <= *a {
                return Err(WaveSpecError::NotGrowing { item: item.into() });
            }
        }
        waves.push(wave);
    }
    if waves.last() != Some(&WaveSize::Percent(100)) {
        return Err(WaveSpecError::LastNotAll);
    }
    Ok(waves)
}

impl FromStr for Threshold {
    type Err = WaveSpecError;
    fn from_str(item: &str) -> Result<Self, Self::Err> {
        let (percent, n) = parse_size(item.trim())?;
        Ok(if percent {
            Threshold::Percent(n as u8)
        } else {
            Threshold::Count(n)
        })
    }
}

/// What a rollout is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPlan {
    pub waves: Vec<WaveSize>,
    pub health_window_s: u64,
    pub max_failures: Threshold,
    /// Roll the failed wave back to the previous generation when pausing on failures.
    pub rollback_on_failure: bool,
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waves `0..=wave` have been started.
    Running {
        wave: usize,
    },
    Paused {
        wave: usize,
    },
    Completed,
    Aborted,
    RolledBack,
}

/// One targeted device as `decide` sees it, in rollout order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceHealth {
    /// Not reporting the new generation yet (or not started).
    Pending,
    /// Running the new generation and healthy since this time.
    HealthySince(u64),
    /// Rolled back, failed to apply, or unhealthy on the new generation.
    Failed,
}

/// The decision's input besides the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutView<'a> {
    pub phase: &'a Phase,
    /// Every targeted device, in the fixed order waves take them.
    pub devices: &'a [DeviceHealth],
    pub now: u64,
    /// Failures the operator accepted by resuming a paused rollout: they no longer count
    /// against the threshold (else a resume would pause again at once).
    pub accepted_failures: usize,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do until devices report more.
    Wait,
    /// Start wave `wave`: give devices `from..to` the new desired state.
    StartWave { wave: usize, from: usize, to: usize },
    /// Failures passed the threshold: pause; roll back devices `from..to` if asked.
    /// `failures` counts every failed started device, accepted ones included.
    Pause {
        failures: usize,
        rollback: Option<(usize, usize)>,
    },
    /// Every device is healthy on the new generation for the window.
    Complete,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Cumulative device counts at the end of each wave, for `total` targeted devices.
pub fn wave_ends(waves: &[WaveSize], total: usize) -> Vec<usize> {
    let mut ends = Vec::with_capacity(waves.len());
    let mut last = 0;
    for wave in waves {
        let end = match *wave {
            WaveSize::Count(n) => n as usize,
            WaveSize::Percent(p) => (total * p as usize).div_ceil(100).max(1),
        }
        .clamp(last, total);
        ends.push(end);
        last = end;
    }
    ends
}

fn threshold_passed(threshold: Threshold, failures: usize, started: usize) -> bool {
    match threshold {
        Threshold::Count(n) => failures > n as usize,
        Threshold::Percent(p) => failures * 100 > started * p as usize,
    }
}

/// The next step of a rollout. Paused, completed, aborted and rolled-back rollouts wait for
/// the operator.
pub fn decide(plan: &RolloutPlan, view: &RolloutView<'_>) -> Decision {
    let Phase::Running { wave } = *view.phase else {
        return Decision::Wait;
    };
    let ends = wave_ends(&plan.waves, view.devices.len());
    let start = |w: usize| if w == 0 { 0 } else { ends[w - 1] };
    let Some(&end) = ends.get(wave) else {
        return Decision::Complete;
    };
    let started = &view.devices[..end];
    let failures = started
        .iter()
        .filter(|d| matches!(d, DeviceHealth::Failed))
        .count();
    let counted = failures.saturating_sub(view.accepted_failures);
    let judged = started.len().saturating_sub(failures - counted);
    if counted > 0 && threshold_passed(plan.max_failures, counted, judged) {
        return Decision::Pause {
            failures,
            rollback: plan.rollback_on_failure.then(|| (start(wave), end)),
        };
    }
    let settled = started.iter().all(|d| match d {
        DeviceHealth::HealthySince(t) => view.now.saturating_sub(*t) >= plan.health_window_s,
        // Failures under the threshold do not hold the rollout back.
        DeviceHealth::Failed => true,
        DeviceHealth::Pending => false,
    });
    if !settled {
        return Decision::Wait;
    }
    match ends.get(wave + 1) {
        Some(&next_end) => Decision::StartWave {
            wave: wave + 1,
            from: end,
            to: next_end,
        },
        None => Decision::Complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceHealth::{Failed as F, HealthySince as H, Pending as P};

    fn plan(rollback: bool) -> RolloutPlan {
        RolloutPlan {
            waves: parse_waves("1,50%,100%").unwrap(),
            health_window_s: 60,
            max_failures: "25%".parse().unwrap(),
            rollback_on_failure: rollback,
        }
    }

    #[test]
    fn decision_table() {
        let running = |wave| Phase::Running { wave };
        // (phase, devices, now, rollback, expected)
        let table: Vec<(Phase, Vec<DeviceHealth>, u64, bool, Decision)> = vec![
            // First device not reporting yet.
            (running(0), vec![P, P, P, P], 100, false, Decision::Wait),
            // Healthy, but not for the whole window.
            (running(0), vec![H(80), P, P, P], 100, false, Decision::Wait),
            // Healthy for the window: next wave takes devices up to 50%.
            (
                running(0),
                vec![H(40), P, P, P],
                100,
                false,
                Decision::StartWave {
                    wave: 1,
                    from: 1,
                    to: 2,
                },
            ),
            (
                running(1),
                vec![H(0), H(40), P, P],
                100,
                false,
                Decision::StartWave {
                    wave: 2,
                    from: 2,
                    to: 4,
                },
            ),
            // All waves healthy: done.
            (
                running(2),
                vec![H(0), H(0), H(0), H(40)],
                100,
                false,
                Decision::Complete,
            ),
            // The canary fails: 1 of 1 is over 25%: pause, roll back if asked.
            (
                running(0),
                vec![F, P, P, P],
                100,
                false,
                Decision::Pause {
                    failures: 1,
                    rollback: None,
                },
            ),
            (
                running(0),
                vec![F, P, P, P],
                100,
                true,
                Decision::Pause {
                    failures: 1,
                    rollback: Some((0, 1)),
                },
            ),
            // 1 failure among 4 started is 25%, not over it: carry on.
            (
                running(2),
                vec![H(0), H(0), F, H(0)],
                100,
                false,
                Decision::Complete,
            ),
            // 2 of 4 is over 25%: pause and roll back the last wave.
            (
                running(2),
                vec![H(0), F, F, H(0)],
                100,
                true,
                Decision::Pause {
                    failures: 2,
                    rollback: Some((2, 4)),
                },
            ),
            // Paused and finished rollouts wait for the operator.
            (
                Phase::Paused { wave: 1 },
                vec![H(0), H(0), P, P],
                100,
                false,
                Decision::Wait,
            ),
            (Phase::Aborted, vec![P], 100, false, Decision::Wait),
            (Phase::Completed, vec![H(0)], 100, false, Decision::Wait),
        ];
        for (i, (phase, devices, now, rollback, expected)) in table.into_iter().enumerate() {
            let view = RolloutView {
                phase: &phase,
                devices: &devices,
                now,
                accepted_failures: 0,
            };
            assert_eq!(decide(&plan(rollback), &view), expected, "row {i}");
        }
    }

    #[test]
    fn accepted_failures_do_not_pause_a_resumed_rollout_again() {
        let phase = Phase::Running { wave: 0 };
        let devices = [F, P, P, P];
        let view = |accepted_failures| RolloutView {
            phase: &phase,
            devices: &devices,
            now: 100,
            accepted_failures,
        };
        assert!(matches!(
            decide(&plan(false), &view(0)),
            Decision::Pause { failures: 1, .. }
        ));
        assert_eq!(
            decide(&plan(false), &view(1)),
            Decision::StartWave {
                wave: 1,
                from: 1,
                to: 2
            }
        );
        // A new failure after the resume counts again.
        let later = Phase::Running { wave: 1 };
        let devices = [F, F, P, P];
        let view = RolloutView {
            phase: &later,
            devices: &devices,
            now: 100,
            accepted_failures: 1,
        };
        assert!(matches!(
            decide(&plan(false), &view),
            Decision::Pause { failures: 2, .. }
        ));
    }

    #[test]
    fn waves_are_cumulative_and_cover_everyone() {
        let waves = parse_waves("1,10%,100%").unwrap();
        assert_eq!(wave_ends(&waves, 50), vec![1, 5, 50]);
        assert_eq!(wave_ends(&waves, 1), vec![1, 1, 1]);
        assert_eq!(wave_ends(&waves, 3), vec![1, 1, 3]);
        assert_eq!(wave_ends(&parse_waves("5,100%").unwrap(), 3), vec![3, 3]);
    }

    #[test]
    fn bad_wave_specs_are_named() {
        assert_eq!(parse_waves("1,10%"), Err(WaveSpecError::LastNotAll));
        assert!(matches!(
            parse_waves("x,100%"),
            Err(WaveSpecError::Item { .. })
        ));
        assert!(matches!(
            parse_waves("0,100%"),
            Err(WaveSpecError::Item { .. })
        ));
        assert!(matches!(
            parse_waves("150%"),
            Err(WaveSpecError::Percent { .. })
        ));
        assert!(matches!(
            parse_waves("50%,20%,100%"),
            Err(WaveSpecError::NotGrowing { .. })
        ));
        assert_eq!("5%".parse::<Threshold>(), Ok(Threshold::Percent(5)));
        assert_eq!("2".parse::<Threshold>(), Ok(Threshold::Count(2)));
    }
}
