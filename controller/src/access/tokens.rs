//! API token secrets: 256 random bits shown once as `crt_` + 64 hex, stored only as their
//! SHA-256 (a secret of that entropy needs no slow hash), looked up by that hash.

use sha2::{Digest as _, Sha256};

use super::Scope;

/// The prefix that tells an API token from the admin token and device pull tokens.
pub const PREFIX: &str = "crt_";

/// A fresh token secret.
pub fn new_secret() -> String {
    format!("{PREFIX}{}", crate::secrets::random_token())
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Finds the live API token a secret belongs to (implemented by the fleet store).
pub trait TokenLookup: Send + Sync + std::fmt::Debug {
    /// The token's name and scope; `None` for no live token. An error is a failed lookup,
    /// which refuses the request rather than guessing.
    fn token_scope(&self, secret_sha256: &[u8; 32]) -> Result<Option<(String, Scope)>, String>;
}

/// Checks a token name: `[a-z0-9][a-z0-9._-]{0,62}`, and not `admin` (the audit log's name
/// for the admin token).
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !valid {
        return Err(format!(
            "token name {name:?} must be 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        ));
    }
    if name == "admin" {
        return Err("token name \"admin\" is reserved for the admin token".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hash_stably() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 64, "{a}");
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }

    #[test]
    fn token_names_are_checked() {
        for good in ["ci", "ci-deploy", "grafana.read", "a_1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "CI", "-ci", "ci bot", "admin", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
