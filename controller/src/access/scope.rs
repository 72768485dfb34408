//! `Scope`, `Caller` and the one table of which scope each API request needs.

use std::fmt;
use std::str::FromStr;

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// What a credential may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET endpoints (fleet, devices, rollouts, images, logs); pulls from the registry.
    Read,
    /// Read, plus deploys, rollouts (start, pause, resume, abort, roll back), service
    /// restarts and delta planning.
    Deploy,
    /// Everything: devices, tokens, the audit log, admin rotation, registry push and delete.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Deploy, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }

    /// Whether a credential of this scope may do what `needed` guards.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is none of `read`, `deploy`, `admin`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown scope {0:?} (read, deploy or admin)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownScope(text.to_string()))
    }
}

/// An authenticated caller: who (as the audit log names them) and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `admin` (the admin token), `token:NAME`, or `dashboard:` + one of those.
    pub actor: String,
    pub scope: Scope,
}

impl Caller {
    pub fn admin() -> Self {
        Self {
            actor: "admin".into(),
            scope: Scope::Admin,
        }
    }

    pub fn token(name: &str, scope: Scope) -> Self {
        Self {
            actor: format!("token:{name}"),
            scope,
        }
    }

    /// The same caller, through a dashboard session.
    pub fn via_dashboard(&self) -> Self {
        Self {
            actor: format!("dashboard:{}", self.actor),
            scope: self.scope,
        }
    }
}

/// The scope an API request needs (`path` with or without the `/api/v1` prefix).
pub fn required(method: &Method, path: &str) -> Scope {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let reads = matches!(*method, Method::GET | Method::HEAD);
    match (reads, parts.as_slice()) {
        // Token names and who did what are the admin's business.
        (true, ["tokens", ..] | ["audit", ..]) => Scope::Admin,
        // A shell in a container (a WebSocket upgrade, so a GET): at least deploy, and
        // the policy's `exec` grant unless admin (`api::exec`).
        (_, ["devices", _, "services", _, "exec"]) => Scope::Deploy,
        (true, _) => Scope::Read,
        (false, ["devices", _, "deploy"])
        | (false, ["rollouts"])
        | (false, ["agent", "rollouts"])
        | (false, ["rollouts", _, _])
        | (false, ["devices", _, "services", _, "restart"])
        | (false, ["images", "deltas", "plan"]) => {
            if *method == Method::POST {
                Scope::Deploy
            } else {
                Scope::Admin
            }
        }
        (false, _) => Scope::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_needs_the_scope_of_the_table() {
        let table = [
            ("GET", "/api/v1/devices", Scope::Read),
            ("GET", "/api/v1/devices/pi/services/web/logs", Scope::Read),
            ("GET", "/api/v1/events/stream", Scope::Read),
            ("GET", "/api/v1/tokens", Scope::Admin),
            ("GET", "/api/v1/audit", Scope::Admin),
            ("POST", "/api/v1/devices/pi/deploy", Scope::Deploy),
            ("POST", "/api/v1/rollouts", Scope::Deploy),
            ("POST", "/api/v1/rollouts/3/abort", Scope::Deploy),
            (
                "POST",
                "/api/v1/devices/pi/services/web/restart",
                Scope::Deploy,
            ),
            ("POST", "/api/v1/images/deltas/plan", Scope::Deploy),
            ("POST", "/api/v1/devices", Scope::Admin),
            ("DELETE", "/api/v1/devices/pi", Scope::Admin),
            ("PATCH", "/api/v1/devices/pi/tags", Scope::Admin),
            ("DELETE", "/api/v1/rollouts/3/abort", Scope::Admin),
            ("POST", "/api/v1/tokens", Scope::Admin),
            ("DELETE", "/api/v1/tokens/ci", Scope::Admin),
            ("POST", "/api/v1/admin/rotate", Scope::Admin),
            ("POST", "/api/v1/admin/deployment-key/rotate", Scope::Admin),
            ("POST", "/api/v1/devices/pi/rotate", Scope::Admin),
            ("POST", "/devices/pi/deploy", Scope::Deploy),
        ];
        for (method, path, scope) in table {
            let method: Method = method.parse().unwrap();
            assert_eq!(required(&method, path), scope, "{method} {path}");
        }
    }

    #[test]
    fn scopes_include_the_ones_before_and_parse_by_name() {
        assert!(Scope::Admin.allows(Scope::Deploy));
        assert!(Scope::Deploy.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Deploy));
        assert!(!Scope::Deploy.allows(Scope::Admin));
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        let err = "write".parse::<Scope>().unwrap_err();
        assert!(err.to_string().contains("\"write\""), "{err}");
    }
}
