//! `coracle registry login HOST`: stores credentials for an upstream registry in the
//! controller's data dir (mode 0600). The password is read from stdin, never from a flag
//! (flags show in `ps`); a running controller reads the file at its next deploy.
//! `coracle registry logout HOST` removes them; later deploys pull anonymously.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::upstream::reference::canonical_host;
use crate::upstream::{Credentials, Logins};

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Store a username and password for an upstream registry (docker.io, ghcr.io,
    /// registry.lan:5000): stdin gives the password, or the username then the password.
    Login {
        /// The registry as image references name it, e.g. ghcr.io or registry.lan:5000.
        host: String,
        /// The username (default: the first line of stdin).
        #[arg(long, short)]
        username: Option<String>,
        /// The controller's data directory.
        #[arg(long, default_value = "coracle-data")]
        data_dir: PathBuf,
    },
    /// Forget the stored login for a registry.
    Logout {
        /// The registry as image references name it.
        host: String,
        /// The controller's data directory.
        #[arg(long, default_value = "coracle-data")]
        data_dir: PathBuf,
    },
}

pub fn run(args: RegistryArgs) -> anyhow::Result<()> {
    match args.command {
        RegistryCommand::Login {
            host,
            username,
            data_dir,
        } => login(&host, username, &data_dir),
        RegistryCommand::Logout { host, data_dir } => logout(&host, &data_dir),
    }
}

fn logout(host: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let host = canonical_host(host);
    let removed = Logins::in_data_dir(data_dir)
        .remove(&host)
        .with_context(|| format!("registry logout {host}"))?;
    if removed {
        println!("login for {host} removed");
    } else {
        println!("not logged in to {host}");
    }
    Ok(())
}

fn login(host: &str, username: Option<String>, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let host = canonical_host(host);
    let credentials = read_credentials(std::io::stdin().lock(), username)
        .with_context(|| format!("registry login {host}"))?;
    let path = Logins::in_data_dir(data_dir)
        .save(&host, &credentials)
        .with_context(|| format!("registry login {host}"))?;
    println!("login for {host} stored in {}", path.display());
    Ok(())
}

/// The password, and the username unless given, one per line of `input`.
fn read_credentials(input: impl BufRead, username: Option<String>) -> anyhow::Result<Credentials> {
    let mut lines = input.lines();
    let mut next_line = |what: &str| -> anyhow::Result<String> {
        let line = lines
            .next()
            .with_context(|| format!("stdin ended before the {what}"))?
            .with_context(|| format!("read the {what} from stdin"))?;
        Ok(line.trim_end_matches('\r').to_string())
    };
    let username = match username {
        Some(name) => name,
        None => next_line("username")?,
    };
    let password = next_line("password")?;
    if username.is_empty() || password.is_empty() {
        bail!("the username and the password must not be empty");
    }
    Ok(Credentials { username, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_stdin_lines_or_the_flag() {
        let both = read_credentials(&b"ci\nsecret\n"[..], None).unwrap();
        assert_eq!(
            (both.username.as_str(), both.password.as_str()),
            ("ci", "secret")
        );
        let flag = read_credentials(&b"secret\r\n"[..], Some("ci".into())).unwrap();
        assert_eq!(
            (flag.username.as_str(), flag.password.as_str()),
            ("ci", "secret")
        );
        let err = read_credentials(&b"ci\n"[..], None).unwrap_err();
        assert!(err.to_string().contains("password"), "{err}");
        assert!(read_credentials(&b"\n"[..], Some("ci".into())).is_err());
    }
}
