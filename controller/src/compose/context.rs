//! What `docker compose` takes from the client beside the app file, as `coracle deploy` sends
//! it: the values of the variables the file names (the process environment over `.env` or
//! `--env-file`), the `env_file:` files it names, and the active profiles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The client side of an app. `variables: None` (a raw API client) means nothing was
/// interpolated: any `$` in a value is refused, naming its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeContext {
    /// Values of the variables the app names; only the set ones are present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<BTreeMap<String, String>>,
    /// The `env_file:` files, by the path as written in the app (after interpolation).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_files: BTreeMap<String, String>,
    /// Active profiles (`--profile`, `COMPOSE_PROFILES`); `*` activates all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
}

impl ComposeContext {
    /// The value of a variable, when the client sent one.
    pub fn variable(&self, name: &str) -> Option<String> {
        self.variables.as_ref()?.get(name).cloned()
    }
}
