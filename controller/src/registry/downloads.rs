//! Reading blobs and deltas: whole, as a byte `Range`, or only their headers (HEAD).

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::routes::with_headers;
use super::{BlobDigest, Registry, RegistryError};

/// Answers a delta request with the delta blob's digest and size (HEAD) or content (GET),
/// or 404 so the agent pulls the full layer.
pub(super) async fn serve_delta(
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
    let have = super::delta::parse_have(uri.query())?;
    match registry.deltas.for_request(name, &target, have).await? {
        Some((digest, _)) => serve_blob(registry, &BlobDigest::from(digest), headers, head).await,
        None => Ok(with_headers(StatusCode::NOT_FOUND, &[], Body::empty())),
    }
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

pub(super) async fn serve_blob(
    registry: &Registry,
    digest: &BlobDigest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, RegistryError> {
    let unknown = || RegistryError::BlobUnknown {
        digest: digest.as_str().into(),
    };
    if !head {
        if let Some(response) = redirect(registry, digest).await? {
            return Ok(response);
        }
    }
    // A HEAD only needs the size; a GET needs the bytes here (fetched from the bucket
    // into the local cache when this controller has not seen the blob yet).
    let size = if head {
        registry.blobs.stat(digest).await?
    } else {
        registry.blobs.ensure_local(digest).await?
    }
    .ok_or_else(unknown)?;
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

/// With `[blobs.s3] redirect = true`, a 307 to a pre-signed URL of the blob in the bucket,
/// so the bytes go from the store to the client directly (the client sends no registry
/// credentials there: the URL carries its own). `None` (stream it here) when the bucket
/// lacks the blob (stored before the bucket was configured, not yet backfilled) or cannot
/// be reached while the local cache holds the blob.
async fn redirect(
    registry: &Registry,
    digest: &BlobDigest,
) -> Result<Option<Response>, RegistryError> {
    let Some(remote) = registry.blobs.remote.clone().filter(|r| r.redirects()) else {
        return Ok(None);
    };
    let blob = digest.digest();
    let lookup = remote.clone();
    let in_bucket = tokio::task::spawn_blocking(move || lookup.blob_size(&blob))
        .await
        .map_err(|_| RegistryError::BlobUnknown {
            digest: digest.as_str().into(),
        })?;
    match in_bucket {
        Ok(Some(_)) => {
            let pairs = [
                ("Location", remote.presigned_url(&blob)),
                ("Docker-Content-Digest", digest.as_str().to_string()),
            ];
            Ok(Some(with_headers(
                StatusCode::TEMPORARY_REDIRECT,
                &pairs,
                Body::empty(),
            )))
        }
        Ok(None) => Ok(None),
        Err(err) if registry.blobs.size(digest).is_some() => {
            remote.note_fallback(&err);
            Ok(None)
        }
        Err(err) => Err(err),
    }
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
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 9));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=90-200", 100).unwrap(), (90, 99));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=5-1", 100).is_err());
        assert!(parse_range("items=0-1", 100).is_err());
    }
}
