//! The audit log: who (an actor as `access::Caller` names it) did what (an action such as
//! `deploy`, `rollout.abort`, `device.rm`, `token.create`, `admin.rotate`) to which target,
//! with a one-line detail (images and generation of a deploy, a token's scope). Rows are
//! only ever appended.

use serde::{Deserialize, Serialize};

use super::{now_unix, params, Store, StoreError};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_unix: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl crate::access::AuditSink for Store {
    fn record(&self, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), String> {
        self.record_audit(actor, action, target, detail)
            .map_err(|err| err.to_string())
    }
}

impl Store {
    /// Appends an entry.
    pub fn record_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.transaction(|tx| {
            tx.execute(
                "append audit entry",
                "INSERT INTO audit (at_unix, actor, action, target, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now_unix(), actor, action, target, detail],
            )
            .map(drop)
        })
    }

    /// The latest `limit` entries, newest first.
    pub fn audit_entries(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.transaction(|tx| {
            tx.query(
                "read audit log",
                "SELECT id, at_unix, actor, action, target, detail FROM audit
                 ORDER BY id DESC LIMIT ?1",
                params![limit],
                |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at_unix: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        detail: r.get(5)?,
                    })
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_backends::store_tests;

    store_tests! {
        fn entries_come_back_newest_first_and_limited(store) {
            store
                .record_audit("admin", "token.create", "ci", "scope deploy")
                .unwrap();
            store
                .record_audit("token:ci", "deploy", "pi-1", "generation 2")
                .unwrap();
            let all = store.audit_entries(10).unwrap();
            assert_eq!(all.len(), 2);
            assert_eq!(all[0].actor, "token:ci");
            assert_eq!(all[1].action, "token.create");
            assert_eq!(store.audit_entries(1).unwrap().len(), 1);
        }
    }
}
