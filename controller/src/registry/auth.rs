//! Who may use the registry, for what. Credentials come as a bearer token or as the password
//! of HTTP basic auth (any user name):
//! - the admin token, and API tokens of scope `admin`, may do anything;
//! - API tokens of scope `read` or `deploy` may read every repository and the catalog, and
//!   are refused pushes and deletes with 403 DENIED naming the scope needed;
//! - a device's own pull token (`device_tokens`) may read (GET, HEAD) the repositories its
//!   latest desired state names, while it is enrolled and the token's epoch is live — not
//!   the catalog, not other repositories (403 DENIED), nothing after `device rm` or once
//!   the device confirmed a token two epochs newer (401);
//! - the shared pull token of older bootstraps (derived from the admin token) reads
//!   everything, only when `[registry] legacy_pull_token = true`, logged as it is used.

use std::collections::BTreeSet;

use axum::http::{header, HeaderMap, Method};
use base64::Engine as _;
use coracle_proto::DeviceId;

use super::device_tokens::PullTokens;
use super::{Registry, RegistryError};
use crate::access::Scope;

/// What a request's credential proves.
#[derive(Debug, PartialEq, Eq)]
enum Caller {
    /// The admin token or an admin-scoped API token, by its audit name.
    Admin {
        actor: String,
    },
    /// A named API token below scope admin: reads everything, writes nothing.
    Reader {
        token: String,
        scope: Scope,
    },
    /// An enrolled device and the repositories it may read.
    Device {
        device: DeviceId,
        repositories: BTreeSet<String>,
    },
    LegacyPuller,
}

/// The secrets a request presents: a bearer token; or basic auth's password, and the
/// `user:password` pair as a device token (device id as user name, its tag as password).
fn presented(headers: &HeaderMap) -> Vec<String> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Vec::new();
    };
    if let Some(token) = value.strip_prefix("Bearer ") {
        return vec![token.trim().to_string()];
    }
    let Some(basic) = value.strip_prefix("Basic ") else {
        return Vec::new();
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&decoded).into_owned();
    match text.split_once(':') {
        Some((_, password)) => vec![password.to_string(), text.clone()],
        None => Vec::new(),
    }
}

fn same(a: &str, b: &str) -> bool {
    crate::access::constant_time_eq(a.as_bytes(), b.as_bytes())
}

fn caller(registry: &Registry, secret: &str) -> Result<Option<Caller>, RegistryError> {
    if registry.admin.matches(secret) {
        return Ok(Some(Caller::Admin {
            actor: crate::access::Caller::admin().actor,
        }));
    }
    if let (true, Some(tokens)) = (
        secret.starts_with(crate::access::tokens::PREFIX),
        &registry.api_tokens,
    ) {
        let found = tokens
            .token_scope(&crate::access::hash_secret(secret))
            .map_err(|reason| RegistryError::TokenLookup { reason })?;
        return Ok(found.map(|(token, scope)| match scope {
            Scope::Admin => Caller::Admin {
                actor: crate::access::Caller::token(&token, Scope::Admin).actor,
            },
            scope => Caller::Reader { token, scope },
        }));
    }
    if registry.legacy_pull_token && same(secret, &registry.pull_token()) {
        return Ok(Some(Caller::LegacyPuller));
    }
    let (Some((device, epoch, tag)), Some(grants)) = (PullTokens::parse(secret), &registry.grants)
    else {
        return Ok(None);
    };
    let grant = grants
        .grant(&device)
        .map_err(|reason| RegistryError::GrantLookup {
            device: device.to_string(),
            reason,
        })?;
    Ok(grant
        .filter(|g| {
            g.admits_epoch(epoch)
                && registry
                    .pull_tokens
                    .verify(&device, &g.password_sha256, epoch, &tag)
        })
        .map(|g| Caller::Device {
            device,
            repositories: g.repositories,
        }))
}

/// Refuses the request unless its credential allows `method` on `repository` (`None`: the
/// `/v2/` ping; `Some("")`: the catalog, which lists every repository). Allowed, it names
/// the actor when that is an admin (the only callers that may write, so the audit log can
/// say who pushed or deleted).
pub(super) fn authorize(
    registry: &Registry,
    method: &Method,
    repository: Option<&str>,
    headers: &HeaderMap,
) -> Result<Option<String>, RegistryError> {
    let mut found = None;
    for secret in presented(headers) {
        found = caller(registry, &secret)?;
        if found.is_some() {
            break;
        }
    }
    let reads = matches!(*method, Method::GET | Method::HEAD);
    match found.ok_or(RegistryError::Unauthorized)? {
        Caller::Admin { actor } => Ok(Some(actor)),
        Caller::Reader { .. } if reads => Ok(None),
        Caller::Reader { token, scope } => Err(RegistryError::ScopeDenied { token, scope }),
        Caller::LegacyPuller if reads => {
            if let Some(uses) = registry.legacy_uses.hit() {
                tracing::warn!(
                    uses,
                    "a device pulled with the shared legacy pull token: enrol it again for its own token, then set [registry] legacy_pull_token = false"
                );
            }
            Ok(None)
        }
        Caller::Device {
            device,
            repositories,
        } if reads => match repository {
            None => Ok(None),
            Some(name) if repositories.contains(name) => Ok(None),
            Some(name) => Err(RegistryError::Denied {
                device: device.to_string(),
                repository: if name.is_empty() {
                    "_catalog".into()
                } else {
                    name.into()
                },
            }),
        },
        Caller::LegacyPuller | Caller::Device { .. } => Err(RegistryError::Unauthorized),
    }
}
