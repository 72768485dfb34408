//! Parsing of `WWW-Authenticate` challenges (RFC 7235) as OCI registries send them:
//! `Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"`
//! (Docker Hub, GHCR, distribution's token auth) or `Basic realm="..."` (htpasswd). Shared
//! by the agent's registry client and the controller's upstream client.

/// What a registry asked for in its 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// The challenge in a header value, if it is one this client can answer.
pub fn parse(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service, mut scope) = (None, None, None);
    for (key, value) in params_of(params) {
        match key.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        scope,
    })
}

/// The bearer challenge in a header value, as a `(realm, service, scope)` triple.
pub fn parse_bearer(header: &str) -> Option<BearerChallenge> {
    match parse(header)? {
        Challenge::Bearer {
            realm,
            service,
            scope,
        } => Some(BearerChallenge {
            realm,
            service,
            scope,
        }),
        Challenge::Basic => None,
    }
}

/// A bearer challenge: where to get a token, for which service and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// `key="value", key=token` pairs; commas inside quotes belong to the value.
fn params_of(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        pairs.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',');
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
        let c = parse("bearer realm=http://127.0.0.1:5/token, service=x");
        assert!(
            matches!(c, Some(Challenge::Bearer { realm, .. }) if realm == "http://127.0.0.1:5/token")
        );
        assert_eq!(
            parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse("Bearer service=x"), None);
        assert_eq!(parse_bearer(r#"Basic realm="x""#), None);
        assert_eq!(
            parse_bearer(r#"Bearer realm="r",scope="repository:a:pull""#)
                .map(|c| (c.realm, c.scope)),
            Some(("r".to_string(), Some("repository:a:pull".to_string())))
        );
        assert_eq!(parse("Negotiate abc"), None);
        assert_eq!(parse(""), None);
    }
}
