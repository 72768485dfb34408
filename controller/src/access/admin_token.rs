//! `AdminToken`: the current admin token, shared by the API middleware, the dashboard login
//! and the registry, and replaced in place by rotation. The file (`admin.token`, 0600) is
//! written before the new token takes effect, so a crash between the two leaves the file
//! ahead of memory — the next start reads the new one — never behind.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::datadir::{write_private, DataDirError};

/// The admin token; cheap to clone, every clone sees a rotation.
#[derive(Clone)]
pub struct AdminToken {
    current: Arc<RwLock<Arc<str>>>,
    /// Where rotation writes the new token (`None`: tests and offline CLI use).
    file: Option<PathBuf>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The token `token`, kept in `file` across rotations.
    pub fn new(token: &str, file: Option<PathBuf>) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::from(token))),
            file,
        }
    }

    fn get(&self) -> Arc<str> {
        // Each write replaces the whole value, so a poisoned lock still holds a valid one.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `presented` is the current admin token (constant time in its content).
    /// An empty token (offline CLI use) matches nothing.
    pub fn matches(&self, presented: &str) -> bool {
        let current = self.get();
        !current.is_empty() && super::constant_time_eq(presented.as_bytes(), current.as_bytes())
    }

    /// Replaces the token with a fresh random one, written to the file first; returns it.
    pub fn rotate(&self) -> Result<String, DataDirError> {
        let token = crate::secrets::random_token();
        if let Some(file) = &self.file {
            write_private(file, token.as_bytes())?;
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(token.as_str());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_replaces_the_token_in_every_clone_and_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        std::fs::write(&file, "old-token").unwrap();
        let token = AdminToken::new("old-token", Some(file.clone()));
        let shared = token.clone();
        assert!(shared.matches("old-token"));
        let new = token.rotate().unwrap();
        assert!(!shared.matches("old-token"));
        assert!(shared.matches(&new));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), new);
        assert!(!AdminToken::new("", None).matches(""));
    }
}
