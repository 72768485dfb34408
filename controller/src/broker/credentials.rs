//! `Credentials`: who may connect. Devices by id and password (only its sha256 is kept);
//! the controller by its own password. Shared by the broker's auth hook and the API that
//! adds and revokes devices. During a rotation (`coracle device rotate`) a device has a
//! second, next password beside its current one until the agent confirms the switch.

use std::collections::HashMap;
use std::sync::RwLock;

use coracle_proto::DeviceId;
use sha2::{Digest as _, Sha256};

use super::acl::{Principal, CONTROLLER_USER};

/// The credential table.
#[derive(Debug)]
pub struct Credentials {
    controller_sha256: [u8; 32],
    devices: RwLock<HashMap<DeviceId, [u8; 32]>>,
    /// Passwords being rotated to, valid beside the current one until committed.
    next: RwLock<HashMap<DeviceId, [u8; 32]>>,
}

/// sha256 of a password. Passwords are 256-bit random tokens, so a plain hash suffices.
pub fn password_sha256(password: &str) -> [u8; 32] {
    Sha256::digest(password.as_bytes()).into()
}

fn equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    crate::access::constant_time_eq(a, b)
}

impl Credentials {
    pub fn new(controller_password: &str, devices: Vec<(DeviceId, [u8; 32])>) -> Self {
        Self {
            controller_sha256: password_sha256(controller_password),
            devices: RwLock::new(devices.into_iter().collect()),
            next: RwLock::default(),
        }
    }

    /// Checks a CONNECT. Devices must use their id as both username and client id, so
    /// one device cannot take over another's session.
    pub fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        client_id: &str,
    ) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(password?).into();
        let username = username?;
        if username == CONTROLLER_USER {
            return equal(&hash, &self.controller_sha256).then_some(Principal::Controller);
        }
        let device: DeviceId = username.parse().ok()?;
        if client_id != device.as_str() {
            return None;
        }
        let devices = self.devices.read().unwrap_or_else(|p| p.into_inner());
        let stored = devices.get(&device)?;
        let next = self.next.read().unwrap_or_else(|p| p.into_inner());
        let is_next = next.get(&device).is_some_and(|n| equal(&hash, n));
        (equal(&hash, stored) | is_next).then_some(Principal::Device(device))
    }

    /// Accepts `password_sha256` beside the device's current password (a rotation).
    pub fn allow_next(&self, device: DeviceId, password_sha256: [u8; 32]) {
        let mut next = self.next.write().unwrap_or_else(|p| p.into_inner());
        next.insert(device, password_sha256);
    }

    /// Makes the next password the only one; false when there was none.
    pub fn commit_next(&self, device: &DeviceId) -> bool {
        let taken = self
            .next
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device);
        let Some(hash) = taken else {
            return false;
        };
        let mut devices = self.devices.write().unwrap_or_else(|p| p.into_inner());
        devices.insert(device.clone(), hash);
        true
    }

    /// Forgets the next password (the rotation failed).
    pub fn drop_next(&self, device: &DeviceId) {
        let mut next = self.next.write().unwrap_or_else(|p| p.into_inner());
        next.remove(device);
    }

    /// Whether a device currently holds credentials (revoked devices do not).
    pub fn is_enrolled(&self, device: &DeviceId) -> bool {
        let devices = self.devices.read().unwrap_or_else(|p| p.into_inner());
        devices.contains_key(device)
    }

    pub fn grant(&self, device: DeviceId, password_sha256: [u8; 32]) {
        let mut devices = self.devices.write().unwrap_or_else(|p| p.into_inner());
        devices.insert(device, password_sha256);
    }

    pub fn revoke(&self, device: &DeviceId) {
        self.drop_next(device);
        let mut devices = self.devices.write().unwrap_or_else(|p| p.into_inner());
        devices.remove(device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Credentials {
        let id: DeviceId = "pi-1".parse().unwrap();
        Credentials::new("ctl-secret", vec![(id, password_sha256("dev-secret"))])
    }

    #[test]
    fn right_credentials_authenticate() {
        let creds = table();
        assert_eq!(
            creds.authenticate(Some("pi-1"), Some(b"dev-secret"), "pi-1"),
            Some(Principal::Device("pi-1".parse().unwrap()))
        );
        assert_eq!(
            creds.authenticate(Some(CONTROLLER_USER), Some(b"ctl-secret"), "anything"),
            Some(Principal::Controller)
        );
    }

    #[test]
    fn wrong_password_user_or_client_id_is_refused() {
        let creds = table();
        assert_eq!(
            creds.authenticate(Some("pi-1"), Some(b"nope"), "pi-1"),
            None
        );
        assert_eq!(creds.authenticate(Some("pi-1"), None, "pi-1"), None);
        assert_eq!(creds.authenticate(None, Some(b"dev-secret"), "pi-1"), None);
        assert_eq!(
            creds.authenticate(Some("pi-1"), Some(b"dev-secret"), "pi-2"),
            None
        );
        assert_eq!(
            creds.authenticate(Some(CONTROLLER_USER), Some(b"dev-secret"), "x"),
            None
        );
    }

    #[test]
    fn during_a_rotation_both_passwords_work_and_after_it_only_the_new_one() {
        let creds = table();
        let id: DeviceId = "pi-1".parse().unwrap();
        let login = |password: &[u8]| creds.authenticate(Some("pi-1"), Some(password), "pi-1");
        creds.allow_next(id.clone(), password_sha256("new-secret"));
        assert!(login(b"dev-secret").is_some() && login(b"new-secret").is_some());
        assert!(creds.commit_next(&id));
        assert!(
            login(b"dev-secret").is_none(),
            "the old password is revoked"
        );
        assert!(login(b"new-secret").is_some());
        assert!(!creds.commit_next(&id));
        creds.allow_next(id.clone(), password_sha256("third"));
        creds.drop_next(&id);
        assert!(
            login(b"third").is_none(),
            "a failed rotation leaves the current password"
        );
        assert!(login(b"new-secret").is_some());
    }

    #[test]
    fn revoked_device_no_longer_authenticates() {
        let creds = table();
        let id: DeviceId = "pi-1".parse().unwrap();
        creds.revoke(&id);
        assert!(!creds.is_enrolled(&id));
        assert_eq!(
            creds.authenticate(Some("pi-1"), Some(b"dev-secret"), "pi-1"),
            None
        );
    }
}
