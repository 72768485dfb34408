//! Agent "builds" for release tests: an ELF header and a version stamp, all the controller
//! checks before it stores a release.

use coracle_proto::{VERSION_STAMP_LEN, VERSION_STAMP_PREFIX};

/// A 64-bit little-endian ELF header for `machine`, followed by a version stamp.
pub fn fake_agent(machine: u16, version: &str) -> Vec<u8> {
    let mut bytes = vec![0u8; 64];
    bytes[..4].copy_from_slice(b"\x7fELF");
    bytes[4] = 2;
    bytes[5] = 1;
    bytes[18..20].copy_from_slice(&machine.to_le_bytes());
    let mut stamp = VERSION_STAMP_PREFIX.to_vec();
    stamp.extend_from_slice(version.as_bytes());
    stamp.resize(VERSION_STAMP_LEN, 0);
    bytes.extend_from_slice(&stamp);
    bytes
}
