//! Desired states of many devices at once, for a rollout's wave: a statement per chunk of
//! devices, not several round trips per device (a wave of 9,000 devices on PostgreSQL took
//! a minute one device at a time). The one-device reads and writes are these with one id.

use std::collections::{HashMap, HashSet};

use coracle_proto::{DeviceId, Generation};

use super::backend::Value;
use super::devices::parse_id;
use super::id_lists::{placeholders, query_by_devices, CHUNK};
use super::{now_unix, Store, StoreError};

/// One device's next signed desired state, for [`Store::put_desired_many`].
#[derive(Debug, Clone, Copy)]
pub struct NewDesired<'a> {
    pub device: &'a DeviceId,
    pub generation: Generation,
    pub signed: &'a [u8],
}

fn generation(stored: i64) -> Generation {
    Generation(stored.max(0) as u64)
}

impl Store {
    /// Which of `devices` are enrolled.
    pub fn existing_devices(&self, devices: &[DeviceId]) -> Result<HashSet<DeviceId>, StoreError> {
        let rows: Vec<String> = self.transaction(|tx| {
            query_by_devices(
                tx,
                "read which devices exist",
                devices,
                |list| format!("SELECT id FROM devices WHERE id IN ({list})"),
                |r| r.get(0),
            )
        })?;
        rows.into_iter().map(parse_id).collect()
    }

    /// The latest desired generation of each of `devices` that has one; for a device
    /// enrolled again under a removed one's name, the removed one's last generation.
    pub fn desired_generations_of(
        &self,
        devices: &[DeviceId],
    ) -> Result<HashMap<DeviceId, Generation>, StoreError> {
        let rows: Vec<(String, i64)> = self.transaction(|tx| {
            query_by_devices(
                tx,
                "read desired generations",
                devices,
                |list| {
                    format!(
                        "SELECT device, max(generation) FROM (
                           SELECT device, generation FROM desired WHERE device IN ({list})
                           UNION ALL SELECT device, generation FROM retired_generations
                             WHERE device IN ({list})) AS known
                         GROUP BY device"
                    )
                },
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        rows.into_iter()
            .map(|(id, g)| Ok((parse_id(id)?, generation(g))))
            .collect()
    }

    /// The latest signed desired state (encoded) of each of `devices` that has one, with
    /// its generation.
    pub fn desired_signed_of(
        &self,
        devices: &[DeviceId],
    ) -> Result<HashMap<DeviceId, (Generation, Vec<u8>)>, StoreError> {
        let rows: Vec<(String, i64, Vec<u8>)> = self.transaction(|tx| {
            query_by_devices(
                tx,
                "read signed desired states",
                devices,
                |list| {
                    format!(
                        "SELECT device, generation, signed FROM desired WHERE device IN ({list})"
                    )
                },
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })?;
        rows.into_iter()
            .map(|(id, g, signed)| Ok((parse_id(id)?, (generation(g), signed))))
            .collect()
    }

    /// Stores signed desired states (the callers signed each with its generation), all in
    /// one transaction: every state is stored or none is.
    pub fn put_desired_many(&self, states: &[NewDesired<'_>]) -> Result<(), StoreError> {
        let now = now_unix();
        self.transaction(|tx| {
            for chunk in states.chunks(CHUNK) {
                let rows: Vec<String> = (0..chunk.len())
                    .map(|i| format!("({})", placeholders(4 * i + 1, 4)))
                    .collect();
                let mut values = Vec::with_capacity(4 * chunk.len());
                for state in chunk {
                    values.push(Value::from(state.device.as_str()));
                    values.push(Value::from(state.generation.0 as i64));
                    values.push(Value::from(state.signed));
                    values.push(Value::from(now));
                }
                tx.execute(
                    "store desired states",
                    &format!(
                        "INSERT INTO desired (device, generation, signed, updated_unix) VALUES {}
                         ON CONFLICT (device) DO UPDATE SET generation = excluded.generation,
                           signed = excluded.signed, updated_unix = excluded.updated_unix",
                        rows.join(", ")
                    ),
                    &values,
                )?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends::store_tests;

    store_tests! {
        fn many_devices_are_read_and_written_in_chunks(store) {
            // More devices than one statement takes, so the chunking is exercised.
            let ids: Vec<DeviceId> =
                (0..CHUNK + 7).map(|i| store.add_test_device(&format!("pi-{i}"))).collect();
            let unknown: DeviceId = "never-enrolled".parse().unwrap();
            let mut asked = ids.clone();
            asked.push(unknown.clone());
            let existing = store.existing_devices(&asked).unwrap();
            assert_eq!(existing.len(), ids.len());
            assert!(!existing.contains(&unknown));
            assert!(store.desired_generations_of(&asked).unwrap().is_empty());

            let bodies: Vec<Vec<u8>> = ids.iter().map(|d| d.as_str().as_bytes().to_vec()).collect();
            let states: Vec<NewDesired<'_>> = ids
                .iter()
                .zip(&bodies)
                .enumerate()
                .map(|(i, (device, body))| NewDesired {
                    device,
                    generation: Generation(i as u64 + 1),
                    signed: body,
                })
                .collect();
            store.put_desired_many(&states).unwrap();
            // A second write replaces the first (the upsert), for a few of them.
            let again = [NewDesired { device: &ids[3], generation: Generation(900), signed: b"new" }];
            store.put_desired_many(&again).unwrap();

            let generations = store.desired_generations_of(&asked).unwrap();
            let signed = store.desired_signed_of(&asked).unwrap();
            assert_eq!(generations.len(), ids.len());
            assert_eq!(signed.len(), ids.len());
            for (i, device) in ids.iter().enumerate() {
                let (want, body): (u64, &[u8]) =
                    if i == 3 { (900, b"new") } else { (i as u64 + 1, &bodies[i]) };
                assert_eq!(generations[device], Generation(want), "{device}");
                assert_eq!(signed[device], (Generation(want), body.to_vec()), "{device}");
                // The one-device reads agree.
                assert_eq!(store.desired_generation(device).unwrap(), Some(Generation(want)));
            }
        }
    }
}
