//! Which controller drives each rollout when several share one database: a lease per rollout,
//! held by one controller and renewed on each of its passes. Another controller takes it only
//! once it has expired (its holder died or lost the database), so a rollout is driven by
//! exactly one controller at a time and by another within one lease of its driver's death.
//!
//! Expiry is read on the controllers' clocks: replicas are expected to run NTP; a skew of
//! `s` moves the takeover by `s`, never to two drivers at once while the holder renews.

use std::time::Duration;

use super::super::{params, Store, StoreError};

/// Migration 13: the leases, and a revision per rollout so that a write based on an old read
/// (another controller changed the rollout meanwhile) is refused instead of undoing it.
pub const MIGRATION_LEASES: &str = r#"
CREATE TABLE rollout_leases (
    rollout INTEGER PRIMARY KEY REFERENCES rollouts(id) ON DELETE CASCADE,
    holder TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
ALTER TABLE rollouts ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
"#;

/// Who holds a rollout's lease, and until when (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutLease {
    pub holder: String,
    pub expires_ms: i64,
}

/// Milliseconds since the Unix epoch on this controller's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Takes or renews `holder`'s lease on `rollout` for `ttl` from now. `false` when another
    /// holder's lease has not expired yet (it drives the rollout).
    pub fn claim_rollout(
        &self,
        rollout: i64,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let expires = now.saturating_add(ttl.as_millis() as i64);
        // One statement: the insert, or the update only where the lease is ours or expired;
        // a row comes back only when the lease is now ours.
        let claimed = self.transaction(|tx| {
            tx.query(
                "claim rollout lease",
                "INSERT INTO rollout_leases (rollout, holder, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (rollout) DO UPDATE SET holder = excluded.holder,
                   expires_ms = excluded.expires_ms
                 WHERE rollout_leases.holder = excluded.holder OR rollout_leases.expires_ms <= ?4
                 RETURNING holder",
                params![rollout, holder, expires, now],
                |r| r.get::<String>(0),
            )
        })?;
        Ok(!claimed.is_empty())
    }

    /// Gives up every lease `holder` has (a controller stopping), so another controller
    /// takes its rollouts over at once rather than after the lease runs out.
    pub fn release_rollouts(&self, holder: &str) -> Result<u64, StoreError> {
        self.transaction(|tx| {
            tx.execute(
                "release rollout leases",
                "DELETE FROM rollout_leases WHERE holder = ?1",
                params![holder],
            )
        })
    }

    /// The lease on `rollout`, if any controller took one.
    pub fn rollout_lease(&self, rollout: i64) -> Result<Option<RolloutLease>, StoreError> {
        self.transaction(|tx| {
            tx.query_opt(
                "read rollout lease",
                "SELECT holder, expires_ms FROM rollout_leases WHERE rollout = ?1",
                params![rollout],
                |r| {
                    Ok(RolloutLease {
                        holder: r.get(0)?,
                        expires_ms: r.get(1)?,
                    })
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NewRollout, RolloutPace, RolloutPhase, Selector};
    use super::*;
    use crate::store::test_backends::store_tests;

    fn one_rollout(store: &Store) -> i64 {
        let device = store.add_test_device("pi-1");
        store
            .create_rollout(&NewRollout {
                app: "web".into(),
                compose: "services: {}".into(),
                services: Vec::new(),
                pace: RolloutPace {
                    selector: Selector::Devices(vec![device.clone()]),
                    waves: "100%".into(),
                    max_failures: "0".into(),
                    health_window_s: 5,
                    apply_timeout_s: 30,
                    rollback_on_failure: false,
                },
                devices: vec![device],
                agent_version: None,
            })
            .unwrap()
    }

    store_tests! {
        fn one_controller_holds_a_rollout_until_its_lease_expires_or_is_released(store) {
            let id = one_rollout(&store);
            let long = Duration::from_secs(60);
            assert!(store.claim_rollout(id, "a", long).unwrap(), "a free rollout is claimed");
            assert!(store.claim_rollout(id, "a", long).unwrap(), "the holder renews");
            assert!(!store.claim_rollout(id, "b", long).unwrap(), "held: b stays off");
            let lease = store.rollout_lease(id).unwrap().unwrap();
            assert_eq!(lease.holder, "a");
            assert!(lease.expires_ms > now_ms() + 50_000, "{lease:?}");
            // a's lease runs out (it renews with no time left): b takes the rollout over.
            assert!(store.claim_rollout(id, "a", Duration::ZERO).unwrap());
            assert!(store.claim_rollout(id, "b", long).unwrap(), "an expired lease is taken");
            assert!(!store.claim_rollout(id, "a", long).unwrap(), "a lost it");
            // b stops and releases: a takes it at once.
            assert_eq!(store.release_rollouts("b").unwrap(), 1);
            assert!(store.claim_rollout(id, "a", long).unwrap());
        }

        fn a_write_based_on_an_old_read_is_refused(store) {
            let id = one_rollout(&store);
            let mut first = store.rollout(id).unwrap().unwrap();
            let mut second = store.rollout(id).unwrap().unwrap();
            first.phase = RolloutPhase::Paused;
            first.revision = store.save_rollout(&first, &[]).unwrap();
            second.phase = RolloutPhase::Aborted;
            let refused = store.save_rollout(&second, &[]).unwrap_err();
            assert!(
                matches!(refused, StoreError::RolloutChanged { id: r } if r == id),
                "{refused:?}"
            );
            let stored = store.rollout(id).unwrap().unwrap();
            assert_eq!((stored.phase, stored.revision), (RolloutPhase::Paused, first.revision));
            // Read again, the write goes through.
            let mut again = stored;
            again.phase = RolloutPhase::Aborted;
            store.save_rollout(&again, &[]).unwrap();
            assert_eq!(store.rollout(id).unwrap().unwrap().phase, RolloutPhase::Aborted);
        }
    }
}
