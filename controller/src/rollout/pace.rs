//! Checking a `RolloutPace` (the part app and agent rollouts share, stored with the
//! rollout: `store::RolloutPace`) and making the record to store from it.

use coracle_proto::ServiceSpec;

use super::driver::plan;
use super::RolloutError;
use crate::store::NewRollout;
pub use crate::store::RolloutPace;

/// The longest health window and apply timeout accepted (a day): longer is almost surely a
/// unit mistake.
pub const MAX_HEALTH_WINDOW_S: u64 = 24 * 3600;

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
            pace: RolloutPace {
                waves: self.waves.trim().to_string(),
                max_failures: self.max_failures.trim().to_string(),
                ..self
            },
            devices: Vec::new(),
            agent_version,
        }
    }
}
