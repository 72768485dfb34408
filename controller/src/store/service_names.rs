//! Names for the services a health sample's containers index. A sample counts the services
//! of the device's committed generation by position (names cost bytes on every interval);
//! the controller knows them from the desired state it sent for that generation or, for a
//! generation the device went back to, from the device's own report.

use super::tx::Tx;
use super::{params, Store, StoreError};
use coracle_proto::{DesiredState, DeviceId, Generation, ReportedState, Signed, UpdateStatus};

impl Store {
    /// The service names of `device`'s generation `generation`, in order; empty when the
    /// controller no longer knows them (then the samples keep bare indexes).
    pub fn service_names(
        &self,
        device: &DeviceId,
        generation: Generation,
    ) -> Result<Vec<String>, StoreError> {
        self.transaction(|tx| service_names_in(tx, device, generation))
    }
}

/// [`Store::service_names`] inside a transaction.
pub(super) fn service_names_in(
    tx: &mut Tx<'_>,
    device: &DeviceId,
    generation: Generation,
) -> Result<Vec<String>, StoreError> {
    if generation == Generation(0) {
        return Ok(Vec::new());
    }
    let signed: Option<Vec<u8>> = tx.query_opt(
        "read desired state for service names",
        "SELECT signed FROM desired WHERE device = ?1 AND generation = ?2",
        params![device.as_str(), generation.0 as i64],
        |r| r.get(0),
    )?;
    // Our own stored state: its signature was made here, so it is only decoded.
    let desired = signed
        .and_then(|body| coracle_proto::decode::<Signed<DesiredState>>(&body).ok())
        .and_then(|signed| DesiredState::decode(&signed.payload).ok());
    if let Some(desired) = desired {
        return Ok(names(desired.services.iter().map(|s| &s.name)));
    }
    let report: Option<Vec<u8>> = tx.query_opt(
        "read reported state for service names",
        "SELECT body FROM reported WHERE device = ?1",
        params![device.as_str()],
        |r| r.get(0),
    )?;
    // An unreadable report only costs the names.
    Ok(report
        .and_then(|body| serde_json::from_slice::<ReportedState>(&body).ok())
        .filter(|r| reports_committed_services(r, generation))
        .map(|r| names(r.services.iter().map(|s| &s.name)))
        .unwrap_or_default())
}

/// A report lists the committed generation's services when that generation is `applied`
/// and nothing newer is being switched to (the report then lists the new one's).
fn reports_committed_services(report: &ReportedState, generation: Generation) -> bool {
    report.applied == generation
        && !matches!(
            report.update,
            UpdateStatus::Applying { .. } | UpdateStatus::Verifying { .. }
        )
}

fn names<'a>(it: impl Iterator<Item = &'a coracle_proto::ServiceName>) -> Vec<String> {
    it.map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends::store_tests;
    use coracle_proto::{samples, SigningKey};

    store_tests! {
        fn names_come_from_the_desired_state_of_that_generation(store) {
            let id = store.add_test_device("pi-1");
            let mut desired = samples::desired_with_services(2);
            desired.device = id.clone();
            let key = SigningKey::from_bytes(&[3; 32]);
            let signed = coracle_proto::encode(&Signed::sign(&desired, &key));
            store.put_desired(&id, desired.generation, &signed).unwrap();
            let expected: Vec<String> = desired
                .services
                .iter()
                .map(|s| s.name.to_string())
                .collect();
            assert_eq!(
                store.service_names(&id, desired.generation).unwrap(),
                expected
            );
            assert!(store
                .service_names(&id, Generation(desired.generation.0 + 1))
                .unwrap()
                .is_empty());
            assert!(store.service_names(&id, Generation(0)).unwrap().is_empty());
        }
    }

    store_tests! {
        fn a_generation_the_device_went_back_to_is_named_from_its_report(store) {
            let id = store.add_test_device("pi-1");
            let mut report = samples::reported_state(3);
            report.device = id.clone();
            report.update = UpdateStatus::RolledBack {
                generation: Generation(report.applied.0 + 1),
                reason: "unhealthy".into(),
            };
            store.put_reported(&report).unwrap();
            let expected: Vec<String> = report.services.iter().map(|s| s.name.to_string()).collect();
            assert_eq!(store.service_names(&id, report.applied).unwrap(), expected);

            // While switching, the report lists the new generation's services: no names.
            report.update = UpdateStatus::Applying {
                generation: Generation(report.applied.0 + 1),
            };
            store.put_reported(&report).unwrap();
            assert!(store.service_names(&id, report.applied).unwrap().is_empty());
        }
    }
}
