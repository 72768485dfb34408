//! Creating an agent rollout: the same waves, threshold, health window and rollback as an
//! app rollout, sending an agent release instead of an app. Every selected device must
//! run a platform the release has a build for.

use std::collections::BTreeSet;

use super::control::Checks;
use super::driver::Rollouts;
use super::pace::RolloutPace;
use super::RolloutError;
use crate::api::error::error_chain;
use crate::store::RolloutRecord;

/// An agent rollout to create.
#[derive(Debug, Clone)]
pub struct CreateAgentRollout {
    pub version: String,
    pub pace: RolloutPace,
}

impl Rollouts {
    /// Checks and stores an agent rollout; its first wave starts at once.
    pub async fn create_agent(
        &self,
        request: CreateAgentRollout,
    ) -> Result<RolloutRecord, RolloutError> {
        request.pace.check()?;
        let invalid = |field, message| RolloutError::Invalid { field, message };
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
        let app = format!("coracle-agent {}", request.version);
        let new = request
            .pace
            .into_new(app, String::new(), Vec::new(), Some(request.version));
        self.create_checked(new, Checks::Agent { platforms }).await
    }
}
