//! Parsing of `WWW-Authenticate` challenges (RFC 7235) as OCI registries send them, e.g.
//! `Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"`.

/// A bearer-token challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// The bearer challenge in a header value, if it holds one with a realm.
pub fn parse_bearer(header: &str) -> Option<BearerChallenge> {
    let (scheme, params) = header.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    for (key, value) in params_of(params) {
        match key.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
    }
    Some(BearerChallenge {
        realm: realm?,
        service,
        scope,
    })
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
    fn parses_a_registry_bearer_challenge() {
        let c = parse_bearer(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(
            c.scope.as_deref(),
            Some("repository:library/busybox:pull,push")
        );
    }

    #[test]
    fn accepts_unquoted_values_and_refuses_other_schemes() {
        let c = parse_bearer("bearer realm=http://127.0.0.1:5/token, service=x").unwrap();
        assert_eq!(c.realm, "http://127.0.0.1:5/token");
        assert_eq!(c.service.as_deref(), Some("x"));
        assert!(parse_bearer(r#"Basic realm="registry""#).is_none());
        assert!(parse_bearer("Bearer service=x").is_none());
        assert!(parse_bearer("").is_none());
    }
}
