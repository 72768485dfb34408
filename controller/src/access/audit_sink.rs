//! Where parts without the API's state (the registry) write the audit log: the store in
//! production. A failed write is logged by the caller and the action stands, as in the API.

/// Appends audit entries (see `store::audit`).
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    fn record(&self, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), String>;
}
