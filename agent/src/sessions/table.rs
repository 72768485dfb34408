//! `SessionTable`: which sessions run and where their input goes. Pure bookkeeping, no I/O:
//! the sessions task asks it what to do with each request.

use std::collections::HashMap;

use coracle_proto::session::MAX_SESSIONS_PER_DEVICE;
use coracle_proto::SessionInput;

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<T> {
    /// Start a session under this id (an old one with the same id was ended: `replaced`).
    Start { replaced: Option<T> },
    /// Refuse the open: the device runs its maximum already.
    Full,
    /// Hand the input to this session.
    Deliver(T),
    /// Input for a session that is not running (ended, or never opened): dropped.
    Unknown,
}

/// Sessions by id, each with its input handle `T` (a channel sender in the daemon).
#[derive(Debug)]
pub struct SessionTable<T> {
    running: HashMap<u32, T>,
    max: usize,
}

impl<T: Clone> Default for SessionTable<T> {
    fn default() -> Self {
        Self::new(MAX_SESSIONS_PER_DEVICE)
    }
}

impl<T: Clone> SessionTable<T> {
    pub fn new(max: usize) -> Self {
        Self {
            running: HashMap::new(),
            max,
        }
    }

    /// Routes `input` for session `id`. An `Open` for an id still running ends the old
    /// session first (a restarted controller reuses ids).
    pub fn route(&mut self, id: u32, input: &SessionInput) -> Route<T> {
        match input {
            SessionInput::Open(_) => {
                let replaced = self.running.remove(&id);
                if replaced.is_none() && self.running.len() >= self.max {
                    return Route::Full;
                }
                Route::Start { replaced }
            }
            _ => match self.running.get(&id) {
                Some(handle) => Route::Deliver(handle.clone()),
                None => Route::Unknown,
            },
        }
    }

    /// Records a started session.
    pub fn insert(&mut self, id: u32, handle: T) {
        self.running.insert(id, handle);
    }

    /// Forgets a session that ended.
    pub fn remove(&mut self, id: u32) {
        self.running.remove(&id);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::SessionKind;

    fn open() -> SessionInput {
        SessionInput::Open(SessionKind::Exec {
            service: "web".to_string().try_into().unwrap(),
            argv: vec!["sh".into()],
            tty: None,
        })
    }

    #[test]
    fn opens_up_to_the_limit_then_refuses() {
        let mut table = SessionTable::new(2);
        for id in [1, 2] {
            assert_eq!(table.route(id, &open()), Route::Start { replaced: None });
            table.insert(id, id * 10);
        }
        assert_eq!(table.route(3, &open()), Route::Full);
        table.remove(1);
        assert_eq!(table.route(3, &open()), Route::Start { replaced: None });
    }

    #[test]
    fn input_goes_to_its_session_and_unknown_ids_are_dropped() {
        let mut table = SessionTable::new(2);
        table.insert(7, "seven");
        assert_eq!(
            table.route(7, &SessionInput::Keepalive),
            Route::Deliver("seven")
        );
        assert_eq!(
            table.route(8, &SessionInput::Stdin(vec![1])),
            Route::Unknown
        );
    }

    #[test]
    fn reopening_a_running_id_replaces_it_even_when_full() {
        let mut table = SessionTable::new(1);
        table.insert(4, "old");
        assert_eq!(
            table.route(4, &open()),
            Route::Start {
                replaced: Some("old")
            }
        );
        assert!(table.is_empty());
    }
}
