//! The YAML shape of the compose subset. Unknown keys are refused so a typo never silently
//! drops a setting.

use std::collections::BTreeMap;

use serde::Deserialize;

/// An app file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub services: BTreeMap<String, ComposeService>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeService {
    pub image: String,
    pub command: Option<StringOrList>,
    pub entrypoint: Option<StringOrList>,
    pub environment: Option<Environment>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub devices: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: Option<String>,
    pub mem_limit: Option<Scalar>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<u32>,
    pub depends_on: Option<DependsOn>,
    pub network_mode: Option<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub read_only: Option<bool>,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `seccomp=unconfined`, `seccomp=FILE`, `no-new-privileges` (see `seccomp`).
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// Run the agent's init as PID 1 (see `lifecycle`).
    pub init: Option<bool>,
    /// `SIGINT`, `INT`, `2`.
    pub stop_signal: Option<Scalar>,
    /// A compose duration: `30s`, `1m30s`.
    pub stop_grace_period: Option<String>,
    pub deploy: Option<Deploy>,
}

/// `deploy:`, of which only `update_config` means something on a single device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub update_config: Option<UpdateConfig>,
}

/// `deploy.update_config:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// `start-first` or `stop-first`.
    pub order: Option<String>,
    /// How long a new container must stay up before the update counts as done.
    pub monitor: Option<String>,
}

/// `command: "a b"` or `command: [a, b]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl StringOrList {
    /// A string is split on whitespace (compose does shell-like splitting; quotes are not
    /// supported here, use the list form).
    /// `[NONE]`, the default `test` of a `disable`d healthcheck.
    pub fn none() -> Self {
        StringOrList::List(vec!["NONE".to_string()])
    }

    pub fn into_args(self) -> Vec<String> {
        match self {
            StringOrList::String(s) => s.split_whitespace().map(String::from).collect(),
            StringOrList::List(l) => l,
        }
    }
}

/// A YAML scalar that may be written as a number or a string (`mem_limit: 512m` or `1024`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(u64),
    Float(f64),
    Bool(bool),
    String(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Float(v) => write!(f, "{v}"),
            Scalar::Bool(v) => write!(f, "{v}"),
            Scalar::String(v) => f.write_str(v),
        }
    }
}

/// `environment:` as a map or a `NAME=VALUE` list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Environment {
    Map(BTreeMap<String, Scalar>),
    List(Vec<String>),
}

/// `healthcheck:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    /// Absent only with `disable: true`.
    #[serde(default = "StringOrList::none")]
    pub test: StringOrList,
    /// `disable: true` is the same as `test: [NONE]`.
    pub disable: Option<bool>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub start_period: Option<String>,
}

/// `depends_on:` as a list or a map with conditions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, DependsOnEntry>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependsOnEntry {
    pub condition: Option<String>,
}
