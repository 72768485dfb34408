//! Each device's own pull credential for the registry. The token a bootstrap file carries is
//! `DEVICE:HEX`, HEX an HMAC-SHA256 under the pull key (`pull.key` in the data dir: random
//! on a new controller, the admin token of the time on one upgraded from when tokens were
//! keyed by it, so issued tokens stay valid; never changed by admin rotation) of the device
//! id and the hash of the device's broker password — so nothing per device is stored beyond what enrolment
//! already stores, `device rm` revokes it (no row, no token), and an enrolment of the same
//! name again gets a new one (a new password). What a valid token may read is the set of
//! repositories the device's latest desired state names (`DeviceGrant`), so a device cannot
//! read another device's images.
//!
//! Tokens rotate on a schedule (`pull_token_rotation`): the token of epoch N > 0 is
//! `DEVICE:N:HEX`, its HMAC also over N. The bootstrap's token is epoch 0. A device's tokens
//! are valid from one epoch before the newest it confirmed to one after (the one on its way
//! while a delivery is unconfirmed), so at most three are live and every older one is revoked
//! by the device's confirmation of a newer one.

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
    /// The newest pull token epoch the device confirmed (0: its bootstrap's).
    pub pull_epoch: u32,
}

impl DeviceGrant {
    /// Whether a token of `epoch` is live (see the module doc).
    pub fn admits_epoch(&self, epoch: u32) -> bool {
        epoch.saturating_add(1) >= self.pull_epoch && epoch <= self.pull_epoch.saturating_add(1)
    }
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

    fn mac(&self, device: &DeviceId, password_sha256: &[u8; 32], epoch: u32) -> Hmac<Sha256> {
        // An HMAC key may have any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"coracle device pull token\0");
        mac.update(device.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(password_sha256);
        // Epoch 0 is the bootstrap's token, issued before tokens had epochs.
        if epoch > 0 {
            mac.update(b"\0epoch\0");
            mac.update(&epoch.to_be_bytes());
        }
        mac
    }

    /// The token of `epoch` for `device` as enrolled with this password hash:
    /// `DEVICE:HEX` for epoch 0 (the bootstrap's), `DEVICE:EPOCH:HEX` after.
    pub fn issue(&self, device: &DeviceId, password_sha256: &[u8; 32], epoch: u32) -> String {
        let tag = hex::encode(
            self.mac(device, password_sha256, epoch)
                .finalize()
                .into_bytes(),
        );
        match epoch {
            0 => format!("{device}:{tag}"),
            n => format!("{device}:{n}:{tag}"),
        }
    }

    /// Splits a presented token (bearer, or basic auth's `user:password` with the device id
    /// as user) into the device it names, its epoch and its tag.
    pub fn parse(presented: &str) -> Option<(DeviceId, u32, Vec<u8>)> {
        let (named, tag) = presented.rsplit_once(':')?;
        let tag = hex::decode(tag).ok().filter(|t| t.len() == 32)?;
        let (device, epoch) = match named.split_once(':') {
            None => (named, 0),
            Some((device, epoch)) => (device, epoch.parse().ok().filter(|e| *e > 0)?),
        };
        Some((device.parse().ok()?, epoch, tag))
    }

    /// Whether `tag` is the device's token of `epoch` for this enrolment (constant time).
    pub fn verify(
        &self,
        device: &DeviceId,
        password_sha256: &[u8; 32],
        epoch: u32,
        tag: &[u8],
    ) -> bool {
        self.mac(device, password_sha256, epoch)
            .verify_slice(tag)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_device_and_bind_its_enrolment() {
        let tokens = PullTokens::new(Arc::from("admin-secret"));
        let device: DeviceId = "pi-1".parse().unwrap();
        let token = tokens.issue(&device, &[1; 32], 0);
        assert!(token.starts_with("pi-1:"), "{token}");
        let (named, epoch, tag) = PullTokens::parse(&token).unwrap();
        assert_eq!((&named, epoch), (&device, 0));
        assert!(tokens.verify(&device, &[1; 32], 0, &tag));
        // Another enrolment (password), another device, another controller, another
        // epoch: refused.
        assert!(!tokens.verify(&device, &[2; 32], 0, &tag));
        assert!(!tokens.verify(&"pi-2".parse().unwrap(), &[1; 32], 0, &tag));
        let other = PullTokens::new(Arc::from("another-admin"));
        assert!(!other.verify(&device, &[1; 32], 0, &tag));
        assert!(!tokens.verify(&device, &[1; 32], 1, &tag));
        // A rotated token names its epoch, and only that epoch's MAC passes.
        let rotated = tokens.issue(&device, &[1; 32], 7);
        assert!(rotated.starts_with("pi-1:7:"), "{rotated}");
        let (named, epoch, tag) = PullTokens::parse(&rotated).unwrap();
        assert_eq!((&named, epoch), (&device, 7));
        assert!(tokens.verify(&device, &[1; 32], 7, &tag));
        assert!(!tokens.verify(&device, &[1; 32], 6, &tag));
        assert!(!tokens.verify(&device, &[1; 32], 0, &tag));
        let forged_epoch = rotated.replacen(":7:", ":8:", 1);
        let (_, epoch, tag) = PullTokens::parse(&forged_epoch).unwrap();
        assert!(!tokens.verify(&device, &[1; 32], epoch, &tag));
        let hex = "ab".repeat(32);
        for bad in [
            "",
            "pi-1",
            "pi-1:zz",
            "pi-1:00",
            "Bad Id:00",
            &hex,
            &format!("pi-1:0:{hex}"),
            &format!("pi-1:x:{hex}"),
            &format!("pi-1:-1:{hex}"),
            &format!("pi-1:1:2:{hex}"),
        ] {
            assert!(PullTokens::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn tokens_live_from_one_epoch_before_the_confirmed_to_one_after() {
        let grant = |pull_epoch| DeviceGrant {
            password_sha256: [0; 32],
            repositories: BTreeSet::new(),
            pull_epoch,
        };
        let live = |confirmed| {
            (0..8)
                .filter(|e| grant(confirmed).admits_epoch(*e))
                .collect::<Vec<u32>>()
        };
        assert_eq!(live(0), [0, 1]);
        assert_eq!(live(1), [0, 1, 2]);
        assert_eq!(live(2), [1, 2, 3]);
        assert_eq!(live(5), [4, 5, 6]);
        assert!(grant(u32::MAX).admits_epoch(u32::MAX));
    }
}
