//! The broker address and TLS client config, from the bootstrap file.

use std::sync::Arc;

use coracle_proto::{Bootstrap, BrokerAuth};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// `mqtts://host:port` or `mqtt://host:port`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Why the broker settings in the bootstrap cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker url {url:?} must be mqtts://HOST:PORT or mqtt://HOST:PORT")]
    Url { url: String },
    #[error("bootstrap ca_pem holds no usable certificate")]
    CaCertificate(#[source] Option<rustls::pki_types::pem::Error>),
    #[error("bootstrap ca_pem certificate is refused by rustls")]
    TrustCa(#[source] rustls::Error),
    #[error("bootstrap client certificate cannot be read")]
    ClientCertificate(#[source] rustls::pki_types::pem::Error),
    #[error("bootstrap client key cannot be read")]
    ClientKey(#[source] rustls::pki_types::pem::Error),
    #[error("rustls refused the TLS client configuration")]
    TlsConfig(#[source] rustls::Error),
    #[error("client certificates need TLS, but the broker url is plain mqtt://")]
    ClientCertWithoutTls,
}

impl BrokerAddress {
    /// Parses a broker URL (no path, no user info).
    pub fn parse(url: &str) -> Result<Self, BrokerError> {
        let bad = || BrokerError::Url {
            url: url.to_string(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.contains(['/', '@', ' ']) {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// The rustls client config for the bootstrap's CA and (for mutual TLS) client certificate.
/// The crypto provider is ring, passed explicitly, so no process-wide default is needed.
pub fn tls_config(bootstrap: &Bootstrap) -> Result<Arc<ClientConfig>, BrokerError> {
    let mut roots = RootCertStore::empty();
    let mut found = false;
    for cert in CertificateDer::pem_slice_iter(bootstrap.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| BrokerError::CaCertificate(Some(e)))?;
        roots.add(cert).map_err(BrokerError::TrustCa)?;
        found = true;
    }
    if !found {
        return Err(BrokerError::CaCertificate(None));
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(BrokerError::TlsConfig)?
            .with_root_certificates(roots);
    let config = match &bootstrap.auth {
        BrokerAuth::Password { .. } => builder.with_no_client_auth(),
        BrokerAuth::ClientCert { cert_pem, key_pem } => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(BrokerError::ClientCertificate)?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(BrokerError::ClientKey)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(BrokerError::TlsConfig)?
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_or_name_the_url() {
        let ok = [
            ("mqtts://broker.local:8883", "broker.local", 8883, true),
            ("mqtt://127.0.0.1:1883", "127.0.0.1", 1883, false),
            ("mqtts://[::1]:8883", "::1", 8883, true),
        ];
        for (url, host, port, tls) in ok {
            assert_eq!(
                BrokerAddress::parse(url).unwrap(),
                BrokerAddress {
                    host: host.into(),
                    port,
                    tls
                }
            );
        }
        for bad in [
            "http://x:1",
            "mqtts://x",
            "mqtts://:8883",
            "mqtts://x:0",
            "mqtts://x:99999",
            "mqtts://u@x:1",
        ] {
            let err = BrokerAddress::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
