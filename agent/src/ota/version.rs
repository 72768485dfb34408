//! This build's version, read from a stamp in the binary (`coracle_proto::agent_update`'s
//! `VERSION_STAMP_PREFIX`) rather than a string the compiler may fold: a copy of the binary
//! stamped with another version reports that version, which is how tests make a second
//! release without a second build.

use coracle_proto::{VERSION_STAMP_LEN, VERSION_STAMP_PREFIX};

const fn stamp() -> [u8; VERSION_STAMP_LEN] {
    let mut out = [0u8; VERSION_STAMP_LEN];
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let mut i = 0;
    while i < VERSION_STAMP_PREFIX.len() {
        out[i] = VERSION_STAMP_PREFIX[i];
        i += 1;
    }
    let mut j = 0;
    // Leave at least one NUL: a stamp is always terminated.
    while j < version.len() && i + j < VERSION_STAMP_LEN - 1 {
        out[i + j] = version[j];
        j += 1;
    }
    out
}

#[used]
static STAMP: [u8; VERSION_STAMP_LEN] = stamp();

/// The version this binary reports (`CARGO_PKG_VERSION` unless stamped otherwise).
pub fn agent_version() -> String {
    // black_box: the bytes must be read from the file as loaded, not folded at build time.
    let stamp: &[u8; VERSION_STAMP_LEN] = std::hint::black_box(&STAMP);
    let field = &stamp[VERSION_STAMP_PREFIX.len()..];
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unstamped_build_reports_its_package_version() {
        assert_eq!(agent_version(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn the_stamp_is_found_in_this_very_binary() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(
            coracle_proto::find_version_stamp(&exe),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
}
