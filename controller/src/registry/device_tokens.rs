//! Each device's own pull credential for the registry. The token a bootstrap file carries is
//! `DEVICE:HEX`, HEX an HMAC-SHA256 under the pull key (`pull.key` in the data dir: random
//! on a new controller, the admin token of the time on one upgraded from when tokens were
//! keyed by it, so issued tokens stay valid; never changed by admin rotation) of the device
//! id and the hash of the device's broker password — so nothing per device is stored beyond what enrolment
//! already stores, `device rm` revokes it (no row, no token), and an enrolment of the same
//! name again gets a new one (a new password). What a valid token may read is the set of
//! repositories the device's latest desired state names (`DeviceGrant`), so a device cannot
//! read another device's images.

use std::collections::BTreeSet;
use std::sync::Arc;

use coracle_proto::DeviceId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the store knows that decides a device's registry access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGrant {
    /// The hash of the device's broker password (its current enrolment).
    pub password_sha256: [u8; 32],
    /// The repositories of the controller's registry its latest desired state names.
    pub repositories: BTreeSet<String>,
}

/// Looks up devices for the registry (implemented by the fleet store).
pub trait DeviceGrants: Send + Sync + std::fmt::Debug {
    /// The device's grant; `None` when it is not enrolled. An error is a failed lookup,
    /// which refuses the request rather than guessing.
    fn grant(&self, device: &DeviceId) -> Result<Option<DeviceGrant>, String>;
}

/// Issues and checks per-device pull tokens; cheap to clone.
#[derive(Clone)]
pub struct PullTokens {
    secret: Arc<str>,
}

impl std::fmt::Debug for PullTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullTokens(..)")
    }
}

impl PullTokens {
    /// Tokens keyed by the pull key, which never leaves the controller.
    pub fn new(pull_key: Arc<str>) -> Self {
        Self { secret: pull_key }
    }

    fn mac(&self, device: &DeviceId, password_sha256: &[u8; 32]) -> Hmac<Sha256> {
        // An HMAC key may have any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"coracle device pull token\0");
        mac.update(device.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(password_sha256);
        mac
    }

    /// The token for `device` as enrolled with this password hash: `DEVICE:HEX`.
    pub fn issue(&self, device: &DeviceId, password_sha256: &[u8; 32]) -> String {
        let tag = self.mac(device, password_sha256).finalize().into_bytes();
        format!("{device}:{}", hex::encode(tag))
    }

    /// Splits a presented token (bearer, or basic auth's `user:password` with the device id
    /// as user) into the device it names and its tag.
    pub fn parse(presented: &str) -> Option<(DeviceId, Vec<u8>)> {
        let (device, tag) = presented.rsplit_once(':')?;
        let tag = hex::decode(tag).ok().filter(|t| t.len() == 32)?;
        Some((device.parse().ok()?, tag))
    }

    /// Whether `tag` is the device's token for this enrolment (constant time).
    pub fn verify(&self, device: &DeviceId, password_sha256: &[u8; 32], tag: &[u8]) -> bool {
        self.mac(device, password_sha256).verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_device_and_bind_its_enrolment() {
        let tokens = PullTokens::new(Arc::from("admin-secret"));
        let device: DeviceId = "pi-1".parse().unwrap();
        let token = tokens.issue(&device, &[1; 32]);
        assert!(token.starts_with("pi-1:"), "{token}");
        let (named, tag) = PullTokens::parse(&token).unwrap();
        assert_eq!(named, device);
        assert!(tokens.verify(&device, &[1; 32], &tag));
        // Another enrolment (password), another device, another controller: refused.
        assert!(!tokens.verify(&device, &[2; 32], &tag));
        assert!(!tokens.verify(&"pi-2".parse().unwrap(), &[1; 32], &tag));
        let other = PullTokens::new(Arc::from("another-admin"));
        assert!(!other.verify(&device, &[1; 32], &tag));
        for bad in [
            "",
            "pi-1",
            "pi-1:zz",
            "pi-1:00",
            "Bad Id:00",
            &"ab".repeat(32),
        ] {
            assert!(PullTokens::parse(bad).is_none(), "{bad}");
        }
    }
}
