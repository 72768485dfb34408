//! A tiny token service for docker-registry's `auth: token:` mode, as Docker Hub and GHCR
//! run theirs: `GET /token?service=…&scope=repository:NAME:pull` with basic auth answers
//! `{"token": JWT}`, an ES256 JWT whose `x5c` header carries the signing certificate, which
//! the registry finds in its `rootcertbundle`. Wrong or missing credentials get a 401.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rcgen::{CertificateParams, KeyPair, SigningKey as _};

pub const SERVICE: &str = "coracle-test-registry";
pub const ISSUER: &str = "coracle-test-issuer";

struct Signer {
    key: KeyPair,
    cert_der: Vec<u8>,
    user: String,
    password: String,
}

/// A running token service; stops with the test's runtime.
pub struct TokenServer {
    pub addr: SocketAddr,
    /// The PEM bundle docker-registry's `rootcertbundle` names.
    pub cert_bundle: PathBuf,
}

impl TokenServer {
    /// Starts on 127.0.0.1:0, accepting `user:password`; writes its certificate into `dir`.
    pub async fn start(dir: &Path, user: &str, password: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let cert_bundle = dir.join("token-ca.pem");
        std::fs::write(&cert_bundle, cert.pem()).unwrap();
        let signer = std::sync::Arc::new(Signer {
            key,
            cert_der: cert.der().to_vec(),
            user: user.into(),
            password: password.into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(signer);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, cert_bundle }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The `auth:` block of docker-registry's config.
    pub fn registry_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm(),
            self.cert_bundle.display()
        )
    }
}

async fn token(
    State(signer): State<std::sync::Arc<Signer>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", signer.user, signer.password));
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    if presented != Some(expected.as_str()) {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        return (StatusCode::UNAUTHORIZED, body).into_response();
    }
    let access: Vec<serde_json::Value> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, scope)| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
            }))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&signer.cert_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": signer.user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let der = signer.key.sign(signing_input.as_bytes()).unwrap();
    let jwt = format!("{signing_input}.{}", b64(&der_to_raw(&der)));
    axum::Json(serde_json::json!({"token": jwt, "access_token": jwt})).into_response()
}

/// ECDSA signature: DER `SEQUENCE { INTEGER r, INTEGER s }` → JWS's raw `r || s`, 32 bytes each.
fn der_to_raw(der: &[u8]) -> Vec<u8> {
    let mut pos = 2; // SEQUENCE tag and (short) length
    let mut out = Vec::with_capacity(64);
    for _ in 0..2 {
        assert_eq!(der[pos], 0x02, "INTEGER");
        let len = der[pos + 1] as usize;
        let int = &der[pos + 2..pos + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        pos += 2 + len;
    }
    out
}
