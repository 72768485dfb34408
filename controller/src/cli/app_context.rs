//! What `coracle deploy` reads on the client, as `docker compose` does: variables from the
//! process environment over the `.env` beside the app (or the `--env-file` files instead, a
//! later one winning), the active profiles (`--profile`, else `COMPOSE_PROFILES`), and the
//! `env_file:` files the app names, relative to the app file. The app is loaded here first,
//! so a missing required variable fails before any upload, naming the file and the line;
//! only the variables the app names are sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::compose::{self, ComposeContext, Loaded};

/// An env file larger than this is refused (they hold a few variables).
const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// The context to send with the app at `app` (text `text`) and the app as loaded with it.
pub fn read(
    app: &Path,
    text: &str,
    env_files: &[PathBuf],
    profiles: &[String],
) -> anyhow::Result<(ComposeContext, Loaded)> {
    let dir = app.parent().unwrap_or(Path::new("."));
    let mut all: BTreeMap<String, String> = dotenv_variables(dir, env_files)?;
    all.extend(std::env::vars());
    let profiles = match profiles.is_empty() {
        false => profiles.to_vec(),
        true => all
            .get("COMPOSE_PROFILES")
            .map(|p| {
                p.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut context = ComposeContext {
        variables: Some(all),
        env_files: BTreeMap::new(),
        profiles,
    };
    let in_app = |err: compose::ComposeError| anyhow::anyhow!("{}: {err}", app.display());
    for reference in compose::env_file_references(text, &context).map_err(in_app)? {
        let path = dir.join(&reference.path);
        let read = || -> anyhow::Result<String> {
            if std::fs::metadata(&path)?.len() > MAX_ENV_FILE_BYTES {
                bail!("more than {MAX_ENV_FILE_BYTES} bytes");
            }
            Ok(std::fs::read_to_string(&path)?)
        };
        match read() {
            Ok(content) => {
                context.env_files.insert(reference.path, content);
            }
            Err(_) if !reference.required && !path.exists() => {}
            Err(err) => bail!(
                "read env file {} (env_file of service {:?} in {}): {err:#}",
                path.display(),
                reference.service,
                app.display()
            ),
        }
    }
    let loaded = compose::load(text, &context).map_err(in_app)?;
    for name in &loaded.unset {
        eprintln!("warning: the {name:?} variable is not set, defaulting to a blank string");
    }
    let all = context.variables.take().unwrap_or_default();
    context.variables = Some(
        all.into_iter()
            .filter(|(name, _)| loaded.named.contains(name))
            .collect(),
    );
    Ok((context, loaded))
}

/// The variables of the `.env` beside the app, or of the `--env-file` files.
fn dotenv_variables(dir: &Path, env_files: &[PathBuf]) -> anyhow::Result<BTreeMap<String, String>> {
    let default = dir.join(".env");
    let files: Vec<PathBuf> = match env_files.is_empty() {
        false => env_files.to_vec(),
        true if default.is_file() => vec![default],
        true => Vec::new(),
    };
    let mut variables = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("read env file {}", file.display()))?;
        let lookup = |name: &str| std::env::var(name).ok();
        let pairs = compose::parse_env_file(&text, &lookup)
            .with_context(|| format!("env file {}", file.display()))?;
        variables.extend(pairs);
    }
    Ok(variables)
}
