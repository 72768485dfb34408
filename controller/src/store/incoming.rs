//! Device messages stored many per transaction. Each message alone cost one to three
//! transactions (a commit, so a WAL flush, each): one controller on PostgreSQL took about
//! 500 health samples a second, less than 10,000 devices send when the other replica dies.

use coracle_proto::{DeviceId, Event, HealthSample, ReportedState};

use super::devices::device_exists_in;
use super::presence::mark_heard_in;
use super::telemetry::{
    add_event_in, add_health_in, event_body, put_reported_in, reported_body, set_presence_in,
};
use super::tx::Tx;
use super::{Store, StoreError};

/// One decoded device message to store.
#[derive(Debug, Clone, Copy)]
pub enum Incoming<'a> {
    Reported(&'a ReportedState),
    Health {
        device: &'a DeviceId,
        at_unix: i64,
        sample: &'a HealthSample,
    },
    Event {
        device: &'a DeviceId,
        event: &'a Event,
    },
    Presence {
        device: &'a DeviceId,
        online: bool,
    },
    /// Nothing to store, only whether the device is enrolled (pull progress is kept in
    /// memory).
    Exists(&'a DeviceId),
}

/// What storing one [`Incoming`] did; `known` is false for a device that is not enrolled
/// (a removed device may still have messages in flight), and then nothing was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Reported {
        known: bool,
    },
    /// `revived`: the device had been marked offline and is online again.
    Health {
        known: bool,
        revived: bool,
    },
    /// The event's id.
    Event(Option<i64>),
    Presence {
        known: bool,
    },
    Exists(bool),
}

impl Store {
    /// Stores `messages` in one transaction, in order: all of them or, on an error, none.
    pub fn store_incoming(&self, messages: &[Incoming<'_>]) -> Result<Vec<Stored>, StoreError> {
        // Serialized outside the transaction, which a lost race runs again.
        let bodies: Vec<Option<Vec<u8>>> =
            messages.iter().map(body_of).collect::<Result<_, _>>()?;
        self.transaction(|tx| {
            messages
                .iter()
                .zip(&bodies)
                .map(|(message, body)| store_in(tx, *message, body.as_deref()))
                .collect()
        })
    }

    /// Stores one message in its own transaction.
    pub fn store_one(&self, message: Incoming<'_>) -> Result<Stored, StoreError> {
        let body = body_of(&message)?;
        self.transaction(|tx| store_in(tx, message, body.as_deref()))
    }
}

/// The stored form of a message whose row keeps its body as JSON.
fn body_of(message: &Incoming<'_>) -> Result<Option<Vec<u8>>, StoreError> {
    match message {
        Incoming::Reported(state) => reported_body(state).map(Some),
        Incoming::Event { device, event } => event_body(device, event).map(Some),
        _ => Ok(None),
    }
}

fn store_in(
    tx: &mut Tx<'_>,
    message: Incoming<'_>,
    body: Option<&[u8]>,
) -> Result<Stored, StoreError> {
    let body = body.unwrap_or_default();
    Ok(match message {
        Incoming::Reported(state) => Stored::Reported {
            known: put_reported_in(tx, state, body)?,
        },
        Incoming::Health {
            device,
            at_unix,
            sample,
        } => {
            let known = add_health_in(tx, device, at_unix, sample)?;
            // Health samples are the heartbeat: one revives a device the silence sweep
            // marked offline.
            let revived = known && mark_heard_in(tx, device)?;
            Stored::Health { known, revived }
        }
        Incoming::Event { device, event } => Stored::Event(add_event_in(tx, device, event, body)?),
        Incoming::Presence { device, online } => Stored::Presence {
            known: set_presence_in(tx, device, online)?,
        },
        Incoming::Exists(device) => Stored::Exists(device_exists_in(tx, device)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::now_unix;
    use crate::store::test_backends::store_tests;
    use coracle_proto::samples;

    store_tests! {
        fn a_batch_stores_every_kind_and_tells_unknown_devices_apart(store) {
            let id = store.add_test_device("pi-1");
            let gone: DeviceId = "pi-removed".parse().unwrap();
            let mut report = samples::reported_state(1);
            report.device = id.clone();
            let sample = samples::health_sample();
            let event = samples::events()[0].clone();
            store.set_presence(&id, false).unwrap();
            let now = now_unix();
            let batch = [
                Incoming::Reported(&report),
                Incoming::Health { device: &id, at_unix: now, sample: &sample },
                Incoming::Health { device: &gone, at_unix: now, sample: &sample },
                Incoming::Event { device: &id, event: &event },
                Incoming::Event { device: &gone, event: &event },
                Incoming::Presence { device: &id, online: false },
                Incoming::Presence { device: &gone, online: true },
                Incoming::Exists(&id),
                Incoming::Exists(&gone),
            ];
            let stored = store.store_incoming(&batch).unwrap();
            assert_eq!(stored[0], Stored::Reported { known: true });
            // Offline before the sample: the sample revives it.
            assert_eq!(stored[1], Stored::Health { known: true, revived: true });
            assert_eq!(stored[2], Stored::Health { known: false, revived: false });
            assert!(matches!(stored[3], Stored::Event(Some(_))));
            assert_eq!(stored[4], Stored::Event(None));
            assert_eq!(stored[5], Stored::Presence { known: true });
            assert_eq!(stored[6], Stored::Presence { known: false });
            assert_eq!(stored[7], Stored::Exists(true));
            assert_eq!(stored[8], Stored::Exists(false));
            // In order: the later presence message (offline) wins over the revival.
            assert!(!store.device(&id).unwrap().online);
            assert_eq!(store.reported(&id).unwrap(), Some(report));
            assert_eq!(store.health_history(&id).unwrap().len(), 1);
            assert_eq!(store.events(&id, 10).unwrap().len(), 1);
            assert!(store.reported(&gone).unwrap().is_none());
        }
    }
}
