//! `coracle registry login HOST`: stores credentials for an upstream registry in the
//! controller's data dir (mode 0600). The password is read from stdin, never from a flag
//! (flags show in `ps`); a running controller reads the file at its next deploy.

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
}

pub fn run(args: RegistryArgs) -> anyhow::Result<()> {
    match args.command {
        RegistryCommand::Login {
            host,
            username,
            data_dir,
        } => login(&host, username, &data_dir),
    }
}

fn login(host: &str, username: Option<String>, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let host = canonical_host(host);
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
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
        bail!("registry login {host}: the username and the password must not be empty");
    }
    let path = Logins::in_data_dir(data_dir)
        .save(&host, &Credentials { username, password })
        .with_context(|| format!("registry login {host}"))?;
    println!("login for {host} stored in {}", path.display());
    Ok(())
}
