//! `UpstreamRef`: an image reference naming another registry, parsed by Docker's rules
//! (`nginx:1.27` is `docker.io/library/nginx:1.27`), and the repository its mirror gets in
//! the controller's registry. Pure: no I/O.

use crate::registry::{check_repository, check_tag, BlobDigest};

/// Docker Hub as image references name it; its API lives at [`DOCKER_HUB_API`].
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's distribution API answers (the name `docker.io` serves no API).
pub const DOCKER_HUB_API: &str = "https://registry-1.docker.io";
/// Mirrored repositories live under this prefix, so they never collide with pushed ones and
/// the mirror's name never starts with a host (`ImageRef` would read it as a registry).
pub const MIRROR_PREFIX: &str = "mirror";

/// A tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(BlobDigest),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(tag) => f.write_str(tag),
            Reference::Digest(digest) => f.write_str(digest.as_str()),
        }
    }
}

/// An image on another registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRef {
    /// `host[:port]` as the reference names it (`docker.io`, `ghcr.io`, `registry.lan:5000`).
    pub host: String,
    /// The repository on that registry (`library/nginx`).
    pub repository: String,
    pub reference: Reference,
}

/// Why a reference is not a pullable image name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an image reference: {reason}")]
pub struct ReferenceError {
    pub text: String,
    pub reason: &'static str,
}

/// Docker's rule: the first component is a registry host when it has a dot or a port or is
/// `localhost`, and there is a component after it.
pub fn names_host(text: &str) -> bool {
    match text.split_once('/') {
        Some((first, _)) => first.contains(['.', ':']) || first == "localhost",
        None => false,
    }
}

/// A registry host as logins and mirrors key it: lowercase, Docker Hub's aliases as `docker.io`.
pub fn canonical_host(host: &str) -> String {
    match host.to_ascii_lowercase().as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

impl UpstreamRef {
    /// Parses `[host[:port]/]repository[:tag][@sha256:hex]`; a short name is on Docker Hub,
    /// one component there means `library/`, and no tag means `latest`.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let bad = |reason| ReferenceError {
            text: text.to_string(),
            reason,
        };
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (
                name,
                Some(
                    BlobDigest::parse(digest)
                        .map_err(|_| bad("the digest is not sha256:<64 hex>"))?,
                ),
            ),
            None => (text, None),
        };
        let (host, path) = if names_host(name) {
            name.split_once('/').ok_or_else(|| bad("no repository"))?
        } else {
            (DOCKER_HUB, name)
        };
        // A tag is after the last `:` of the last component (the host may hold a port).
        let last = path.rsplit('/').next().unwrap_or(path);
        let (path, tag) = match last.rsplit_once(':') {
            Some((_, tag)) => (&path[..path.len() - tag.len() - 1], Some(tag)),
            None => (path, None),
        };
        let host = canonical_host(host);
        if host.is_empty()
            || host.contains(|c: char| !(c.is_ascii_alphanumeric() || ".-:".contains(c)))
        {
            return Err(bad("the registry host is not a host[:port]"));
        }
        let repository = if host == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        check_repository(&repository).map_err(|_| {
            bad("the repository must be lowercase [a-z0-9._-] components separated by /")
        })?;
        let reference = match (digest, tag) {
            (Some(digest), _) => Reference::Digest(digest),
            (None, Some(tag)) => {
                check_tag(tag).map_err(|_| bad("the tag must be [A-Za-z0-9_.-], at most 128"))?;
                Reference::Tag(tag.to_string())
            }
            (None, None) => Reference::Tag("latest".to_string()),
        };
        Ok(Self {
            host,
            repository,
            reference,
        })
    }

    /// The repository holding the mirror in the controller's registry:
    /// `mirror/<host with : as ->/<repository>` (a `:` is not allowed in repository names).
    pub fn mirror_repository(&self) -> String {
        format!(
            "{MIRROR_PREFIX}/{}/{}",
            self.host.replace(':', "-"),
            self.repository
        )
    }
}

impl std::fmt::Display for UpstreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reference {
            Reference::Tag(tag) => write!(f, "{}/{}:{tag}", self.host, self.repository),
            Reference::Digest(d) => write!(f, "{}/{}@{}", self.host, self.repository, d.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(host: &str, repository: &str, tag: &str) -> UpstreamRef {
        UpstreamRef {
            host: host.into(),
            repository: repository.into(),
            reference: Reference::Tag(tag.into()),
        }
    }

    #[test]
    fn references_parse_by_dockers_rules() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let cases = [
            ("nginx:1.27", tag("docker.io", "library/nginx", "1.27")),
            ("nginx", tag("docker.io", "library/nginx", "latest")),
            ("bitnami/redis:7", tag("docker.io", "bitnami/redis", "7")),
            ("docker.io/nginx:1", tag("docker.io", "library/nginx", "1")),
            (
                "index.docker.io/library/nginx:1",
                tag("docker.io", "library/nginx", "1"),
            ),
            ("ghcr.io/org/app:2", tag("ghcr.io", "org/app", "2")),
            ("localhost/app", tag("localhost", "app", "latest")),
            (
                "registry.lan:5000/x/y:v1.0",
                tag("registry.lan:5000", "x/y", "v1.0"),
            ),
            ("127.0.0.1:5000/app:1", tag("127.0.0.1:5000", "app", "1")),
        ];
        for (text, want) in cases {
            assert_eq!(UpstreamRef::parse(text).unwrap(), want, "{text}");
        }
        let pinned = UpstreamRef::parse(&format!("registry.lan:5000/x:1@{digest}")).unwrap();
        assert_eq!(pinned.host, "registry.lan:5000");
        assert_eq!(pinned.repository, "x");
        assert_eq!(
            pinned.reference,
            Reference::Digest(BlobDigest::parse(&digest).unwrap())
        );
    }

    #[test]
    fn bad_references_say_why() {
        for (text, why) in [
            ("Nginx:1", "lowercase"),
            ("nginx:", "tag"),
            ("nginx@sha256:abc", "digest"),
            ("ghcr.io/", "repository"),
            ("bad_host!.lan/x", "host"),
        ] {
            let err = UpstreamRef::parse(text).map(|r| r.to_string());
            let err = err.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.contains(why) || err.contains("not an image"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn mirrors_live_under_the_prefix_with_the_port_spelled_out() {
        let r = UpstreamRef::parse("registry.lan:5000/x/y:1").unwrap();
        assert_eq!(r.mirror_repository(), "mirror/registry.lan-5000/x/y");
        check_repository(&r.mirror_repository()).unwrap();
        let hub = UpstreamRef::parse("nginx:1.27").unwrap();
        assert_eq!(hub.mirror_repository(), "mirror/docker.io/library/nginx");
        assert_eq!(hub.to_string(), "docker.io/library/nginx:1.27");
        assert!(!names_host("nginx:1.27"));
        assert!(names_host("ghcr.io/org/app:2"));
    }
}
