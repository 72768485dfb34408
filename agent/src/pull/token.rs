//! The device's pull token for the controller's registry: its bootstrap's (epoch 0) until the
//! controller's schedule sends a newer one (`Command::RotatePullToken`). One [`PullToken`] is
//! shared by every client of that registry, so a rotation takes effect at the next request.
//!
//! A received token is kept in the state dir (checksummed, 0600) together with a hash of the
//! bootstrap token it succeeded: after a restart the device pulls with it, and after a new
//! enrolment (a new bootstrap token) the kept one, which belonged to the old enrolment, is
//! ignored.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use sha2::{Digest as _, Sha256};

use crate::state::file::{read_checked, write_atomic, StateFileError};

/// File name of the kept token in the state dir.
pub const PULL_TOKEN_FILE: &str = "pull-token";

/// The token in use and its epoch.
#[derive(Clone, PartialEq, Eq)]
struct Held {
    token: String,
    epoch: u32,
}

/// A shared, replaceable pull token; `Debug` never shows it.
#[derive(Clone, Default)]
pub struct PullToken {
    held: Arc<RwLock<Option<Held>>>,
    /// Where a rotated token is kept, and the hash of the bootstrap token that binds it.
    keep: Option<(PathBuf, [u8; 32])>,
}

impl std::fmt::Debug for PullToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullToken")
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

/// Why a rotated token could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PullTokenError {
    #[error(
        "this device pulls from no controller registry with a token (its bootstrap file has none)"
    )]
    NoToken,
    #[error("pull token epoch {offered} is not newer than the one held ({held})")]
    NotNewer { offered: u32, held: u32 },
    #[error("keep the new pull token")]
    Keep(#[source] StateFileError),
}

impl PullToken {
    /// A token that never changes (tests, and engines without a state dir).
    pub fn fixed(token: Option<String>) -> Self {
        Self {
            held: Arc::new(RwLock::new(token.map(|token| Held { token, epoch: 0 }))),
            keep: None,
        }
    }

    /// The bootstrap's token, or the newer one kept at `file` for this same bootstrap token.
    pub fn load(bootstrap_token: Option<String>, file: PathBuf) -> Self {
        let Some(bootstrap_token) = bootstrap_token else {
            return Self::fixed(None);
        };
        let binding: [u8; 32] = Sha256::digest(bootstrap_token.as_bytes()).into();
        let kept = match read_checked(&file) {
            Ok(Some(body)) => parse_kept(&body, &binding),
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(error = %crate::runtime::error_chain(&err), "kept pull token unreadable; pulling with the bootstrap's until the controller sends a new one");
                None
            }
        };
        let held = kept.unwrap_or(Held {
            token: bootstrap_token,
            epoch: 0,
        });
        Self {
            held: Arc::new(RwLock::new(Some(held))),
            keep: Some((file, binding)),
        }
    }

    /// The token to send now.
    pub fn current(&self) -> Option<String> {
        self.read().map(|held| held.token)
    }

    /// The epoch of the token held (0: the bootstrap's, or none).
    pub fn epoch(&self) -> u32 {
        self.read().map_or(0, |held| held.epoch)
    }

    /// Takes a newer token: kept on disk first (so a restart pulls with it), then used.
    /// The same epoch again is accepted (the controller repeats an offer whose reply it
    /// missed); an older one is refused, so a replayed offer cannot bring back a revoked token.
    pub fn replace(&self, epoch: u32, token: String) -> Result<(), PullTokenError> {
        let held = self.read().ok_or(PullTokenError::NoToken)?.epoch;
        if epoch < held {
            return Err(PullTokenError::NotNewer {
                offered: epoch,
                held,
            });
        }
        if let Some((file, binding)) = &self.keep {
            let mut body = binding.to_vec();
            body.extend_from_slice(&epoch.to_le_bytes());
            body.extend_from_slice(token.as_bytes());
            write_atomic(file, &body).map_err(PullTokenError::Keep)?;
        }
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = Some(Held { token, epoch });
        Ok(())
    }

    fn read(&self) -> Option<Held> {
        self.held.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A kept token: the bootstrap token's hash, the epoch (u32 LE), the token's UTF-8.
fn parse_kept(body: &[u8], binding: &[u8; 32]) -> Option<Held> {
    let (hash, rest) = body.split_at_checked(32)?;
    if hash != binding {
        tracing::info!(
            "kept pull token belongs to an earlier enrolment; pulling with the bootstrap's"
        );
        return None;
    }
    let (epoch, token) = rest.split_at_checked(4)?;
    let epoch = u32::from_le_bytes(epoch.try_into().ok()?);
    let token = std::str::from_utf8(token).ok()?.to_string();
    Some(Held { token, epoch })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_rotated_token_is_kept_for_its_enrolment_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(PULL_TOKEN_FILE);
        let token = PullToken::load(Some("pi:boot".into()), file.clone());
        assert_eq!(
            (token.current().as_deref(), token.epoch()),
            (Some("pi:boot"), 0)
        );
        let shared = token.clone();
        token.replace(1, "pi:1:aa".into()).unwrap();
        // Every clone sees it at once.
        assert_eq!(
            (shared.current().as_deref(), shared.epoch()),
            (Some("pi:1:aa"), 1)
        );
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // An older token is refused; a repeat of the same epoch is taken.
        assert!(matches!(
            token.replace(0, "pi:0".into()),
            Err(PullTokenError::NotNewer {
                offered: 0,
                held: 1
            })
        ));
        token.replace(1, "pi:1:aa".into()).unwrap();

        // A restart with the same bootstrap pulls with the kept token.
        let again = PullToken::load(Some("pi:boot".into()), file.clone());
        assert_eq!(
            (again.current().as_deref(), again.epoch()),
            (Some("pi:1:aa"), 1)
        );
        // A new enrolment ignores it.
        let enrolled = PullToken::load(Some("pi:new".into()), file.clone());
        assert_eq!(
            (enrolled.current().as_deref(), enrolled.epoch()),
            (Some("pi:new"), 0)
        );
        // A damaged file falls back to the bootstrap's token.
        std::fs::write(&file, b"garbage").unwrap();
        let damaged = PullToken::load(Some("pi:boot".into()), file);
        assert_eq!(damaged.current().as_deref(), Some("pi:boot"));
    }

    #[test]
    fn a_device_without_a_token_refuses_one() {
        let none = PullToken::fixed(None);
        assert!(matches!(
            none.replace(1, "x".into()),
            Err(PullTokenError::NoToken)
        ));
        assert!(!format!("{:?}", PullToken::fixed(Some("secret".into()))).contains("secret"));
    }
}
