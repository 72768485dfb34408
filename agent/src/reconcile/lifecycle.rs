//! The allowed container lifecycle moves, in one `match`. The planner only emits moves this
//! table allows, and the supervisor checks each action against it before touching the
//! runtime; any other pair is an error naming both.

use super::observed::Phase;

/// What the agent does to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Start,
    /// Stop then start; the container keeps its identity.
    Restart,
    Stop,
    Remove,
    /// The runtime saw the process end (not an agent action, but a move all the same).
    Exit,
}

/// A phase without its data, plus `Absent` (no container), for the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    Absent,
    Created,
    Running,
    Exited,
    Stopped,
}

impl From<Option<&Phase>> for PhaseKind {
    fn from(phase: Option<&Phase>) -> Self {
        match phase {
            None => PhaseKind::Absent,
            Some(Phase::Created) => PhaseKind::Created,
            Some(Phase::Running { .. }) => PhaseKind::Running,
            Some(Phase::Exited { .. }) => PhaseKind::Exited,
            Some(Phase::Stopped) => PhaseKind::Stopped,
        }
    }
}

/// A move the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {verb:?} a container that is {from:?}")]
pub struct LifecycleError {
    pub from: PhaseKind,
    pub verb: Verb,
}

/// Where `verb` takes a container in phase `from`. Idempotent moves (start a running
/// container, stop a stopped one, remove an absent one) are allowed and change nothing.
pub fn transition(from: PhaseKind, verb: Verb) -> Result<PhaseKind, LifecycleError> {
    use PhaseKind as P;
    use Verb as V;
    match (from, verb) {
        (P::Absent, V::Create) => Ok(P::Created),
        (P::Created | P::Exited | P::Stopped | P::Running, V::Start) => Ok(P::Running),
        (P::Created | P::Exited | P::Stopped | P::Running, V::Restart) => Ok(P::Running),
        (P::Running, V::Stop) => Ok(P::Stopped),
        (P::Created | P::Stopped | P::Exited, V::Stop) => Ok(from),
        (P::Running, V::Exit) => Ok(P::Exited),
        (P::Created | P::Exited | P::Stopped | P::Absent, V::Remove) => Ok(P::Absent),
        (P::Created | P::Running | P::Exited | P::Stopped, V::Create)
        | (P::Absent, V::Start | V::Restart | V::Stop | V::Exit)
        | (P::Running, V::Remove)
        | (P::Created | P::Exited | P::Stopped, V::Exit) => Err(LifecycleError { from, verb }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PhaseKind as P;
    use Verb as V;

    #[test]
    fn transition_table() {
        let table = [
            (P::Absent, V::Create, Some(P::Created)),
            (P::Created, V::Start, Some(P::Running)),
            (P::Running, V::Start, Some(P::Running)),
            (P::Exited, V::Start, Some(P::Running)),
            (P::Stopped, V::Start, Some(P::Running)),
            (P::Running, V::Stop, Some(P::Stopped)),
            (P::Running, V::Restart, Some(P::Running)),
            (P::Absent, V::Restart, None),
            (P::Exited, V::Stop, Some(P::Exited)),
            (P::Running, V::Exit, Some(P::Exited)),
            (P::Stopped, V::Remove, Some(P::Absent)),
            (P::Absent, V::Remove, Some(P::Absent)),
            (P::Running, V::Remove, None),
            (P::Created, V::Create, None),
            (P::Absent, V::Start, None),
            (P::Stopped, V::Exit, None),
        ];
        for (from, verb, want) in table {
            assert_eq!(transition(from, verb).ok(), want, "{from:?} + {verb:?}");
        }
    }

    #[test]
    fn refused_move_names_both_sides() {
        let err = transition(P::Running, V::Remove).unwrap_err();
        assert_eq!(err.to_string(), "cannot Remove a container that is Running");
    }
}
