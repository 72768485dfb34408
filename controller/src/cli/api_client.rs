//! `ApiClient`: the CLI's blocking HTTP client for `/api/v1`. API errors come back as the
//! server's JSON error body, shown to the operator as `status: message`.
//!
//! Over HTTPS it trusts the controller CA of the data dir (`ca.pem`; the CLI runs on the
//! controller's host) and nothing else; without that file, the system's public roots (an
//! API behind a proxy with a public certificate).

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::exit::{Coded, Failure};
use super::ApiArgs;
use crate::api::ErrorBody;
use crate::datadir::{read_text, DataDir};

/// Percent-encodes a query value: RFC 3986's unreserved characters and `/` stay as they
/// are (versions and platforms stay readable), everything else is `%XX` (a time's `+` and
/// `:`).
pub fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A configured API client.
#[derive(Debug)]
pub struct ApiClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl ApiClient {
    /// From `--api`/`--token`, falling back to the files the controller writes.
    pub fn from_args(args: &ApiArgs) -> anyhow::Result<Self> {
        let dir = DataDir::existing(&args.data_dir);
        let base = match &args.api {
            Some(url) => url.clone(),
            None => read_text(&dir.api_url())
                .context("no --api given and the controller's API URL is unknown (is `coracle serve` running with this --data-dir?)")?,
        };
        let token = match &args.token {
            Some(token) => token.clone(),
            None => read_text(&dir.admin_token()).context("no --token given")?,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(controller_tls(&dir)?)
            .build()
            .new_agent();
        Ok(Self {
            base: base.trim().trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
            agent,
        })
    }

    /// The API's base URL (`https://…` when the controller serves TLS).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn finish<T: DeserializeOwned>(
        &self,
        what: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Option<T>> {
        let mut response = response.map_err(|source| Coded {
            failure: Failure::Unreachable,
            message: format!("{what}: cannot reach {}", self.base),
            source: Some(Box::new(source)),
        })?;
        let status = response.status();
        if status == ureq::http::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let body = response
            .body_mut()
            .read_to_vec()
            .with_context(|| format!("{what}: cannot read the response"))?;
        if !status.is_success() {
            return Err(api_error(what, status.as_u16(), &body));
        }
        let value = serde_json::from_slice(&body)
            .with_context(|| format!("{what}: the API answered with unexpected JSON"))?;
        Ok(Some(value))
    }

    /// A GET whose body is read as it comes (`logs -f`): the reader, once the status says
    /// the request was taken.
    pub fn get_stream(&self, what: &str, path: &str) -> anyhow::Result<impl std::io::Read> {
        let response = self
            .agent
            .get(&self.url(path))
            .header("Authorization", &self.auth())
            .call()
            .map_err(|source| Coded {
                failure: Failure::Unreachable,
                message: format!("{what}: cannot reach {}", self.base),
                source: Some(Box::new(source)),
            })?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let text = body.read_to_vec().unwrap_or_default();
            return Err(api_error(what, status.as_u16(), &text));
        }
        Ok(body.into_reader())
    }

    /// The bearer token, for the exec WebSocket's request.
    pub fn authorization(&self) -> String {
        self.auth()
    }

    pub fn get<T: DeserializeOwned>(&self, what: &str, path: &str) -> anyhow::Result<T> {
        let response = self
            .agent
            .get(&self.url(path))
            .header("Authorization", &self.auth())
            .call();
        self.finish(what, response)?
            .with_context(|| format!("{what}: empty response"))
    }

    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        what: &str,
        method: &str,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let url = self.url(path);
        let request = match method {
            "POST" => self.agent.post(&url),
            "PATCH" => self.agent.patch(&url),
            "PUT" => self.agent.put(&url),
            other => bail!("unsupported method {other}"),
        };
        let response = request
            .header("Authorization", &self.auth())
            .send_json(body);
        self.finish(what, response)?
            .with_context(|| format!("{what}: empty response"))
    }

    /// POSTs raw bytes (`path` may carry a query string).
    pub fn post_bytes<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<T> {
        let response = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &self.auth())
            .header("Content-Type", "application/octet-stream")
            .send(body);
        self.finish(what, response)?
            .with_context(|| format!("{what}: empty response"))
    }

    pub fn delete(&self, what: &str, path: &str) -> anyhow::Result<()> {
        let response = self
            .agent
            .delete(&self.url(path))
            .header("Authorization", &self.auth())
            .call();
        self.finish::<serde_json::Value>(what, response)?;
        Ok(())
    }
}

/// An API error answer as the operator sees it: `what: message (status)`, with the exit
/// code the status means.
pub(super) fn api_error(what: &str, status: u16, body: &[u8]) -> anyhow::Error {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(err) => format!("{what}: {} ({status})", err.error.message),
        Err(_) => format!("{what}: HTTP {status}"),
    };
    match Failure::of_status(status) {
        Some(failure) => Coded {
            failure,
            message,
            source: None,
        }
        .into(),
        None => anyhow::anyhow!(message),
    }
}

/// TLS settings trusting the data dir's controller CA only, or the default roots when the
/// data dir has none.
fn controller_tls(dir: &DataDir) -> anyhow::Result<TlsConfig> {
    let path = dir.ca_cert();
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(TlsConfig::default()),
        Err(err) => {
            return Err(err).with_context(|| format!("read the controller CA {}", path.display()))
        }
    };
    let cert = Certificate::from_pem(&pem)
        .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&[cert]))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded_and_stay_readable() {
        assert_eq!(query_value("0.2.0-rc.1"), "0.2.0-rc.1");
        assert_eq!(query_value("linux/arm/v7"), "linux/arm/v7");
        assert_eq!(query_value("10m"), "10m");
        assert_eq!(query_value("a b&c"), "a%20b%26c");
        assert_eq!(
            query_value("2026-12-04T23:00:00+01:00"),
            "2026-12-04T23%3A00%3A00%2B01%3A00"
        );
    }
}
