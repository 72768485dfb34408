//! What a test registry needs beyond plain HTTP: a private CA with a certificate for
//! 127.0.0.1 ([`RegistryTls`]), and a token service for docker-registry's `auth: token:` mode
//! ([`TokenServer`]), as Docker Hub and GHCR run theirs: `GET /token?service=…&scope=…` with
//! basic auth answers `{"token": JWT}`, an ES256 JWT whose `x5c` header carries the signing
//! certificate, which the registry finds in its `rootcertbundle`. Wrong or missing
//! credentials get a 401. The service is a plain thread, so sync and async tests share it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType, SigningKey as _};

pub const SERVICE: &str = "coracle-test-registry";
pub const ISSUER: &str = "coracle-test-issuer";

/// Why the CA, the certificates or the token service could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("generate a test certificate")]
    Certificate(#[from] rcgen::Error),
    #[error("write or serve {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AuthSetupError {
    let what = what.into();
    move |source| AuthSetupError::Io { what, source }
}

/// PEM files: a private CA, and a certificate for 127.0.0.1 signed by it with its key.
#[derive(Debug, Clone)]
pub struct RegistryTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl RegistryTls {
    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
    pub fn create(dir: &Path) -> Result<Self, AuthSetupError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))?;
        let files = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        for (path, pem) in [
            (&files.ca, ca_cert.pem()),
            (&files.cert, cert.pem()),
            (&files.key, key.serialize_pem()),
        ] {
            std::fs::write(path, pem).map_err(io(path.display().to_string()))?;
        }
        Ok(files)
    }

    /// The (certificate, key) pair `RegistryOptions::tls` takes.
    pub fn server_pair(&self) -> (PathBuf, PathBuf) {
        (self.cert.clone(), self.key.clone())
    }
}

#[derive(Debug)]
struct Signer {
    key: KeyPair,
    cert_der: Vec<u8>,
    basic: String,
}

/// A running token service on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct TokenServer {
    pub addr: SocketAddr,
    /// The PEM bundle docker-registry's `rootcertbundle` names.
    pub cert_bundle: PathBuf,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    /// Starts on a free port, accepting `user:password`; writes its certificate into `dir`.
    pub fn start(dir: &Path, user: &str, password: &str) -> Result<Self, AuthSetupError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        let cert_bundle = dir.join("token-ca.pem");
        std::fs::write(&cert_bundle, cert.pem()).map_err(io("the token certificate"))?;
        let signer = Signer {
            key,
            cert_der: cert.der().to_vec(),
            basic: base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
        };
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("the token listener"))?;
        let addr = listener.local_addr().map_err(io("the token listener"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = answer(&signer, stream);
                }
            }
        });
        Ok(Self {
            addr,
            cert_bundle,
            stop,
        })
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The `auth:` block of docker-registry's config (`RegistryOptions::auth_yaml`).
    pub fn registry_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm(),
            self.cert_bundle.display()
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// Reads one request and writes its answer; the connection then closes.
fn answer(signer: &Signer, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut chunk = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 << 10 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&request);
    let target = text.split_whitespace().nth(1).unwrap_or_default();
    let presented = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().strip_prefix("Basic ").map(str::to_string))?
    });
    let (status, body) = if presented.as_deref() == Some(signer.basic.as_str()) {
        ("200 OK", token_body(signer, target))
    } else {
        (
            "401 Unauthorized",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `{"token": JWT}` granting the scopes the request names.
fn token_body(signer: &Signer, target: &str) -> String {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .filter_map(|(_, scope)| {
            let scope = percent_decode(scope);
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
            }))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&signer.cert_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "test", "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = signer
        .key
        .sign(signing_input.as_bytes())
        .map(|der| der_to_raw(&der))
        .unwrap_or_default();
    let jwt = format!("{signing_input}.{}", b64(&signature));
    serde_json::json!({"token": jwt, "access_token": jwt}).to_string()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// ECDSA signature: DER `SEQUENCE { INTEGER r, INTEGER s }` → JWS's raw `r || s`, 32 bytes
/// each. rcgen's P-256 signatures are short-form DER.
fn der_to_raw(der: &[u8]) -> Vec<u8> {
    let mut pos = 2; // SEQUENCE tag and (short) length
    let mut out = Vec::with_capacity(64);
    for _ in 0..2 {
        let Some(&len) = der.get(pos + 1) else {
            return Vec::new();
        };
        let Some(int) = der.get(pos + 2..pos + 2 + len as usize) else {
            return Vec::new();
        };
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        pos += 2 + len as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_percent_decoded() {
        assert_eq!(
            percent_decode("repository%3Afloor%2Fapp%3Apull"),
            "repository:floor/app:pull"
        );
    }
}
