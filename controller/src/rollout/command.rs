//! The operator's commands on a rollout as one `match` on (command, phase): every allowed
//! move is listed; anything else is refused with both names.

use serde::{Deserialize, Serialize};

use crate::store::RolloutPhase;

/// What an operator can ask of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutCommand {
    Pause,
    Resume,
    Abort,
    Rollback,
}

impl RolloutCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
            Self::Rollback => "rollback",
        }
    }

    /// From the last segment of `POST /rollouts/{id}/{command}`.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pause, Self::Resume, Self::Abort, Self::Rollback]
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

/// A command the rollout's phase does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a rollout that is {}: {hint}", command.as_str(), phase.as_str().replace('_', " "))]
pub struct TransitionRefused {
    pub command: RolloutCommand,
    pub phase: RolloutPhase,
    pub hint: &'static str,
}

/// The phase `command` leads to from `phase`.
pub fn transition(
    command: RolloutCommand,
    phase: RolloutPhase,
) -> Result<RolloutPhase, TransitionRefused> {
    use RolloutCommand as C;
    use RolloutPhase as P;
    let refuse = |hint| TransitionRefused {
        command,
        phase,
        hint,
    };
    match (command, phase) {
        (C::Pause, P::Running) => Ok(P::Paused),
        (C::Pause, _) => Err(refuse("only a running rollout can be paused")),
        (C::Resume, P::Paused) => Ok(P::Running),
        (C::Resume, _) => Err(refuse("only a paused rollout can be resumed")),
        (C::Abort, P::Running | P::Paused) => Ok(P::Aborted),
        (C::Abort, _) => Err(refuse("only a running or paused rollout can be aborted")),
        // A completed or aborted rollout can still be undone on the devices it reached.
        (C::Rollback, P::Running | P::Paused | P::Completed | P::Aborted) => Ok(P::RolledBack),
        (C::Rollback, P::RolledBack) => Err(refuse("it was already rolled back")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RolloutCommand as C;
    use RolloutPhase as P;

    #[test]
    fn transitions_table() {
        let table = [
            (C::Pause, P::Running, Some(P::Paused)),
            (C::Pause, P::Paused, None),
            (C::Pause, P::Completed, None),
            (C::Resume, P::Paused, Some(P::Running)),
            (C::Resume, P::Running, None),
            (C::Resume, P::Completed, None),
            (C::Abort, P::Running, Some(P::Aborted)),
            (C::Abort, P::Paused, Some(P::Aborted)),
            (C::Abort, P::Aborted, None),
            (C::Rollback, P::Paused, Some(P::RolledBack)),
            (C::Rollback, P::Completed, Some(P::RolledBack)),
            (C::Rollback, P::RolledBack, None),
        ];
        for (command, phase, expected) in table {
            assert_eq!(
                transition(command, phase).ok(),
                expected,
                "{command:?} from {phase:?}"
            );
        }
        let err = transition(C::Resume, P::Completed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot resume a rollout that is completed: only a paused rollout can be resumed"
        );
    }
}
