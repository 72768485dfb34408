//! `RolloutPace`: how a rollout moves, the part app and agent rollouts share — which
//! devices, in which waves, how many failures it tolerates, how long each device has to
//! apply and then to stay healthy, and whether a failing wave is rolled back at once.

use coracle_proto::ServiceSpec;

use super::driver::plan;
use super::RolloutError;
use crate::store::{NewRollout, Selector};

/// The longest health window and apply timeout accepted (a day): longer is almost surely a
/// unit mistake.
pub const MAX_HEALTH_WINDOW_S: u64 = 24 * 3600;

/// How a rollout moves.
#[derive(Debug, Clone)]
pub struct RolloutPace {
    pub selector: Selector,
    /// Cumulative wave sizes (`1,10%,100%`).
    pub waves: String,
    /// Failed devices tolerated before the rollout pauses: a count or a percentage.
    pub max_failures: String,
    pub health_window_s: u64,
    /// How long each device may take to download, start and report the new version (its
    /// health window starts once it runs it).
    pub apply_timeout_s: u64,
    pub rollback_on_failure: bool,
}

impl RolloutPace {
    /// Checks the windows and the plan the driver relies on later.
    pub(super) fn check(&self) -> Result<(), RolloutError> {
        for (field, value) in [
            ("health_window_s", self.health_window_s),
            ("apply_timeout_s", self.apply_timeout_s),
        ] {
            if value == 0 || value > MAX_HEALTH_WINDOW_S {
                return Err(RolloutError::Invalid {
                    field,
                    message: format!("{value} s is not between 1 s and {MAX_HEALTH_WINDOW_S} s"),
                });
            }
        }
        plan(
            self.waves.trim(),
            self.max_failures.trim(),
            self.health_window_s,
            self.rollback_on_failure,
        )?;
        Ok(())
    }

    /// The record to store for `app` (its compose text and pinned services; an agent
    /// rollout has neither and names its release).
    pub(super) fn into_new(
        self,
        app: String,
        compose: String,
        services: Vec<ServiceSpec>,
        agent_version: Option<String>,
    ) -> NewRollout {
        NewRollout {
            app,
            compose,
            services,
            selector: self.selector,
            waves: self.waves.trim().to_string(),
            max_failures: self.max_failures.trim().to_string(),
            health_window_s: self.health_window_s,
            apply_timeout_s: self.apply_timeout_s,
            rollback_on_failure: self.rollback_on_failure,
            devices: Vec::new(),
            agent_version,
        }
    }
}
