//! Creating an agent rollout: the same waves, threshold, health window and rollback as an
//! app rollout, sending an agent release instead of an app. Every selected device must
//! run a platform the release has a build for.

use std::collections::BTreeSet;

use super::control::Checks;
use super::driver::{plan, Rollouts};
use super::RolloutError;
use crate::api::error::error_chain;
use crate::store::{NewRollout, RolloutRecord, Selector};

/// An agent rollout to create.
#[derive(Debug, Clone)]
pub struct CreateAgentRollout {
    pub version: String,
    pub selector: Selector,
    pub waves: String,
    pub max_failures: String,
    pub health_window_s: u64,
    pub apply_timeout_s: u64,
    pub rollback_on_failure: bool,
}

impl Rollouts {
    /// Checks and stores an agent rollout; its first wave starts at once.
    pub async fn create_agent(
        &self,
        request: CreateAgentRollout,
    ) -> Result<RolloutRecord, RolloutError> {
        let invalid = |field, message| RolloutError::Invalid { field, message };
        for (field, value) in [
            ("health_window_s", request.health_window_s),
            ("apply_timeout_s", request.apply_timeout_s),
        ] {
            if value == 0 || value > super::control::MAX_HEALTH_WINDOW_S {
                return Err(invalid(
                    field,
                    format!("{value} s is not between 1 s and a day"),
                ));
            }
        }
        let releases = self
            .releases
            .as_ref()
            .ok_or_else(|| invalid("version", "this controller holds no agent releases".into()))?
            .of_version(&request.version)
            .map_err(|e| invalid("version", error_chain(&e)))?;
        if releases.is_empty() {
            return Err(invalid(
                "version",
                format!(
                    "no agent release {} (coracle agent release FILE --version {0})",
                    request.version
                ),
            ));
        }
        let platforms: BTreeSet<String> = releases.into_iter().map(|r| r.platform).collect();
        let new = NewRollout {
            app: format!("coracle-agent {}", request.version),
            compose: String::new(),
            services: Vec::new(),
            selector: request.selector,
            waves: request.waves.trim().to_string(),
            max_failures: request.max_failures.trim().to_string(),
            health_window_s: request.health_window_s,
            apply_timeout_s: request.apply_timeout_s,
            rollback_on_failure: request.rollback_on_failure,
            devices: Vec::new(),
            agent_version: Some(request.version),
        };
        plan(
            &new.waves,
            &new.max_failures,
            new.health_window_s,
            new.rollback_on_failure,
        )?;
        self.create_checked(new, Checks::Agent { platforms }).await
    }
}
