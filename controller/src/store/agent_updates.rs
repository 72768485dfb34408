//! The agent update each device was last sent (`AgentUpdate`, unsigned: it is signed with
//! the current deployment key whenever it is published, so a key rotation needs nothing
//! here), with the sequence that grows per device.

use super::{params, Store, StoreError};
use coracle_proto::{AgentUpdate, DeviceId};

/// Migration: the table, and the agent columns of rollouts (`agent_version`: the release an
/// agent rollout sends; `previous_agent_version`: what each device ran before it).
pub const MIGRATION: &str = r#"
CREATE TABLE agent_updates (
    device TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,
    body BLOB NOT NULL
);
ALTER TABLE rollouts ADD COLUMN agent_version TEXT;
ALTER TABLE rollout_devices ADD COLUMN previous_agent_version TEXT;
"#;

impl Store {
    /// Stores the next update for `device`, built by `make` from its sequence (one more than
    /// the last one sent), and returns it. `make` may run more than once (PostgreSQL runs a
    /// transaction again when another controller raced it); the update stored is the last.
    pub fn next_agent_update(
        &self,
        device: &DeviceId,
        make: impl Fn(u64) -> AgentUpdate,
    ) -> Result<AgentUpdate, StoreError> {
        self.transaction(|tx| {
            let last: Option<i64> = tx.query_opt(
                "read agent update sequence",
                "SELECT sequence FROM agent_updates WHERE device = ?1",
                params![device.as_str()],
                |r| r.get(0),
            )?;
            let update = make(last.map_or(1, |s| s.max(0) as u64 + 1));
            tx.execute(
                "store agent update",
                "INSERT INTO agent_updates (device, sequence, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(device) DO UPDATE SET sequence = ?2, body = ?3",
                params![
                    device.as_str(),
                    update.sequence as i64,
                    coracle_proto::encode(&update)
                ],
            )?;
            Ok(update)
        })
    }

    /// Every stored update (to publish again after a broker restart).
    pub fn agent_updates(&self) -> Result<Vec<AgentUpdate>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "list agent updates",
                "SELECT device, body FROM agent_updates ORDER BY device",
                &[],
                |r| Ok((r.get::<String>(0)?, r.get::<Vec<u8>>(1)?)),
            )
        })?;
        rows.into_iter()
            .map(|(device, body)| {
                coracle_proto::decode(&body).map_err(|_| StoreError::Corrupt {
                    device,
                    what: "agent update".into(),
                })
            })
            .collect()
    }

    /// Forgets a removed device's update.
    pub fn delete_agent_update(&self, device: &DeviceId) -> Result<(), StoreError> {
        self.transaction(|tx| {
            tx.execute(
                "delete agent update",
                "DELETE FROM agent_updates WHERE device = ?1",
                params![device.as_str()],
            )
            .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends::store_tests;
    use coracle_proto::Digest;

    fn update(device: &DeviceId, sequence: u64) -> AgentUpdate {
        AgentUpdate {
            device: device.clone(),
            sequence,
            version: "0.2.0".into(),
            platform: "linux/arm64".into(),
            image: format!("coracle-agent@{}", Digest::of(b"m"))
                .parse()
                .unwrap(),
            binary: Digest::of(b"b"),
        }
    }

    store_tests! {
        fn sequences_grow_per_device_updates_are_kept_and_open_the_release_repository(store) {
            let id = store.add_test_device("pi-1");
            let grant = |store: &Store| store.device_grant(&id).unwrap().unwrap().repositories;
            assert!(!grant(&store).contains("coracle-agent"));
            let first = store.next_agent_update(&id, |s| update(&id, s)).unwrap();
            // Sent an update, the device may read the agent releases.
            assert!(grant(&store).contains("coracle-agent"));
            let second = store.next_agent_update(&id, |s| update(&id, s)).unwrap();
            assert_eq!((first.sequence, second.sequence), (1, 2));
            assert_eq!(store.agent_updates().unwrap(), vec![second]);
            store.delete_agent_update(&id).unwrap();
            assert!(store.agent_updates().unwrap().is_empty());
        }
    }

    /// Concurrent calls each get their own sequence: SQLite through its one connection,
    /// PostgreSQL (several connections) by running the loser of a race again.
    fn concurrent_updates_get_distinct_sequences(store: &Store, others: &[&Store]) {
        let id: DeviceId = "pi-1".parse().unwrap();
        let stores: Vec<&Store> = std::iter::once(store)
            .chain(others.iter().copied())
            .collect();
        let sequences = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let (store, id, sequences) = (stores[thread % stores.len()], &id, &sequences);
                scope.spawn(move || {
                    for _ in 0..10 {
                        let sent = store.next_agent_update(id, |s| update(id, s)).unwrap();
                        sequences.lock().unwrap().push(sent.sequence);
                    }
                });
            }
        });
        let mut sequences = sequences.into_inner().unwrap();
        sequences.sort();
        assert_eq!(sequences, (1..=40).collect::<Vec<u64>>());
    }

    store_tests! {
        fn concurrent_calls_get_distinct_sequences(store) {
            store.add_test_device("pi-1");
            concurrent_updates_get_distinct_sequences(&store, &[]);
        }
    }

    #[test]
    fn two_controllers_on_one_postgresql_database_get_distinct_sequences() {
        let Some(url) = crate::store::test_backends::postgres_url() else {
            return;
        };
        let (first, second) = (Store::connect(&url).unwrap(), Store::connect(&url).unwrap());
        first.add_test_device("pi-1");
        concurrent_updates_get_distinct_sequences(&first, &[&second]);
    }
}
