//! The image fixtures the repository carries (`testdata/images`), found the same way on a
//! developer's machine, in CI and in a fresh clone, and checked against their `SHA256SUMS`.

use std::path::PathBuf;

/// The fixtures folder: `$CORACLE_FIXTURES` if set, else `<workspace>/testdata/images`.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORACLE_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/images")
}

/// The path of one fixture file; panics with the folder searched when it is missing, since a
/// test without its fixture must fail loudly rather than pass.
pub fn path(name: &str) -> PathBuf {
    let path = dir().join(name);
    assert!(
        path.is_file(),
        "fixture {name} not found at {} (the repository's testdata/images, or CORACLE_FIXTURES)",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn every_fixture_matches_its_checksum() {
        let sums = std::fs::read_to_string(path("SHA256SUMS")).unwrap();
        let mut checked = 0;
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (hex, name) = line.split_once(char::is_whitespace).unwrap();
            let name = name.trim().trim_start_matches('*');
            let bytes = std::fs::read(path(name)).unwrap();
            let actual: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(actual, hex, "{name}");
            checked += 1;
        }
        assert!(checked >= 5, "only {checked} fixtures listed");
    }
}
