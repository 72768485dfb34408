//! The controller's TLS server side, shared by every listener that speaks TLS: the embedded
//! broker's device port (`broker::tls_front`) and the API and registry when they serve
//! HTTPS (`http`). All of them present the one certificate `Secrets` issues from the
//! controller CA at every start (`broker.pem`/`broker.key` in the data dir), so devices
//! verify the registry with the CA their bootstrap file carries, as they verify the broker.
//!
//! `acceptor` loads the certificate chain and key once at start; `handshake` is a server
//! handshake bounded in time, so a client that connects and never finishes its ClientHello
//! holds its connection slot for at most that long.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The protocol name the broker's TLS port offers (ALPN).
pub const ALPN_MQTT: &[u8] = b"mqtt";
/// The protocol name the HTTPS listeners offer: HTTP/1.1 only (no HTTP/2 server here).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why the TLS server settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the controller's TLS {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the controller's TLS certificate file {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("the controller's TLS key file {path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("cannot build TLS server settings from {cert} and its key")]
    Build {
        cert: PathBuf,
        #[source]
        source: tokio_rustls::rustls::Error,
    },
}

/// Why one client's handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed")]
    Failed(#[source] std::io::Error),
    #[error("no TLS handshake within {}s", .0.as_secs())]
    TimedOut(Duration),
}

/// A TLS acceptor presenting the certificate chain in `cert` with the key in `key`,
/// offering the `alpn` protocols; no client certificates.
pub fn acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read("certificate", cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_pem = read("key", key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: key.to_path_buf(),
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|source| TlsError::Build {
            cert: cert.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The server side of a handshake on `stream`, given at most `timeout`.
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    stream: IO,
    timeout: Duration,
) -> Result<TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => Err(HandshakeError::Failed(err)),
        Err(_) => Err(HandshakeError::TimedOut(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(result: Result<TlsAcceptor, TlsError>) -> TlsError {
        match result {
            Ok(_) => panic!("an acceptor was built"),
            Err(err) => err,
        }
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("broker.pem");
        let key = dir.path().join("broker.key");
        let err = error_of(acceptor(&cert, &key, &[ALPN_HTTP1]));
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("broker.pem"), "{err}");
        std::fs::write(&cert, "not pem").unwrap();
        let err = error_of(acceptor(&cert, &key, &[ALPN_HTTP1]));
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn the_controller_certificate_builds_an_acceptor() {
        let dir = tempfile::tempdir().unwrap();
        let data = crate::datadir::DataDir::open(dir.path()).unwrap();
        let names = ["localhost".to_string()];
        crate::secrets::Secrets::load_or_create(&data, &names).unwrap();
        acceptor(&data.broker_cert(), &data.broker_key(), &[ALPN_MQTT]).unwrap();
        std::fs::write(data.broker_key(), "nothing").unwrap();
        let err = error_of(acceptor(
            &data.broker_cert(),
            &data.broker_key(),
            &[ALPN_MQTT],
        ));
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    }
}
