//! `[blobs.s3]`: where the S3-compatible store is and how devices reach its blobs.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::ConfigError;

/// The `[blobs]` section: absent or without `s3`, blobs live on local disk only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobsSection {
    pub s3: Option<S3Config>,
}

/// An S3-compatible bucket the registry writes every blob through to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `http://host:port` or `https://host:port` of the store (path-style requests:
    /// `<endpoint>/<bucket>/<key>`). Devices fetch pre-signed URLs from this address too.
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key: String,
    /// The secret key inline, or `secret_key_file` naming a file that holds it.
    pub secret_key: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    /// How long a pre-signed URL handed to a device stays valid.
    #[serde(default = "default_presign_expiry")]
    pub presign_expiry_s: u64,
    /// Whether blob GETs answer 307 to a pre-signed URL (devices reach the store) or the
    /// controller streams the blob itself (the store is reachable only by controllers).
    #[serde(default)]
    pub redirect: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_presign_expiry() -> u64 {
    900
}

impl S3Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: &str| ConfigError::Invalid {
            field: format!("blobs.s3.{field}"),
            reason: reason.into(),
        };
        if !self.endpoint.starts_with("http://") && !self.endpoint.starts_with("https://") {
            return Err(invalid("endpoint", "must start with http:// or https://"));
        }
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(invalid("bucket", "must be a bucket name without '/'"));
        }
        if self.secret_key.is_some() == self.secret_key_file.is_some() {
            return Err(invalid(
                "secret_key",
                "set exactly one of secret_key and secret_key_file",
            ));
        }
        // SigV4 caps a pre-signed URL at seven days.
        if !(1..=604_800).contains(&self.presign_expiry_s) {
            return Err(invalid("presign_expiry_s", "must be 1 to 604800 seconds"));
        }
        Ok(())
    }

    /// The secret key, read from `secret_key_file` when given there (trailing newline cut).
    pub fn secret(&self) -> Result<String, ConfigError> {
        match (&self.secret_key, &self.secret_key_file) {
            (Some(key), _) => Ok(key.clone()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| text.trim_end().to_string())
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
            (None, None) => Err(ConfigError::Invalid {
                field: "blobs.s3.secret_key".into(),
                reason: "set secret_key or secret_key_file".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> S3Config {
        toml::from_str(
            "endpoint = \"http://127.0.0.1:7480\"\nbucket = \"blobs\"\naccess_key = \"a\"\nsecret_key = \"s\"\n",
        )
        .unwrap()
    }

    #[test]
    fn defaults_are_a_region_a_quarter_hour_and_streaming() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(
            (c.region.as_str(), c.presign_expiry_s, c.redirect),
            ("us-east-1", 900, false)
        );
    }

    #[test]
    fn exactly_one_secret_source_is_accepted() {
        let mut c = config();
        c.secret_key_file = Some("/k".into());
        assert!(c.validate().is_err());
        c.secret_key = None;
        c.secret_key_file = None;
        assert!(c.validate().is_err());
    }

    #[test]
    fn endpoints_and_expiries_are_checked() {
        let mut c = config();
        c.endpoint = "127.0.0.1:7480".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.presign_expiry_s = 0;
        assert!(c.validate().is_err());
    }
}
