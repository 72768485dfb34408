//! The CLI's exit codes, documented in `coracle --help` and the README: 0 ok, 1 error,
//! 2 usage (clap's), 3 not found, 4 conflict, 5 controller unreachable. A failure that has a
//! code of its own carries a [`Failure`] in its error chain; everything else is 1.

/// A failure a script may want to tell apart from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("not found")]
    NotFound,
    #[error("conflict")]
    Conflict,
    #[error("the controller is unreachable")]
    Unreachable,
}

impl Failure {
    pub fn code(self) -> u8 {
        match self {
            Failure::NotFound => 3,
            Failure::Conflict => 4,
            Failure::Unreachable => 5,
        }
    }

    /// The failure an HTTP status of the API means, if it has a code of its own.
    pub fn of_status(status: u16) -> Option<Self> {
        match status {
            404 => Some(Failure::NotFound),
            409 => Some(Failure::Conflict),
            _ => None,
        }
    }
}

/// An error whose message stands for itself, with the code it exits with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    pub failure: Failure,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The exit code for a failed command.
pub fn code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|cause| {
            cause
                .downcast_ref::<Coded>()
                .map(|coded| coded.failure)
                .or_else(|| cause.downcast_ref::<Failure>().copied())
        })
        .map_or(1, |failure| failure.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_failure_anywhere_in_the_chain_picks_the_code() {
        let plain = anyhow::anyhow!("boom");
        assert_eq!(code_of(&plain), 1);
        let missing = Err::<(), _>(Failure::NotFound)
            .context("show device pi-9")
            .unwrap_err();
        assert_eq!(code_of(&missing), 3);
        let conflict = anyhow::Error::new(Failure::Conflict).context("add device pi-1");
        assert_eq!(code_of(&conflict), 4);
        let down = anyhow::Error::new(Coded {
            failure: Failure::Unreachable,
            message: "list devices: cannot reach https://127.0.0.1:1".into(),
            source: None,
        })
        .context("while listing");
        assert_eq!(code_of(&down), 5);
        assert_eq!(Failure::of_status(404), Some(Failure::NotFound));
        assert_eq!(Failure::of_status(409), Some(Failure::Conflict));
        assert_eq!(Failure::of_status(500), None);
    }
}
