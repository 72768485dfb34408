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
    // `FILE:LINE: …`, as compilers write it, so an editor jumps to the line.
    let in_app = |err: compose::ComposeError| match err.line() {
        0 => anyhow::anyhow!("{}: {err}", app.display()),
        line => anyhow::anyhow!("{}:{line}: {err}", app.display()),
    };
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
    // An app with nothing to interpolate needs no context: sent without one, an older
    // controller (which refuses unknown fields) still takes it.
    let trivial = context.variables.as_ref().is_some_and(BTreeMap::is_empty)
        && context.env_files.is_empty()
        && !text.contains("profiles")
        && !text.contains('$');
    if trivial {
        context = ComposeContext::default();
    }
    Ok((context, loaded))
}

/// The variables of the `.env` beside the app, or of the `--env-file` files (a later file
/// wins).
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
        // `${VAR}` in a file: the process environment, then the files read before it.
        let lookup = |name: &str| {
            std::env::var(name)
                .ok()
                .or_else(|| variables.get(name).cloned())
        };
        let pairs = compose::parse_env_file(&text, &lookup)
            .with_context(|| format!("env file {}", file.display()))?;
        variables.extend(pairs);
    }
    Ok(variables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_variables_the_app_and_its_env_files_name_are_sent() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.yml");
        let text = "services:\n  web:\n    image: app:${CORACLE_TEST_TAG}\n    env_file: web.env\n    profiles: [extra]\n";
        std::fs::write(&app, text).unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "CORACLE_TEST_TAG=1\nCORACLE_TEST_OUTER=o\nCORACLE_TEST_UNUSED=x\nCOMPOSE_PROFILES=extra, other\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("web.env"), "X=${CORACLE_TEST_OUTER}\n").unwrap();
        let (context, loaded) = read(&app, text, &[], &[]).unwrap();
        let sent: Vec<&str> = context
            .variables
            .as_ref()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(sent, ["CORACLE_TEST_OUTER", "CORACLE_TEST_TAG"]);
        assert_eq!(context.profiles, ["extra", "other"]);
        assert_eq!(context.env_files["web.env"], "X=${CORACLE_TEST_OUTER}\n");
        assert_eq!(loaded.file.services.len(), 1);
        // The controller reads the same app from what is sent.
        let again = compose::load(text, &context).unwrap();
        assert_eq!(again.file, loaded.file);

        // An app with nothing to interpolate is sent without a context.
        let plain = dir.path().join("plain.yml");
        let (context, _) = read(&plain, "services:\n  web:\n    image: app:1\n", &[], &[]).unwrap();
        assert_eq!(context, ComposeContext::default());

        // --profile replaces COMPOSE_PROFILES; a required env file that is missing is named,
        // unless its service does not run.
        std::fs::remove_file(dir.path().join("web.env")).unwrap();
        let err = read(&app, text, &[], &["extra".into()]).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("web.env") && message.contains("\"web\""),
            "{message}"
        );
        let err = read(&app, text, &[], &["none".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("no services"), "{err:#}");
    }

    #[test]
    fn env_files_given_replace_dot_env_and_a_later_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.yml");
        let text = "services:\n  web:\n    image: app:${CORACLE_TEST_T}\n    environment:\n      C: ${CORACLE_TEST_C}\n";
        std::fs::write(dir.path().join(".env"), "CORACLE_TEST_T=from-dot-env\n").unwrap();
        let a = dir.path().join("a.env");
        let b = dir.path().join("b.env");
        std::fs::write(&a, "CORACLE_TEST_T=1\nCORACLE_TEST_B=x\n").unwrap();
        std::fs::write(&b, "CORACLE_TEST_T=2\nCORACLE_TEST_C=${CORACLE_TEST_B}y\n").unwrap();
        let (context, _) = read(&app, text, &[a, b], &[]).unwrap();
        let variables = context.variables.unwrap();
        assert_eq!(variables["CORACLE_TEST_T"], "2");
        assert_eq!(variables["CORACLE_TEST_C"], "xy");
        let missing = dir.path().join("missing.env");
        let err = read(&app, text, &[missing], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("missing.env"), "{err:#}");
    }
}
