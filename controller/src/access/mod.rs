//! Who is calling and what they may do. Three kinds of caller reach the API: the admin token
//! (file `admin.token`, every scope), named API tokens (`coracle token create`, one scope
//! each, stored hashed) and dashboard sessions (the scope of the token that logged in). The
//! scope a request needs is a pure function of its method and path ([`scope::required`]),
//! checked in one middleware; the registry asks the same questions of its credentials.
//!
//! - [`Scope`] (`read` < `deploy` < `admin`) and [`Caller`] (actor name + scope);
//! - [`AdminToken`]: the current admin token, replaceable at run time (`coracle admin
//!   rotate`), shared by the API, the dashboard login and the registry;
//! - [`AuditSink`]: how the registry appends to the audit log (pushes and deletes);
//! - [`LoginSessions`]: dashboard login sessions (cookie → caller), with the failed-login
//!   limit per address ([`login_limit`]);
//! - [`tokens`]: API token secrets (random, `crt_` + 64 hex) and their SHA-256, the only
//!   form the store keeps.

pub mod admin_token;
pub mod audit_sink;
pub mod compare;
pub mod login_limit;
pub mod login_sessions;
pub mod scope;
pub mod tokens;

pub use admin_token::AdminToken;
pub use audit_sink::AuditSink;
pub use compare::constant_time_eq;
pub use login_sessions::LoginSessions;
pub use scope::{Caller, Scope};
pub use tokens::{hash_secret, TokenLookup};
