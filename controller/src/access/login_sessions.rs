//! Browser sessions for the dashboard (`LoginSessions`). The operator logs in once with
//! the admin token or an API token, and the session keeps that token's scope (a `read`
//! token's session can look, not change); the browser then holds only a random session id
//! in an `HttpOnly`, `SameSite=Strict` cookie, so page scripts never keep the token and
//! `EventSource` (which cannot send headers) is authenticated too. Sessions live in memory:
//! a controller restart logs everyone out, and so does an admin token rotation
//! ([`LoginSessions::end_all`]).
//! When the API listener serves HTTPS the cookie is also `Secure`, so a browser never
//! sends it over plain HTTP.
//!
//! Cross-site requests: `SameSite=Strict` keeps the cookie off them, and a state-changing
//! request authenticated by cookie must also carry [`CSRF_HEADER`], which a cross-site form
//! cannot set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method};

use crate::access::Caller;
use rand_core::{OsRng, RngCore};

/// The cookie's name.
pub const COOKIE: &str = "coracle_session";
/// The header every state-changing dashboard request sends.
pub const CSRF_HEADER: &str = "x-coracle-dashboard";
/// How long a session lasts without being used.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first (a login flood cannot grow memory).
const MAX_SESSIONS: usize = 1024;

/// One live session: who logged in, and when it was last used.
#[derive(Debug, Clone)]
struct Session {
    caller: Caller,
    used: Instant,
}

/// The live sessions. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LoginSessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
    /// Failed logins per source address (429 after too many).
    pub logins: super::login_limit::LoginLimit,
    /// Whether the cookie is marked `Secure` (the API listener serves HTTPS).
    secure_cookie: bool,
}

impl LoginSessions {
    /// Sessions whose cookie is `Secure` when `secure_cookie` (served over HTTPS).
    pub fn new(secure_cookie: bool) -> Self {
        Self {
            secure_cookie,
            ..Self::default()
        }
    }

    /// The `Set-Cookie` value for a new session (or, with `None`, one that clears it).
    pub fn set_cookie(&self, id: Option<&str>) -> String {
        set_cookie(id, self.secure_cookie)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // Each operation is one map call, so a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `caller` and returns its id (256 random bits, hex).
    pub fn create(&self, caller: Caller, now: Instant) -> String {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        let mut map = self.lock();
        map.retain(|_, s| now.duration_since(s.used) < IDLE_TIMEOUT);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), Session { caller, used: now });
        id
    }

    /// The caller of live session `id`; refreshes its idle timer.
    pub fn touch(&self, id: &str, now: Instant) -> Option<Caller> {
        let mut map = self.lock();
        match map.get_mut(id) {
            Some(session) if now.duration_since(session.used) < IDLE_TIMEOUT => {
                session.used = now;
                Some(session.caller.clone())
            }
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the sessions `actor` logged in (its token was revoked); how many there were.
    pub fn end_for(&self, actor: &str) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, s| s.caller.actor != actor);
        before - map.len()
    }

    /// Ends every session (admin token rotation); how many there were.
    pub fn end_all(&self) -> usize {
        let mut map = self.lock();
        let count = map.len();
        map.clear();
        count
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The caller a request's session cookie proves (with the CSRF header when it changes
    /// something), as seen through the dashboard.
    pub fn caller(&self, method: &Method, headers: &HeaderMap) -> Option<Caller> {
        let id = session_cookie(headers)?;
        let safe = matches!(*method, Method::GET | Method::HEAD);
        if !safe && !headers.contains_key(CSRF_HEADER) {
            return None;
        }
        self.touch(&id, Instant::now())
            .map(|caller| caller.via_dashboard())
    }
}

/// The session id from the request's cookies.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value for a new session (or, with `None`, one that clears it);
/// `Secure` when `secure`.
pub fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}; Max-Age={}",
            IDLE_TIMEOUT.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict{secure}; Max-Age=0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(cookie: &str, csrf: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        if csrf {
            h.insert(CSRF_HEADER, HeaderValue::from_static("1"));
        }
        h
    }

    #[test]
    fn a_session_cookie_authorizes_reads_and_csrf_marked_writes_only() {
        let sessions = LoginSessions::default();
        let id = sessions.create(Caller::admin(), Instant::now());
        let cookie = format!("other=1; {COOKIE}={id}");
        let caller = sessions.caller(&Method::GET, &headers(&cookie, false));
        assert_eq!(caller, Some(Caller::admin().via_dashboard()));
        assert!(sessions
            .caller(&Method::POST, &headers(&cookie, false))
            .is_none());
        assert!(sessions
            .caller(&Method::POST, &headers(&cookie, true))
            .is_some());
        let forged = headers(&format!("{COOKIE}=forged"), true);
        assert!(sessions.caller(&Method::GET, &forged).is_none());
        sessions.end(&id);
        assert!(sessions
            .caller(&Method::GET, &headers(&cookie, false))
            .is_none());
    }

    #[test]
    fn idle_sessions_expire() {
        let sessions = LoginSessions::default();
        let start = Instant::now();
        let id = sessions.create(Caller::admin(), start);
        assert!(sessions
            .touch(&id, start + Duration::from_secs(60))
            .is_some());
        let late = start + Duration::from_secs(60) + IDLE_TIMEOUT;
        assert!(sessions.touch(&id, late).is_none());
        assert!(sessions.touch(&id, start).is_none());
    }

    #[test]
    fn sessions_end_with_their_revoked_token_or_all_at_an_admin_rotation() {
        let sessions = LoginSessions::default();
        let now = Instant::now();
        let a = sessions.create(Caller::admin(), now);
        let b = sessions.create(Caller::token("ci", crate::access::Scope::Read), now);
        let c = sessions.create(Caller::token("ci", crate::access::Scope::Read), now);
        assert_eq!(sessions.end_for("token:ci"), 2);
        assert!(
            sessions.touch(&a, now).is_some(),
            "another actor's session stays"
        );
        assert!(sessions.touch(&c, now).is_none());
        assert_eq!(sessions.end_all(), 1);
        assert!(sessions.touch(&a, now).is_none());
        assert!(sessions.touch(&b, now).is_none());
    }

    #[test]
    fn the_cookie_is_secure_only_over_https_and_always_httponly_strict() {
        for (secure, id) in [(false, Some("abc")), (true, Some("abc")), (true, None)] {
            let cookie = LoginSessions::new(secure).set_cookie(id);
            assert!(cookie.contains("; HttpOnly; SameSite=Strict"), "{cookie}");
            assert_eq!(cookie.contains("; Secure"), secure, "{cookie}");
        }
    }
}
