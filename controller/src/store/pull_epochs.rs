//! Each device's pull token epoch (`registry::device_tokens`): the newest one it confirmed
//! and when, and which online devices are due the next (`pull_token_rotation`).

use super::{params, Store, StoreError};
use coracle_proto::{DeviceId, HeldCredentials, ReportedState};

/// An online device due a new pull token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullTokenDue {
    pub device: DeviceId,
    /// The password hash of its enrolment, which its tokens are bound to.
    pub enrolment_sha256: [u8; 32],
    /// The newest epoch it confirmed (the next one to send is one more).
    pub confirmed: u32,
    /// Hex of its X25519 sealing key, as it reported it (empty: none reported yet).
    pub sealing_key: String,
}

/// What a device holds, as far as the controller knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredentials {
    pub device: DeviceId,
    pub online: bool,
    /// The newest pull token epoch it confirmed.
    pub confirmed_pull_epoch: u32,
    /// What it last reported holding (`None`: no report, or from an agent before these were
    /// reported).
    pub held: Option<HeldCredentials>,
}

impl Store {
    /// Every device's credentials, by id.
    pub fn device_credentials_held(&self) -> Result<Vec<DeviceCredentials>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "list device credentials",
                "SELECT d.id, d.online, d.pull_epoch, r.body
                 FROM devices d LEFT JOIN reported r ON r.device = d.id ORDER BY d.id",
                &[],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<bool>(1)?,
                        r.get::<i64>(2)?,
                        r.get::<Option<Vec<u8>>>(3)?,
                    ))
                },
            )
        })?;
        rows.into_iter()
            .map(|(id, online, confirmed, body)| {
                let corrupt = |what: &str| StoreError::Corrupt {
                    device: id.clone(),
                    what: what.into(),
                };
                let held = body
                    .and_then(|b| serde_json::from_slice::<ReportedState>(&b).ok())
                    .map(|r| r.credentials)
                    .filter(|c| c.deployment_key.is_some());
                Ok(DeviceCredentials {
                    device: id.parse().map_err(|_| corrupt("device id is invalid"))?,
                    online,
                    confirmed_pull_epoch: u32::try_from(confirmed)
                        .map_err(|_| corrupt("pull epoch out of range"))?,
                    held,
                })
            })
            .collect()
    }

    /// Online devices whose newest token (or, never rotated, whose enrolment) is at least
    /// `period_s` old, and those reporting a token older than any live one (an agent that
    /// lost the token it kept).
    pub fn pull_tokens_due(
        &self,
        now_unix: i64,
        period_s: i64,
    ) -> Result<Vec<PullTokenDue>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "list pull tokens due",
                "SELECT d.id, COALESCE(d.pull_sha256, d.password_sha256), d.pull_epoch,
                        COALESCE(d.pull_rotated_unix, d.created_unix), r.body
                 FROM devices d LEFT JOIN reported r ON r.device = d.id
                 WHERE d.online = 1 ORDER BY d.id",
                &[],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<Vec<u8>>(1)?,
                        r.get::<i64>(2)?,
                        r.get::<i64>(3)?,
                        r.get::<Option<Vec<u8>>>(4)?,
                    ))
                },
            )
        })?;
        let mut due = Vec::new();
        for (id, hash, confirmed, since, body) in rows {
            let corrupt = |what: &str| StoreError::Corrupt {
                device: id.clone(),
                what: what.into(),
            };
            let confirmed =
                u32::try_from(confirmed).map_err(|_| corrupt("pull epoch out of range"))?;
            // A report that does not parse is treated as none: the schedule still runs.
            let reported: Option<ReportedState> =
                body.and_then(|b| serde_json::from_slice(&b).ok());
            let held = reported.as_ref().map(|r| r.credentials.pull_token_epoch);
            let lost = held.is_some_and(|held| held.saturating_add(1) < confirmed);
            if since.saturating_add(period_s) > now_unix && !lost {
                continue;
            }
            due.push(PullTokenDue {
                device: id.parse().map_err(|_| corrupt("device id is invalid"))?,
                enrolment_sha256: hash
                    .try_into()
                    .map_err(|_| corrupt("password hash is not 32 bytes"))?,
                confirmed,
                sealing_key: reported.map(|r| r.sealing_key).unwrap_or_default(),
            });
        }
        Ok(due)
    }

    /// Records that `device` confirmed its token of `epoch` (never moving back), which
    /// revokes its tokens older than `epoch - 1`.
    pub fn confirm_pull_epoch(
        &self,
        device: &DeviceId,
        epoch: u32,
        now_unix: i64,
    ) -> Result<(), StoreError> {
        let changed = self.transaction(|tx| {
            tx.execute(
                "store confirmed pull epoch",
                "UPDATE devices SET pull_epoch = CASE WHEN pull_epoch > ?2 THEN pull_epoch
                   ELSE ?2 END, pull_rotated_unix = ?3
                 WHERE id = ?1",
                params![device.as_str(), i64::from(epoch), now_unix],
            )
        })?;
        if changed == 0 {
            return Err(StoreError::DeviceNotFound {
                device: device.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends::store_tests;

    fn enrolled(store: &Store, name: &str) -> DeviceId {
        let id: DeviceId = name.parse().unwrap();
        store
            .add_device(&crate::store::NewDevice {
                id: id.clone(),
                tags: Default::default(),
                password_sha256: [4; 32],
            })
            .unwrap();
        id
    }

    fn report(store: &Store, id: &DeviceId, held: u32) {
        let mut reported = coracle_proto::samples::reported_state(0);
        reported.device = id.clone();
        reported.sealing_key = "ab".repeat(32);
        reported.credentials.pull_token_epoch = held;
        store.put_reported(&reported).unwrap();
    }

    store_tests! {
        fn online_devices_are_due_once_a_period_and_when_they_lost_their_token(store) {
            let (a, b) = (enrolled(&store, "a"), enrolled(&store, "b"));
            let created = store.device(&a).unwrap().created_unix;
            store.set_presence(&a, true).unwrap();
            // Offline devices are never due; an online one is once its enrolment is a period old.
            assert!(store.pull_tokens_due(created + 10, 100).unwrap().is_empty());
            let due = store.pull_tokens_due(created + 100, 100).unwrap();
            assert_eq!(due.len(), 1);
            assert_eq!((&due[0].device, due[0].confirmed), (&a, 0));
            assert_eq!(due[0].enrolment_sha256, [4; 32]);

            store.confirm_pull_epoch(&a, 1, created + 100).unwrap();
            assert_eq!(store.device_grant(&a).unwrap().unwrap().pull_epoch, 1);
            assert!(store
                .pull_tokens_due(created + 150, 100)
                .unwrap()
                .is_empty());
            store.confirm_pull_epoch(&a, 2, created + 150).unwrap();
            // A late confirmation of an older epoch never moves it back.
            store.confirm_pull_epoch(&a, 1, created + 160).unwrap();
            assert_eq!(store.device_grant(&a).unwrap().unwrap().pull_epoch, 2);
            // Reporting the live previous token is fine; one older than that is lost.
            report(&store, &a, 1);
            assert!(store
                .pull_tokens_due(created + 170, 100)
                .unwrap()
                .is_empty());
            report(&store, &a, 0);
            let due = store.pull_tokens_due(created + 170, 100).unwrap();
            assert_eq!((due[0].confirmed, due[0].sealing_key.len()), (2, 64));
            assert!(store
                .confirm_pull_epoch(&"gone".parse().unwrap(), 1, 0)
                .is_err());
            let _ = b;
        }
    }
}
