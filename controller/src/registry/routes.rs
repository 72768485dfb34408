//! HTTP handling of the distribution API: one fallback handler parses the path (repository
//! names contain `/`) and dispatches by (method, route). Handlers parse, call the registry,
//! and serialize; errors become responses in `error.rs` only.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::auth::authorize;
use super::downloads::{serve_blob, serve_delta};
use super::referrers::{referrers_index, INDEX_MEDIA_TYPE};
use super::tag_list::tag_page;
use super::{check_repository, BlobDigest, Registry, RegistryError};

/// Largest manifest accepted (they are small JSON documents).
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
const DEFAULT_MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The registry's routes under `/v2/`.
pub fn router(registry: Registry) -> Router {
    Router::new().fallback(handle).with_state(registry)
}

/// A parsed registry path.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Ping,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    Uploads { name: String },
    Upload { name: String, id: String },
    Referrers { name: String, digest: String },
    Delta { name: String, target: String },
}

impl Route {
    /// The repository the route addresses: `None` for the `/v2/` ping, `""` for the
    /// catalog (which lists every repository).
    fn repository(&self) -> Option<&str> {
        match self {
            Route::Ping => None,
            Route::Catalog => Some(""),
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Uploads { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. }
            | Route::Delta { name, .. } => Some(name),
        }
    }
}

fn parse_route(path: &str) -> Result<Route, RegistryError> {
    let rest = path
        .strip_prefix("/v2")
        .ok_or(RegistryError::RouteUnknown)?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Route::Ping);
    }
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let named = |name: &str| check_repository(name).map(|()| name.to_string());
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags { name: named(name)? });
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads")
        .or_else(|| rest.strip_suffix("/blobs/uploads/"))
    {
        return Ok(Route::Uploads { name: named(name)? });
    }
    if let Some((name, target)) = rest.rsplit_once("/coracle/deltas/") {
        return Ok(Route::Delta {
            name: named(name)?,
            target: target.to_string(),
        });
    }
    // The digest is the last path segment: a repository may itself contain `referrers`.
    if let Some((name, digest)) = rest
        .rsplit_once("/referrers/")
        .filter(|(_, digest)| !digest.contains('/'))
    {
        return Ok(Route::Referrers {
            name: named(name)?,
            digest: digest.to_string(),
        });
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        return Ok(Route::Upload {
            name: named(name)?,
            id: id.to_string(),
        });
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Ok(Route::Blob {
            name: named(name)?,
            digest: digest.to_string(),
        });
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Ok(Route::Manifest {
            name: named(name)?,
            reference: reference.to_string(),
        });
    }
    Err(RegistryError::RouteUnknown)
}

/// The query parameters of a request (percent-decoded).
fn query(uri: &Uri) -> Result<HashMap<String, String>, RegistryError> {
    Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|_| RegistryError::QueryInvalid {
            name: "query",
            value: uri.query().unwrap_or_default().into(),
        })
}

async fn handle(
    State(registry): State<Registry>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let route = parse_route(uri.path());
    // A path that does not parse names no repository a device may read: only the admin
    // gets as far as its 404/400.
    let repository = match &route {
        Ok(route) => route.repository(),
        Err(_) => Some("\0"),
    };
    let actor = match authorize(&registry, &method, repository, &headers) {
        Ok(actor) => actor,
        Err(refused) => return refused.into_response(),
    };
    let audited = route
        .as_ref()
        .ok()
        .and_then(|route| audited(&method, route));
    let dispatched = match route {
        Ok(route) => dispatch(&registry, method, route, &uri, &headers, body).await,
        Err(err) => Err(err),
    };
    match dispatched {
        Ok(response) => {
            if let (Some((action, target)), Some(actor)) = (audited, actor) {
                record(&registry, &actor, action, &target, &response);
            }
            response
        }
        Err(err) => err.into_response(),
    }
}

/// The audit action and target of a request that changes the registry.
fn audited(method: &Method, route: &Route) -> Option<(&'static str, String)> {
    match (method, route) {
        (&Method::PUT, Route::Manifest { name, reference }) => {
            Some(("registry.push", format!("{name}:{reference}")))
        }
        (&Method::DELETE, Route::Manifest { name, reference }) => {
            Some(("registry.delete", format!("{name}:{reference}")))
        }
        (&Method::DELETE, Route::Blob { name, digest }) => {
            Some(("registry.delete_blob", format!("{name}@{digest}")))
        }
        _ => None,
    }
}

/// Appends a successful push or delete to the audit log, with the stored digest.
fn record(registry: &Registry, actor: &str, action: &str, target: &str, response: &Response) {
    let Some(audit) = &registry.audit else {
        return;
    };
    let detail = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(|digest| format!("digest {digest}"))
        .unwrap_or_default();
    if let Err(err) = audit.record(actor, action, target, &detail) {
        tracing::error!(actor, action, target, error = %err, "cannot write the audit log");
    }
}

