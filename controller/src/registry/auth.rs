//! Who may use the registry: the admin token for everything, the devices' pull token
//! (derived from it, see `Registry::pull_token`) for reads, presented as a bearer token or
//! as the password of HTTP basic auth (any user name).

use axum::http::{header, HeaderMap, Method};
use base64::Engine as _;

use super::Registry;

/// The admin token may do anything; the devices' pull token only reads (GET, HEAD).
pub(super) fn authorized(registry: &Registry, method: &Method, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let presented = if let Some(token) = value.strip_prefix("Bearer ") {
        token.to_string()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        let text = String::from_utf8_lossy(&decoded).to_string();
        match text.split_once(':') {
            Some((_, password)) => password.to_string(),
            None => return false,
        }
    } else {
        return false;
    };
    let same = |secret: &str| {
        let (a, b) = (presented.as_bytes(), secret.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    };
    same(&registry.token)
        || (matches!(*method, Method::GET | Method::HEAD) && same(&registry.pull_token()))
}
