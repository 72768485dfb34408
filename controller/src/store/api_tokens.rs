//! Named API tokens: name, scope, the SHA-256 of the secret (never the secret), when made,
//! last used and revoked. A revoked token stays listed; its name may be used again.

use serde::{Deserialize, Serialize};

use super::{now_unix, params, Store, StoreError};
use crate::access::{Scope, TokenLookup};

pub(super) const MIGRATION: &str = r#"
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL UNIQUE,
    created_unix INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_unix INTEGER
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_unix IS NULL;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_unix INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
"#;

/// A token as `token ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    pub name: String,
    pub scope: Scope,
    pub created_unix: i64,
    pub created_by: String,
    pub revoked_unix: Option<i64>,
}

impl Store {
    /// Stores a new live token; `TokenExists` when a live token has the name.
    pub fn create_api_token(
        &self,
        name: &str,
        scope: Scope,
        secret_sha256: &[u8; 32],
        created_by: &str,
    ) -> Result<ApiTokenRecord, StoreError> {
        let now = now_unix();
        let inserted = self.transaction(|tx| {
            tx.execute(
                "create API token",
                "INSERT INTO api_tokens (name, scope, secret_sha256, created_unix, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![name, scope.as_str(), &secret_sha256[..], now, created_by],
            )
        })?;
        if inserted == 0 {
            return Err(StoreError::TokenExists { name: name.into() });
        }
        Ok(ApiTokenRecord {
            name: name.to_string(),
            scope,
            created_unix: now,
            created_by: created_by.to_string(),
            revoked_unix: None,
        })
    }

    /// Every token, live ones first, newest first.
    pub fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "list API tokens",
                "SELECT name, scope, created_unix, created_by, revoked_unix FROM api_tokens
                 ORDER BY revoked_unix IS NOT NULL, id DESC",
                &[],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<String>(1)?,
                        r.get::<i64>(2)?,
                        r.get::<String>(3)?,
                        r.get::<Option<i64>>(4)?,
                    ))
                },
            )
        })?;
        let mut tokens = Vec::new();
        for (name, scope, created_unix, created_by, revoked_unix) in rows {
            let scope = scope.parse().map_err(|e| StoreError::CorruptToken {
                name: name.clone(),
                what: format!("{e}"),
            })?;
            tokens.push(ApiTokenRecord {
                name,
                scope,
                created_unix,
                created_by,
                revoked_unix,
            });
        }
        Ok(tokens)
    }

    /// Revokes the live token `name`; `TokenNotFound` when there is none.
    pub fn revoke_api_token(&self, name: &str) -> Result<(), StoreError> {
        let changed = self.transaction(|tx| {
            tx.execute(
                "revoke API token",
                "UPDATE api_tokens SET revoked_unix = ?2 WHERE name = ?1 AND revoked_unix IS NULL",
                params![name, now_unix()],
            )
        })?;
        if changed == 0 {
            return Err(StoreError::TokenNotFound { name: name.into() });
        }
        Ok(())
    }

    /// The live token with this secret hash: its name and scope.
    pub fn api_token_scope(
        &self,
        secret_sha256: &[u8; 32],
    ) -> Result<Option<(String, Scope)>, StoreError> {
        let row: Option<(String, String)> = self.transaction(|tx| {
            tx.query_opt(
                "look up API token",
                "SELECT name, scope FROM api_tokens
                 WHERE secret_sha256 = ?1 AND revoked_unix IS NULL",
                params![&secret_sha256[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        row.map(|(name, scope)| {
            let scope = scope.parse().map_err(|e| StoreError::CorruptToken {
                name: name.clone(),
                what: format!("{e}"),
            })?;
            Ok((name, scope))
        })
        .transpose()
    }
}

impl TokenLookup for Store {
    fn token_scope(&self, secret_sha256: &[u8; 32]) -> Result<Option<(String, Scope)>, String> {
        self.api_token_scope(secret_sha256)
            .map_err(|e| crate::api::error::error_chain(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends::store_tests;

    store_tests! {
        fn tokens_are_found_by_hash_until_revoked_and_names_are_unique_while_live(store) {
            store
                .create_api_token("ci", Scope::Deploy, &[1; 32], "admin")
                .unwrap();
            assert!(matches!(
                store.create_api_token("ci", Scope::Read, &[2; 32], "admin"),
                Err(StoreError::TokenExists { .. })
            ));
            assert_eq!(
                store.api_token_scope(&[1; 32]).unwrap(),
                Some(("ci".into(), Scope::Deploy))
            );
            assert_eq!(store.api_token_scope(&[9; 32]).unwrap(), None);
            store.revoke_api_token("ci").unwrap();
            assert_eq!(store.api_token_scope(&[1; 32]).unwrap(), None);
            assert!(matches!(
                store.revoke_api_token("ci"),
                Err(StoreError::TokenNotFound { .. })
            ));
            store
                .create_api_token("ci", Scope::Read, &[2; 32], "admin")
                .unwrap();
            let listed = store.list_api_tokens().unwrap();
            assert_eq!(listed.len(), 2);
            assert_eq!(listed[0].revoked_unix, None);
            assert_eq!(listed[0].scope, Scope::Read);
            assert!(listed[1].revoked_unix.is_some());
        }
    }
}