pub(super) fn with_headers(
    status: StatusCode,
    pairs: &[(&'static str, String)],
    body: Body,
) -> Response {
    let mut response = (status, body).into_response();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}

async fn dispatch(
    registry: &Registry,
    method: Method,
    route: Route,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let api_version = (
        "Docker-Distribution-API-Version",
        "registry/2.0".to_string(),
    );
    let query = query(uri)?;
    match (method, route) {
        (Method::GET | Method::HEAD, Route::Ping) => Ok(with_headers(
            StatusCode::OK,
            &[api_version],
            Body::from("{}"),
        )),
        (Method::GET, Route::Catalog) => {
            let repositories = registry.repositories()?;
            Ok(axum::Json(serde_json::json!({ "repositories": repositories })).into_response())
        }
        (Method::GET, Route::Tags { name }) => list_tags(registry, &name, &query),
        (Method::GET, Route::Referrers { name, digest }) => {
            list_referrers(registry, &name, &digest, &query)
        }
        (m @ (Method::GET | Method::HEAD), Route::Blob { digest, .. }) => {
            let digest = BlobDigest::parse(&digest)?;
            serve_blob(registry, &digest, headers, m == Method::HEAD).await
        }
        (Method::DELETE, Route::Blob { digest, .. }) => {
            let digest = BlobDigest::parse(&digest)?;
            registry.blobs.delete(&digest).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (m @ (Method::GET | Method::HEAD), Route::Delta { name, target }) => {
            serve_delta(registry, &name, &target, uri, headers, m == Method::HEAD).await
        }
        (Method::POST, Route::Uploads { name }) => {
            start_upload(registry, &name, &query, headers, body).await
        }
        (Method::PATCH, Route::Upload { name, id }) => {
            append_chunk(registry, &name, &id, headers, body).await
        }
        (Method::GET, Route::Upload { name, id }) => {
            let len = registry.blobs.upload_len(&id).await?;
            Ok(upload_status(StatusCode::NO_CONTENT, &name, &id, len))
        }
        (Method::PUT, Route::Upload { name, id }) => {
            finish_upload(registry, &name, &id, &query, headers, body).await
        }
        (Method::PUT, Route::Manifest { name, reference }) => {
            put_manifest(registry, &name, &reference, headers, body).await
        }
        (m @ (Method::GET | Method::HEAD), Route::Manifest { name, reference }) => {
            get_manifest(registry, &name, &reference, m == Method::HEAD).await
        }
        (Method::DELETE, Route::Manifest { name, reference }) => {
            registry.delete_manifest(&name, &reference)?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (method, _) => Err(RegistryError::MethodUnsupported {
            method: method.to_string(),
            path: uri.path().into(),
        }),
    }
}

/// The referrers of `digest` as an index, filtered by `?artifactType=` when given.
fn list_referrers(
    registry: &Registry,
    name: &str,
    digest: &str,
    query: &HashMap<String, String>,
) -> Result<Response, RegistryError> {
    let digest = BlobDigest::parse(digest)?;
    let artifact_type = query.get("artifactType").map(String::as_str);
    let descriptors = registry.referrers(name, &digest, artifact_type)?;
    let mut pairs = vec![("Content-Type", INDEX_MEDIA_TYPE.to_string())];
    if artifact_type.is_some() {
        pairs.push(("OCI-Filters-Applied", "artifactType".to_string()));
    }
    let index = referrers_index(descriptors).to_string();
    Ok(with_headers(StatusCode::OK, &pairs, Body::from(index)))
}

/// PATCH: one more chunk of an upload session.
async fn append_chunk(
    registry: &Registry,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let start = content_range_start(headers)?;
    let len = registry.blobs.append(id, start, body).await?;
    Ok(upload_status(StatusCode::ACCEPTED, name, id, len))
}

/// PUT: the last chunk (maybe empty) and the digest the whole blob must have.
async fn finish_upload(
    registry: &Registry,
    name: &str,
    id: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let digest = claimed_digest(query)?;
    let start = content_range_start(headers)?;
    registry.blobs.append(id, start, body).await?;
    registry.blobs.finish(id, &digest).await?;
    Ok(blob_created(name, &digest))
}

fn claimed_digest(query: &HashMap<String, String>) -> Result<BlobDigest, RegistryError> {
    let digest = query
        .get("digest")
        .ok_or_else(|| RegistryError::DigestInvalid {
            digest: String::new(),
        })?;
    BlobDigest::parse(digest)
}

/// Where a chunk says it starts: `Content-Range: <start>-<end>` (the spec's form, also
/// accepted with a `bytes ` prefix). `None` when absent (a client streaming one body).
fn content_range_start(headers: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    let invalid = || RegistryError::RangeInvalid { range: text.into() };
    let spec = text.strip_prefix("bytes ").unwrap_or(text).trim();
    let (start, end) = spec.split_once('-').ok_or_else(invalid)?;
    let start: u64 = start.parse().map_err(|_| invalid())?;
    let end: u64 = end
        .split('/')
        .next()
        .unwrap_or(end)
        .parse()
        .map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    Ok(Some(start))
}

/// POST to the uploads: a cross-repository mount of a blob the store holds (201), a
/// monolithic upload with `?digest=` (201), or a new session (202).
async fn start_upload(
    registry: &Registry,
    name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    if let (Some(mount), Some(_from)) = (query.get("mount"), query.get("from")) {
        // Blobs are stored once for all repositories, so a mount is a lookup.
        let digest = BlobDigest::parse(mount)?;
        if registry.blobs.stat(&digest).await?.is_some() {
            return Ok(blob_created(name, &digest));
        }
    }
    let id = registry.blobs.start_upload().await?;
    if query.contains_key("digest") {
        let digest = claimed_digest(query)?;
        registry
            .blobs
            .append(&id, content_range_start(headers)?, body)
            .await?;
        registry.blobs.finish(&id, &digest).await?;
        return Ok(blob_created(name, &digest));
    }
    Ok(upload_status(StatusCode::ACCEPTED, name, &id, 0))
}

/// A page of the tag list (`n`, `last`), with a `Link` to the next page when more follow.
fn list_tags(
    registry: &Registry,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response, RegistryError> {
    let n = query
        .get("n")
        .map(|n| {
            n.parse::<usize>().map_err(|_| RegistryError::QueryInvalid {
                name: "n",
                value: n.clone(),
            })
        })
        .transpose()?;
    let tags = registry.tags(name)?;
    let page = tag_page(&tags, n, query.get("last").map(String::as_str));
    let mut response =
        axum::Json(serde_json::json!({ "name": name, "tags": page.tags })).into_response();
    if let (Some(n), Some(last)) = (n, page.next_after) {
        let link = format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\"");
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

async fn put_manifest(
    registry: &Registry,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(DEFAULT_MANIFEST_TYPE)
        .to_string();
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES)
        .await
        .map_err(|source| RegistryError::Body {
            source: source.into(),
        })?;
    let stored = registry
        .put_manifest(name, reference, &content_type, &bytes)
        .await?;
    let digest = stored.digest.as_str();
    let mut pairs = vec![
        ("Location", format!("/v2/{name}/manifests/{digest}")),
        ("Docker-Content-Digest", digest.to_string()),
    ];
    if let Some(subject) = stored.subject {
        pairs.push(("OCI-Subject", subject.as_str().to_string()));
    }
    Ok(with_headers(StatusCode::CREATED, &pairs, Body::empty()))
}

async fn get_manifest(
    registry: &Registry,
    name: &str,
    reference: &str,
    head: bool,
) -> Result<Response, RegistryError> {
    registry.refresh_entries(name, reference).await;
    let (digest, content_type) = registry.resolve(name, reference)?;
    let path = registry.blobs.path(&digest);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|source| RegistryError::Io {
            step: "read manifest",
            path,
            source,
        })?;
    let len = bytes.len().to_string();
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    Ok(with_headers(
        StatusCode::OK,
        &[
            ("Content-Type", content_type),
            ("Content-Length", len),
            ("Docker-Content-Digest", digest.as_str().to_string()),
        ],
        body,
    ))
}

fn blob_created(name: &str, digest: &BlobDigest) -> Response {
    with_headers(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{name}/blobs/{}", digest.as_str())),
            ("Docker-Content-Digest", digest.as_str().to_string()),
        ],
        Body::empty(),
    )
}

fn upload_status(status: StatusCode, name: &str, id: &str, len: u64) -> Response {
    let range = if len == 0 {
        "0-0".to_string()
    } else {
        format!("0-{}", len - 1)
    };
    with_headers(
        status,
        &[
            ("Location", format!("/v2/{name}/blobs/uploads/{id}")),
            ("Range", range),
            ("Docker-Upload-UUID", id.to_string()),
        ],
        Body::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_to_routes() {
        assert_eq!(parse_route("/v2/").unwrap(), Route::Ping);
        assert_eq!(parse_route("/v2/_catalog").unwrap(), Route::Catalog);
        assert_eq!(
            parse_route("/v2/library/app/manifests/1").unwrap(),
            Route::Manifest {
                name: "library/app".into(),
                reference: "1".into()
            }
        );
        assert_eq!(
            parse_route("/v2/a/b/blobs/uploads/").unwrap(),
            Route::Uploads { name: "a/b".into() }
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/ff00").unwrap(),
            Route::Upload {
                name: "a".into(),
                id: "ff00".into()
            }
        );
        assert!(matches!(
            parse_route("/v2/A/tags/list"),
            Err(RegistryError::NameInvalid { .. })
        ));
        assert_eq!(
            parse_route("/v2/a/referrers/sha256:00").unwrap(),
            Route::Referrers {
                name: "a".into(),
                digest: "sha256:00".into()
            }
        );
        assert_eq!(
            parse_route("/v2/a/referrers/b/manifests/1").unwrap(),
            Route::Manifest {
                name: "a/referrers/b".into(),
                reference: "1".into()
            }
        );
        assert!(parse_route("/v3/x").is_err());
    }
}
