//! `ObjectStoreError`: what went wrong talking to the S3-compatible store, named for the
//! operator (the credentials, the bucket, the store being down) with the cause kept.

use std::path::PathBuf;

/// A failed request to the object store. `step` names what the controller was doing
/// (`store blob`, `fetch blob`, `check bucket`), `key` the object.
#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    #[error("{step} {key}: object store {endpoint} is unreachable")]
    Unreachable {
        step: &'static str,
        key: String,
        endpoint: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error(
        "{step} {key}: object store refused the credentials of access key {access_key} \
         ({code}): check blobs.s3.access_key and the secret key"
    )]
    Credentials {
        step: &'static str,
        key: String,
        access_key: String,
        code: String,
    },
    #[error("{step} {key}: bucket {bucket} does not exist on {endpoint}")]
    BucketMissing {
        step: &'static str,
        key: String,
        bucket: String,
        endpoint: String,
    },
    #[error("{step} {key}: object store answered HTTP {status} {code}: {message}")]
    Refused {
        step: &'static str,
        key: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{step} {key}: the object store's answer broke off")]
    ReadAnswer {
        step: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} {key}: cannot use local file {path}")]
    LocalFile {
        step: &'static str,
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ObjectStoreError {
    /// Whether the store could not be reached at all (the registry then serves what the
    /// local cache holds).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// The `<Code>` and `<Message>` of an S3 error body (empty when absent: HEAD answers have
/// no body).
pub fn error_code(body: &str) -> (String, String) {
    let field = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        body.split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&close))
            .map(|(value, _)| value.trim().to_string())
            .unwrap_or_default()
    };
    (field("Code"), field("Message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_bodies_give_their_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code>\
                    <Message>gone</Message><BucketName>b</BucketName></Error>";
        assert_eq!(
            error_code(body),
            ("NoSuchBucket".to_string(), "gone".to_string())
        );
        assert_eq!(error_code(""), (String::new(), String::new()));
    }
}
