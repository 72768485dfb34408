//! Where and how to reach one upstream registry: the `[[registries]]` section of the serve
//! config, and `Endpoint`, what a pull uses (base URL, trusted CA, credentials), resolved
//! from that section, the defaults (HTTPS with public roots; Docker Hub's API host) and the
//! stored logins.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::credentials::{check_host, Credentials, Logins};
use super::reference::{DOCKER_HUB, DOCKER_HUB_API};
use super::UpstreamError;

/// One `[[registries]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// `host[:port]` as image references name the registry (`registry.lan:5000`).
    pub host: String,
    /// Where its API answers, when not `https://HOST` (`http://HOST` with `insecure`).
    #[serde(default)]
    pub url: Option<String>,
    /// PEM of the CA that signed the registry's certificate (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP: for LAN registries without TLS. Credentials then cross the LAN in clear.
    #[serde(default)]
    pub insecure: bool,
    /// A TOML file with `username` and `password`, used instead of a stored login.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Devices pull this registry's images themselves (a LAN registry): the controller pins
    /// the digest but does not mirror, and seals the credential for each device.
    #[serde(default)]
    pub direct: bool,
}

impl RegistrySection {
    /// What serde cannot check; the error names the entry by its host.
    pub fn validate(&self) -> Result<(), String> {
        check_host(&self.host).map_err(|e| e.to_string())?;
        if self.insecure && self.ca_file.is_some() {
            return Err(format!(
                "registry {}: insecure (plain HTTP) and ca_file exclude each other",
                self.host
            ));
        }
        if let Some(url) = &self.url {
            let plain = url.starts_with("http://");
            if !plain && !url.starts_with("https://") {
                return Err(format!(
                    "registry {}: url {url:?} is not http(s)://",
                    self.host
                ));
            }
            if plain != self.insecure {
                return Err(format!(
                    "registry {}: an http:// url needs insecure = true, and insecure an http:// url",
                    self.host
                ));
            }
        }
        Ok(())
    }
}

/// How a pull reaches one registry.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    /// `https://host[:port]` or `http://...`, without a trailing slash.
    pub base_url: String,
    /// A private CA's file and PEM; the public roots when absent.
    pub ca: Option<(PathBuf, String)>,
    pub credentials: Option<Credentials>,
}

impl Endpoint {
    /// The endpoint for `host`: its `[[registries]]` entry if any, else HTTPS; credentials
    /// from the entry's file, else from `coracle registry login`.
    pub fn resolve(
        host: &str,
        sections: &[RegistrySection],
        logins: &Logins,
    ) -> Result<Self, UpstreamError> {
        let section = sections.iter().find(|s| s.host.eq_ignore_ascii_case(host));
        let default_url = if host == DOCKER_HUB {
            DOCKER_HUB_API.to_string()
        } else if section.is_some_and(|s| s.insecure) {
            format!("http://{host}")
        } else {
            format!("https://{host}")
        };
        let base_url = section
            .and_then(|s| s.url.clone())
            .unwrap_or(default_url)
            .trim_end_matches('/')
            .to_string();
        let ca = match section.and_then(|s| s.ca_file.as_deref()) {
            Some(path) => Some((path.to_path_buf(), read_ca(host, path)?)),
            None => None,
        };
        let credentials = match section.and_then(|s| s.credentials_file.as_deref()) {
            Some(path) => Some(Credentials::read(host, path)?),
            None => logins.load(host)?,
        };
        Ok(Self {
            host: host.to_string(),
            base_url,
            ca,
            credentials,
        })
    }
}

fn read_ca(host: &str, path: &Path) -> Result<String, UpstreamError> {
    std::fs::read_to_string(path).map_err(|source| UpstreamError::ReadCa {
        host: host.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(host: &str) -> RegistrySection {
        RegistrySection {
            host: host.into(),
            url: None,
            ca_file: None,
            insecure: false,
            credentials_file: None,
            direct: false,
        }
    }

    #[test]
    fn endpoints_default_to_https_and_follow_their_section() {
        let dir = tempfile::tempdir().unwrap();
        let logins = Logins::in_data_dir(dir.path());
        let lan = RegistrySection {
            insecure: true,
            ..section("registry.lan:5000")
        };
        let sections = [lan];
        let at = |host| {
            Endpoint::resolve(host, &sections, &logins)
                .unwrap()
                .base_url
        };
        assert_eq!(at("ghcr.io"), "https://ghcr.io");
        assert_eq!(at("docker.io"), "https://registry-1.docker.io");
        assert_eq!(at("registry.lan:5000"), "http://registry.lan:5000");
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        logins.save("ghcr.io", &creds).unwrap();
        let ghcr = Endpoint::resolve("ghcr.io", &sections, &logins).unwrap();
        assert_eq!(ghcr.credentials, Some(creds));
    }

    #[test]
    fn sections_are_validated_by_host() {
        let mut s = section("registry.lan:5000");
        s.validate().unwrap();
        s.url = Some("http://10.0.0.5:5000".into());
        assert!(s.validate().unwrap_err().contains("insecure"));
        s.insecure = true;
        s.validate().unwrap();
        s.ca_file = Some("/ca.pem".into());
        assert!(s.validate().unwrap_err().contains("registry.lan:5000"));
        assert!(section("Bad Host").validate().is_err());
    }
}
