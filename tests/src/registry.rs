//! Debian's `docker-registry` (the CNCF distribution registry) as a real third-party OCI
//! registry for tests, filled with Debian's `skopeo`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::mosquitto::free_port;
use crate::process::{ProcessError, TestProcess};

/// Why the registry or skopeo failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot prepare the registry in {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("docker-registry did not start")]
    Start(#[source] ProcessError),
    #[error("skopeo {args} failed: {stderr}")]
    Skopeo { args: String, stderr: String },
}

/// How a test registry serves: plain HTTP without auth by default.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// An htpasswd file (bcrypt): basic auth on every request.
    pub htpasswd: Option<PathBuf>,
    /// A PEM certificate and key: TLS instead of plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A whole `auth:` block instead (e.g. `token:` with a test's token service).
    pub auth_yaml: Option<String>,
}

/// A running registry on 127.0.0.1 with its storage in a temp dir.
#[derive(Debug)]
pub struct TestRegistry {
    pub port: u16,
    /// Serves HTTPS (`RegistryOptions::tls`).
    pub tls: bool,
    pub dir: tempfile::TempDir,
    _process: TestProcess,
}

impl TestRegistry {
    /// Starts `docker-registry serve` on a free loopback port.
    pub fn start() -> Result<Self, RegistryError> {
        Self::start_with(&RegistryOptions::default())
    }

    /// Starts `docker-registry serve` with basic auth and/or TLS.
    pub fn start_with(options: &RegistryOptions) -> Result<Self, RegistryError> {
        let prepare = |path: &Path, source| RegistryError::Prepare {
            path: path.to_path_buf(),
            source,
        };
        let dir = tempfile::tempdir().map_err(|e| prepare(&std::env::temp_dir(), e))?;
        let port = free_port().map_err(|e| prepare(dir.path(), e))?;
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = &options.tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some(htpasswd) = &options.htpasswd {
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: coracle-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        if let Some(auth) = &options.auth_yaml {
            yaml.push_str(auth);
        }
        std::fs::File::create(&config)
            .and_then(|mut f| f.write_all(yaml.as_bytes()))
            .map_err(|e| prepare(&config, e))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config);
        let mut process = TestProcess::spawn(cmd).map_err(RegistryError::Start)?;
        process
            .wait_for_line("listening on", Duration::from_secs(15))
            .map_err(RegistryError::Start)?;
        Ok(Self {
            port,
            tls: options.tls.is_some(),
            dir,
            _process: process,
        })
    }

    /// `http://127.0.0.1:PORT`, or `https://` when it serves TLS.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Pushes an image archive (`oci-archive:PATH` or `docker-archive:PATH`) as `repo:tag`
    /// with skopeo and returns the manifest digest the registry stored.
    pub fn push(&self, source: &str, repo_tag: &str) -> Result<String, RegistryError> {
        self.push_with(source, repo_tag, &[])
    }

    /// [`Self::push`] with more skopeo flags (`--dest-creds user:pass`, `--all`).
    pub fn push_with(
        &self,
        source: &str,
        repo_tag: &str,
        extra: &[&str],
    ) -> Result<String, RegistryError> {
        let digest_file = self.dir.path().join("pushed.digest");
        let dest = format!("docker://127.0.0.1:{}/{repo_tag}", self.port);
        let digest_path = digest_file.to_string_lossy().into_owned();
        let mut args = vec![
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--digestfile",
            &digest_path,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[source, &dest]);
        skopeo(&args)?;
        std::fs::read_to_string(&digest_file)
            .map(|d| d.trim().to_string())
            .map_err(|e| RegistryError::Prepare {
                path: digest_file,
                source: e,
            })
    }

    /// The file holding a blob in the registry's storage, to corrupt it in tests.
    pub fn blob_data_path(&self, digest_hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&digest_hex[..2])
            .join(digest_hex)
            .join("data")
    }
}

/// Writes an htpasswd file with one bcrypt entry (`htpasswd -B`, from apache2-utils), as
/// docker-registry accepts only bcrypt.
pub fn write_htpasswd(path: &Path, user: &str, password: &str) -> Result<(), RegistryError> {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .map_err(|source| RegistryError::Prepare {
            path: PathBuf::from("htpasswd"),
            source,
        })?;
    if !out.status.success() {
        return Err(RegistryError::Prepare {
            path: path.to_path_buf(),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
        });
    }
    std::fs::write(path, &out.stdout).map_err(|source| RegistryError::Prepare {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs skopeo with `args`.
pub fn skopeo(args: &[&str]) -> Result<String, RegistryError> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .map_err(|source| RegistryError::Prepare {
            path: PathBuf::from("skopeo"),
            source,
        })?;
    if !out.status.success() {
        return Err(RegistryError::Skopeo {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
