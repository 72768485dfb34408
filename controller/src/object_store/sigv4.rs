//! AWS Signature Version 4, the part S3-compatible stores need: the `Authorization` header of
//! a request and the query of a pre-signed URL. Pure: the caller passes the time, so the
//! published AWS test vectors pin the output (tests at the bottom).
//!
//! Paths are signed as given (S3 does not normalise or double-encode them); the caller
//! encodes each key segment with [`uri_encode`].

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

/// The hex SHA-256 of an empty payload (GET, HEAD and bucket requests).
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Who signs, for which region and service (`s3` for object stores).
#[derive(Clone)]
pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub service: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log line.
        f.debug_struct("Signer")
            .field("access_key", &self.access_key)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// One request to sign: the path as sent (already encoded), its query pairs (unencoded),
/// the headers to sign (any case; `host` and `x-amz-date` among them for a header
/// signature) and the hex SHA-256 of the payload (or `UNSIGNED-PAYLOAD`).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub payload_sha256: &'a str,
}

impl Signer {
    /// The `Authorization` header value of `request`, signed at `amz_date`
    /// (`YYYYMMDDTHHMMSSZ`, the request's `x-amz-date`).
    pub fn authorization(&self, request: &Request<'_>, amz_date: &str) -> String {
        let (signed_headers, signature) = self.signature(request, amz_date);
        format!(
            "{ALGORITHM} Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key,
            self.scope(amz_date)
        )
    }

    /// The query string of a pre-signed URL for `method` on `path` at `host`, valid for
    /// `expires_s` seconds from `amz_date`. Only `host` is signed, so a client may add
    /// headers (a `Range` to resume) without breaking the signature.
    pub fn presigned_query(
        &self,
        method: &str,
        host: &str,
        path: &str,
        amz_date: &str,
        expires_s: u64,
    ) -> String {
        let query = vec![
            ("X-Amz-Algorithm".to_string(), ALGORITHM.to_string()),
            (
                "X-Amz-Credential".to_string(),
                format!("{}/{}", self.access_key, self.scope(amz_date)),
            ),
            ("X-Amz-Date".to_string(), amz_date.to_string()),
            ("X-Amz-Expires".to_string(), expires_s.to_string()),
            ("X-Amz-SignedHeaders".to_string(), "host".to_string()),
        ];
        let headers = [("host".to_string(), host.to_string())];
        let request = Request {
            method,
            path,
            query: &query,
            headers: &headers,
            payload_sha256: "UNSIGNED-PAYLOAD",
        };
        let (_, signature) = self.signature(&request, amz_date);
        format!("{}&X-Amz-Signature={signature}", canonical_query(&query))
    }

    fn scope(&self, amz_date: &str) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            date_of(amz_date),
            self.region,
            self.service
        )
    }

    /// (signed header names, hex signature).
    fn signature(&self, request: &Request<'_>, amz_date: &str) -> (String, String) {
        let (canonical, signed_headers) = canonical_request(request);
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{}\n{}",
            self.scope(amz_date),
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date_of(amz_date).as_bytes(),
        );
        for part in [&self.region, &self.service, "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        (
            signed_headers,
            hex::encode(hmac(&key, string_to_sign.as_bytes())),
        )
    }
}

/// (canonical request, signed header names).
fn canonical_request(request: &Request<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| {
            // Sequential spaces inside a value count as one (the spec's trimall).
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            (name.to_ascii_lowercase(), value)
        })
        .collect();
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    let signed = signed.join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        request.method,
        request.path,
        canonical_query(request.query),
        request.payload_sha256
    );
    (canonical, signed)
}

/// Query pairs encoded and sorted by name, then value, as SigV4 orders them.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but the unreserved characters (and `/` unless `slash`).
pub fn uri_encode(text: &str, slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn date_of(amz_date: &str) -> &str {
    amz_date.get(..8).unwrap_or(amz_date)
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time (UTC), the form SigV4 signs.
pub fn amz_date(unix_s: u64) -> String {
    let days = unix_s / 86_400;
    let secs = unix_s % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials of AWS's SigV4 test suite (`aws-sig-v4-test-suite`).
    fn suite() -> Signer {
        Signer {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            service: "service".into(),
        }
    }

    /// The credentials of the S3 documentation's signing examples.
    fn s3_docs() -> Signer {
        Signer {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
        }
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn suite_vectors_sign_as_published() {
        let headers = pairs(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let cases = [
            (
                "get-vanilla",
                "GET",
                vec![],
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "get-vanilla-query-order-key-case",
                "GET",
                pairs(&[("Param2", "value2"), ("Param1", "value1")]),
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "post-vanilla",
                "POST",
                vec![],
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        ];
        for (name, method, query, signature) in cases {
            let request = Request {
                method,
                path: "/",
                query: &query,
                headers: &headers,
                payload_sha256: EMPTY_PAYLOAD_SHA256,
            };
            assert_eq!(
                suite().authorization(&request, "20150830T123600Z"),
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/\
                     aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn s3_get_object_with_range_signs_as_documented() {
        // "Example: GET Object" of the S3 API reference (sig-v4-header-based-auth).
        let headers = pairs(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let request = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_PAYLOAD_SHA256,
        };
        assert!(s3_docs()
            .authorization(&request, "20130524T000000Z")
            .ends_with(
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
                 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ));
    }

    #[test]
    fn s3_presigned_url_signs_as_documented() {
        // "Example: a pre-signed URL" of the S3 API reference (sigv4-query-string-auth).
        let query = s3_docs().presigned_query(
            "GET",
            "examplebucket.s3.amazonaws.com",
            "/test.txt",
            "20130524T000000Z",
            86_400,
        );
        assert_eq!(
            query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn unix_times_format_as_amz_dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn keys_encode_all_but_unreserved_characters() {
        assert_eq!(uri_encode("blobs/sha256/ab", false), "blobs/sha256/ab");
        assert_eq!(uri_encode("a b/c", true), "a%20b%2Fc");
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        assert!(!format!("{:?}", suite()).contains("EXAMPLEKEY"));
    }
}
