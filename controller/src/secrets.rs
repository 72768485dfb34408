//! `Secrets`: the controller's CA, its TLS certificate (presented by the broker's device
//! port, and by the API and registry when they serve HTTPS), the deployment signing key,
//! the admin token, the pull key of the devices' registry tokens and the controller's own
//! MQTT password. Generated on first start, kept
//! in the data dir with mode 0600, loaded unchanged on every later start; only the TLS
//! certificate is issued again at every start, for the names the config gives.

use std::net::IpAddr;
use std::path::PathBuf;

use coracle_proto::SigningKey;
use rand_core::{OsRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::datadir::{read_text, write_private, write_public, DataDir, DataDirError};

/// Why a secret could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    File(#[from] DataDirError),
    #[error("cannot generate the {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path} does not hold a valid {what}")]
    Corrupt { path: PathBuf, what: &'static str },
}

/// Everything secret the controller holds.
#[derive(Debug)]
pub struct Secrets {
    pub ca_pem: String,
    pub deployment_key: SigningKey,
    pub admin_token: String,
    /// Keys the devices' registry pull tokens; independent of the admin token, so rotating
    /// that leaves every device pulling.
    pub pull_key: String,
    pub controller_mqtt_password: String,
    /// Paths of the controller's TLS certificate and key (signed by the CA; files
    /// `broker.pem`, `broker.key`: the broker had it first).
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

/// A random 32-byte value as 64 hex characters (tokens and passwords).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Secrets {
    /// Loads the secrets, generating any that are missing. The TLS certificate is
    /// reissued every start for `tls_names` (host names and IP addresses; see
    /// `ServeConfig::tls_names`), so a changed public host needs no manual step.
    pub fn load_or_create(dir: &DataDir, tls_names: &[String]) -> Result<Self, SecretsError> {
        let ca_key = load_or_create_ca(dir)?;
        let ca_pem = read_text(&dir.ca_cert())?;
        issue_tls_cert(dir, &ca_key, tls_names)?;
        let upgraded = dir.admin_token().exists() && !dir.pull_key().exists();
        let admin_token = load_or_create_token(&dir.admin_token())?;
        Ok(Self {
            ca_pem,
            deployment_key: load_or_create_deployment_key(dir)?,
            pull_key: load_or_create_pull_key(dir, upgraded.then_some(admin_token.as_str()))?,
            admin_token,
            controller_mqtt_password: load_or_create_token(&dir.controller_mqtt_password())?,
            tls_cert: dir.broker_cert(),
            tls_key: dir.broker_key(),
        })
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "coracle controller CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn load_or_create_ca(dir: &DataDir) -> Result<KeyPair, SecretsError> {
    let key_path = dir.ca_key();
    if key_path.exists() && dir.ca_cert().exists() {
        let pem = read_text(&key_path)?;
        return KeyPair::from_pem(&pem).map_err(|_| SecretsError::Corrupt {
            path: key_path,
            what: "CA private key",
        });
    }
    let generate = |source| SecretsError::Generate {
        what: "controller CA",
        source,
    };
    let key = KeyPair::generate().map_err(generate)?;
    let cert = ca_params().self_signed(&key).map_err(generate)?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_public(&dir.ca_cert(), cert.pem().as_bytes())?;
    tracing::info!(path = %dir.ca_cert().display(), "controller CA created");
    Ok(key)
}

fn issue_tls_cert(dir: &DataDir, ca_key: &KeyPair, names: &[String]) -> Result<(), SecretsError> {
    let (cert, key) = tls_pair(ca_key, names)?;
    write_private(&dir.broker_key(), key.as_bytes())?;
    write_public(&dir.broker_cert(), cert.as_bytes())?;
    Ok(())
}

/// A new TLS certificate for `names`, signed by the controller CA of `dir`, with its key:
/// `(certificate PEM, key PEM)`. For a broker outside the controller (a NATS node), which
/// gets its own pair in one file rather than copies of the data dir's two files, which a
/// controller starting meanwhile reissues one after the other.
pub fn issue_tls_pair(dir: &DataDir, names: &[String]) -> Result<(String, String), SecretsError> {
    tls_pair(&load_or_create_ca(dir)?, names)
}

fn tls_pair(ca_key: &KeyPair, names: &[String]) -> Result<(String, String), SecretsError> {
    let generate = |source| SecretsError::Generate {
        what: "controller TLS certificate",
        source,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into().map_err(generate)?),
        };
        params.subject_alt_names.push(san);
    }
    params
        .distinguished_name
        .push(DnType::CommonName, "coracle controller");
    let key = KeyPair::generate().map_err(generate)?;
    // The CA's parameters are fixed, so rebuilding the issuer from them and the stored key
    // yields certificates that chain to the stored CA certificate.
    let ca_params = ca_params();
    let issuer = Issuer::from_params(&ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Reads a deployment signing key file (64 hex characters).
pub fn read_signing_key(path: &std::path::Path) -> Result<SigningKey, SecretsError> {
    let text = read_text(path)?;
    let corrupt = || SecretsError::Corrupt {
        path: path.to_path_buf(),
        what: "deployment key (64 hex characters)",
    };
    let bytes = hex::decode(text.trim()).map_err(|_| corrupt())?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| corrupt())?;
    Ok(SigningKey::from_bytes(&seed))
}

fn load_or_create_deployment_key(dir: &DataDir) -> Result<SigningKey, SecretsError> {
    let path = dir.deployment_key();
    if path.exists() {
        return read_signing_key(&path);
    }
    let key = SigningKey::generate(&mut OsRng);
    write_private(&path, hex::encode(key.to_bytes()).as_bytes())?;
    tracing::info!(path = %path.display(), "deployment signing key created");
    Ok(key)
}

/// The pull key. A data dir that has an admin token but no pull key comes from a version
/// that keyed device pull tokens by the admin token: the key starts as that token, so the
/// tokens in devices' bootstrap files stay valid; a new data dir gets a random key.
fn load_or_create_pull_key(
    dir: &DataDir,
    upgraded_from: Option<&str>,
) -> Result<String, SecretsError> {
    let path = dir.pull_key();
    if path.exists() {
        return load_or_create_token(&path);
    }
    let key = upgraded_from.map_or_else(random_token, str::to_string);
    write_private(&path, key.as_bytes())?;
    let upgraded = upgraded_from.is_some();
    tracing::info!(path = %path.display(), upgraded, "registry pull key created");
    Ok(key)
}

fn load_or_create_token(path: &std::path::Path) -> Result<String, SecretsError> {
    if path.exists() {
        let token = read_text(path)?.trim().to_string();
        if token.len() < 32 {
            return Err(SecretsError::Corrupt {
                path: path.to_path_buf(),
                what: "token of at least 32 characters",
            });
        }
        return Ok(token);
    }
    let token = random_token();
    write_private(path, token.as_bytes())?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_created_once_private_and_reloaded_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let first = Secrets::load_or_create(&dir, &["127.0.0.1".into()]).unwrap();
        let second = Secrets::load_or_create(&dir, &["10.0.0.2".into()]).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.admin_token, second.admin_token);
        assert_eq!(first.pull_key, second.pull_key);
        assert_ne!(first.pull_key, first.admin_token);
        assert_eq!(
            first.deployment_key.to_bytes(),
            second.deployment_key.to_bytes()
        );
        for path in [
            dir.ca_key(),
            dir.deployment_key(),
            dir.admin_token(),
            dir.pull_key(),
            dir.broker_key(),
        ] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }

    #[test]
    fn an_upgraded_data_dir_keys_pull_tokens_by_its_admin_token_of_the_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        std::fs::write(dir.admin_token(), "a".repeat(64)).unwrap();
        let secrets = Secrets::load_or_create(&dir, &["localhost".into()]).unwrap();
        assert_eq!(secrets.pull_key, "a".repeat(64));
    }

    #[test]
    fn corrupt_deployment_key_is_named_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        std::fs::write(dir.deployment_key(), "not hex").unwrap();
        let err = Secrets::load_or_create(&dir, &["localhost".into()]).unwrap_err();
        assert!(err.to_string().contains("deployment.key"), "{err}");
        assert_eq!(std::fs::read(dir.deployment_key()).unwrap(), b"not hex");
    }
}
