//! Following a registry's redirect to where a blob really is: the controller answers a blob
//! GET with a 307 to a pre-signed object-store URL when its blobs live in a bucket. ureq's
//! own redirects are off so this is the one place that decides what a hop carries: the
//! request's own headers (a `Range` to resume) but never the registry's `Authorization`,
//! which would hand the device's pull token to the object store (the pre-signed URL is its
//! own credential).

use ureq::http::{Response, StatusCode};
use ureq::{Agent, Body};

use super::error::PullError;

/// A registry that redirects more often than this in a row is answered with the last
/// redirect's status.
const MAX_HOPS: usize = 3;

/// Follows `resp` while it is a redirect, re-sending `method` with `headers` (and no
/// credentials) to each `Location`.
pub(super) fn follow(
    agent: &Agent,
    method: &'static str,
    url: &str,
    mut resp: Response<Body>,
    headers: &[(&str, String)],
) -> Result<Response<Body>, PullError> {
    let mut current = url.to_string();
    for _ in 0..MAX_HOPS {
        if !is_redirect(resp.status()) {
            return Ok(resp);
        }
        let Some(location) = resp.headers().get("location").and_then(|v| v.to_str().ok()) else {
            return Ok(resp);
        };
        let next = resolve(&current, location);
        let mut req = match method {
            "HEAD" => agent.head(&next),
            _ => agent.get(&next),
        };
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        resp = req.call().map_err(|source| PullError::Request {
            method,
            url: next.clone(),
            source: Box::new(source),
        })?;
        current = next;
    }
    Ok(resp)
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// `location` against the URL that answered it: absolute as it is, else on the same origin.
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let origin_end = base
        .find("://")
        .and_then(|scheme| base[scheme + 3..].find('/').map(|i| scheme + 3 + i))
        .unwrap_or(base.len());
    let origin = &base[..origin_end];
    if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        format!("{origin}/{location}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_answering_origin() {
        let base = "http://10.0.0.1:5000/v2/app/blobs/sha256:ab";
        assert_eq!(
            resolve(base, "https://s3.example/b/k?X-Amz-Signature=1"),
            "https://s3.example/b/k?X-Amz-Signature=1"
        );
        assert_eq!(resolve(base, "/b/k"), "http://10.0.0.1:5000/b/k");
        assert_eq!(resolve("http://h:1", "k"), "http://h:1/k");
    }

    #[test]
    fn only_redirect_statuses_are_followed() {
        for (code, followed) in [(307, true), (302, true), (200, false), (304, false)] {
            assert_eq!(is_redirect(StatusCode::from_u16(code).unwrap()), followed);
        }
    }
}
