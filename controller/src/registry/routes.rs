//! HTTP handling of the distribution API: one fallback handler parses the path (repository
//! names contain `/`) and dispatches by (method, route).

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;

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
    Delta { name: String, target: String },
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

fn query_digest(uri: &Uri) -> Option<String> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("digest="))
        .map(|d| d.replace("%3A", ":").replace("%3a", ":"))
}

/// The admin token may do anything; the devices' pull token only reads (GET, HEAD).
fn authorized(registry: &Registry, method: &Method, headers: &HeaderMap) -> bool {
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

async fn handle(
    State(registry): State<Registry>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !authorized(&registry, &method, &headers) {
        return RegistryError::Unauthorized.into_response();
    }
    match dispatch(&registry, method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

fn with_headers(status: StatusCode, pairs: &[(&'static str, String)], body: Body) -> Response {
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
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let api_version = (
        "Docker-Distribution-API-Version",
        "registry/2.0".to_string(),
    );
    match (method, parse_route(uri.path())?) {
        (Method::GET | Method::HEAD, Route::Ping) => Ok(with_headers(
            StatusCode::OK,
            &[api_version],
            Body::from("{}"),
        )),
        (Method::GET, Route::Catalog) => {
            let repositories = registry.repositories()?;
            Ok(axum::Json(serde_json::json!({ "repositories": repositories })).into_response())
        }
        (Method::GET, Route::Tags { name }) => {
            let tags = registry.tags(&name)?;
            Ok(axum::Json(serde_json::json!({ "name": name, "tags": tags })).into_response())
        }
        (m @ (Method::GET | Method::HEAD), Route::Blob { digest, .. }) => {
            let digest = BlobDigest::parse(&digest)?;
            serve_blob(registry, &digest, headers, m == Method::HEAD).await
        }
        (m @ (Method::GET | Method::HEAD), Route::Delta { name, target }) => {
            serve_delta(registry, &name, &target, uri, headers, m == Method::HEAD).await
        }
        (Method::POST, Route::Uploads { name }) => {
            let id = registry.blobs.start_upload().await?;
            if let Some(digest) = query_digest(uri) {
                let digest = BlobDigest::parse(&digest)?;
                registry.blobs.append(&id, body).await?;
                registry.blobs.finish(&id, &digest).await?;
                return Ok(blob_created(&name, &digest));
            }
            Ok(upload_status(StatusCode::ACCEPTED, &name, &id, 0))
        }
        (Method::PATCH, Route::Upload { name, id }) => {
            let len = registry.blobs.append(&id, body).await?;
            Ok(upload_status(StatusCode::ACCEPTED, &name, &id, len))
        }
        (Method::GET, Route::Upload { name, id }) => {
            let len = registry.blobs.upload_len(&id).await?;
            Ok(upload_status(StatusCode::NO_CONTENT, &name, &id, len))
        }
        (Method::PUT, Route::Upload { name, id }) => {
            let digest = query_digest(uri).ok_or_else(|| RegistryError::DigestInvalid {
                digest: String::new(),
            })?;
            let digest = BlobDigest::parse(&digest)?;
            registry.blobs.append(&id, body).await?;
            registry.blobs.finish(&id, &digest).await?;
            Ok(blob_created(&name, &digest))
        }
        (Method::PUT, Route::Manifest { name, reference }) => {
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
            let digest = registry
                .put_manifest(&name, &reference, &content_type, &bytes)
                .await?;
            Ok(with_headers(
                StatusCode::CREATED,
                &[
                    (
                        "Location",
                        format!("/v2/{name}/manifests/{}", digest.as_str()),
                    ),
                    ("Docker-Content-Digest", digest.as_str().to_string()),
                ],
                Body::empty(),
            ))
        }
        (m @ (Method::GET | Method::HEAD), Route::Manifest { name, reference }) => {
            let (digest, content_type) = registry.resolve(&name, &reference)?;
            let path = registry.blobs.path(&digest);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|source| RegistryError::Io {
                    step: "read manifest",
                    path,
                    source,
                })?;
            let len = bytes.len().to_string();
            let body = if m == Method::HEAD {
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
        _ => Err(RegistryError::RouteUnknown),
    }
}

/// Answers a delta request with the delta blob's digest and size (HEAD) or content (GET),
/// or 404 so the agent pulls the full layer.
async fn serve_delta(
    registry: &Registry,
    name: &str,
    target: &str,
    uri: &Uri,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, RegistryError> {
    let target = target.parse::<coracle_images::Digest>().map_err(|_| {
        RegistryError::DeltaRequestInvalid {
            reason: format!("target {target:?} is not a sha256 diff_id"),
        }
    })?;
    let have = super::deltas::parse_have(uri.query())?;
    match registry.delta_for(name, &target, have).await? {
        Some((digest, _)) => serve_blob(registry, &digest, headers, head).await,
        None => Ok(with_headers(StatusCode::NOT_FOUND, &[], Body::empty())),
    }
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

/// Parses `bytes=start-[end]` against a blob of `size` bytes into an inclusive range.
fn parse_range(value: &str, size: u64) -> Result<(u64, u64), RegistryError> {
    let invalid = || RegistryError::RangeInvalid {
        range: value.into(),
    };
    let spec = value.strip_prefix("bytes=").ok_or_else(invalid)?;
    let (start, end) = spec.split_once('-').ok_or_else(invalid)?;
    let start: u64 = start.parse().map_err(|_| invalid())?;
    let end: u64 = if end.is_empty() {
        size.saturating_sub(1)
    } else {
        end.parse().map_err(|_| invalid())?
    };
    if start > end || start >= size {
        return Err(invalid());
    }
    Ok((start, end.min(size - 1)))
}

async fn serve_blob(
    registry: &Registry,
    digest: &BlobDigest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, RegistryError> {
    let size = registry
        .blobs
        .size(digest)
        .ok_or_else(|| RegistryError::BlobUnknown {
            digest: digest.as_str().into(),
        })?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size))
        .transpose()?;
    let (status, start, end) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        None => (StatusCode::OK, 0, size.saturating_sub(1)),
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let mut pairs = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Content-Length", len.to_string()),
        ("Docker-Content-Digest", digest.as_str().to_string()),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    if status == StatusCode::PARTIAL_CONTENT {
        pairs.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
    }
    if head {
        return Ok(with_headers(status, &pairs, Body::empty()));
    }
    let path: PathBuf = registry.blobs.path(digest);
    let bytes = read_range(path, start, len).await?;
    Ok(with_headers(status, &pairs, Body::from(bytes)))
}

async fn read_range(path: PathBuf, start: u64, len: u64) -> Result<Vec<u8>, RegistryError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |step| {
        let path = path.clone();
        move |source| RegistryError::Io { step, path, source }
    };
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(io("open blob"))?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(io("seek blob"))?;
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len)
        .read_to_end(&mut out)
        .await
        .map_err(io("read blob"))?;
    Ok(out)
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
        assert!(parse_route("/v3/x").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 9));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=90-200", 100).unwrap(), (90, 99));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=5-1", 100).is_err());
        assert!(parse_range("items=0-1", 100).is_err());
    }
}
