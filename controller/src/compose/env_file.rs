//! A service's `env_file:` (a path, a list of paths, or `{path, required}` entries) merged
//! under its `environment:` on the YAML tree, as Docker Compose does: files in order, a later
//! file wins, `environment:` wins over all. `coracle deploy` reads the files relative to the
//! app file and sends them by the path as written (`ComposeContext::env_files`). Bare
//! `environment` names (`- DEBUG`, `DEBUG:`) take the client's value, or are left out.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_yaml::{Mapping, Value};

use super::context::ComposeContext;
use super::lines::line_of_path;
use super::{dotenv, profiles, ComposeError};

/// One `env_file:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileRef {
    pub service: String,
    pub path: String,
    /// `required: false` lets the file be missing.
    pub required: bool,
}

/// Every `env_file:` entry of the services the active profiles run, in an (interpolated)
/// app tree.
pub fn references(
    text: &str,
    root: &Value,
    active: &[String],
) -> Result<Vec<EnvFileRef>, ComposeError> {
    let mut all = Vec::new();
    for (name, service) in services(root) {
        if !profiles::tree_runs(service, active) {
            continue;
        }
        if let Some(value) = service.get("env_file") {
            all.extend(entries(&name, value).map_err(|reason| error(text, &name, reason))?);
        }
    }
    Ok(all)
}

/// Replaces each service's `env_file` and `environment` with one `environment` mapping.
/// Returns the variables it asked the context for (env files and bare names name them).
pub fn merge(
    text: &str,
    root: &mut Value,
    context: &ComposeContext,
) -> Result<BTreeSet<String>, ComposeError> {
    let named = RefCell::new(BTreeSet::new());
    let lookup = |n: &str| {
        named.borrow_mut().insert(n.to_string());
        context.variable(n)
    };
    let Some(services) = root.get_mut("services").and_then(Value::as_mapping_mut) else {
        return Ok(BTreeSet::new());
    };
    for (name, service) in services.iter_mut() {
        let name = name.as_str().unwrap_or_default().to_string();
        if !profiles::tree_runs(service, &context.profiles) {
            // Dropped by `profiles::select`: its env files are neither sent nor read.
            if let Some(mapping) = service.as_mapping_mut() {
                mapping.remove("env_file");
            }
            continue;
        }
        let Some(service) = service.as_mapping_mut() else {
            continue;
        };
        let fail = |reason: String| error(text, &name, reason);
        let mut env: Vec<(String, String)> = Vec::new();
        if let Some(value) = service.remove("env_file") {
            for entry in entries(&name, &value).map_err(fail)? {
                let Some(content) = context.env_files.get(&entry.path) else {
                    if entry.required {
                        return Err(fail(format!(
                            "{:?} was not sent with the app (coracle deploy reads env files \
                             beside the app file; `required: false` lets it be missing)",
                            entry.path
                        )));
                    }
                    continue;
                };
                let pairs = dotenv::parse(content, &lookup)
                    .map_err(|e| fail(format!("{}, {e}", entry.path)))?;
                env.extend(pairs);
            }
        }
        if let Some(value) = service.get("environment") {
            env.extend(
                environment(value, &lookup).map_err(|reason| ComposeError::Field {
                    line: line_of_path(text, &["services", &name, "environment"]),
                    service: name.clone(),
                    field: "environment",
                    reason,
                })?,
            );
        }
        if env.is_empty() && !service.contains_key("environment") {
            continue;
        }
        let mut mapping = Mapping::new();
        for (key, value) in env {
            mapping.insert(Value::String(key), Value::String(value));
        }
        service.insert("environment".into(), Value::Mapping(mapping));
    }
    Ok(named.into_inner())
}

fn services(root: &Value) -> Vec<(String, &Value)> {
    root.get("services")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v))
                .collect()
        })
        .unwrap_or_default()
}

fn error(text: &str, service: &str, reason: String) -> ComposeError {
    ComposeError::Field {
        line: line_of_path(text, &["services", service, "env_file"]),
        service: service.to_string(),
        field: "env_file",
        reason,
    }
}

fn entries(service: &str, value: &Value) -> Result<Vec<EnvFileRef>, String> {
    let one = |v: &Value| -> Result<EnvFileRef, String> {
        let (path, required) = match v {
            Value::String(path) => (path.clone(), true),
            Value::Mapping(m) => {
                if let Some(key) = m
                    .keys()
                    .filter_map(Value::as_str)
                    .find(|k| !["path", "required"].contains(k))
                {
                    return Err(format!(
                        "{key} is not supported on devices yet (path, required)"
                    ));
                }
                let path = m
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or("an entry needs a path")?;
                let required = match m.get("required") {
                    None => true,
                    Some(Value::Bool(b)) => *b,
                    Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
                    Some(other) => return Err(format!("required: {other:?} is not true or false")),
                };
                (path.to_string(), required)
            }
            other => return Err(format!("{other:?} is not a path or {{path, required}}")),
        };
        Ok(EnvFileRef {
            service: service.to_string(),
            path,
            required,
        })
    };
    match value {
        Value::Sequence(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// `environment:` as `(KEY, VALUE)` pairs: a mapping or a `KEY=VALUE` list; a bare name takes
/// the client's value or is left out.
fn environment(
    value: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    let scalar = |v: &Value| -> Result<Option<String>, String> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(format!("{other:?} is not a string, number or boolean")),
        }
    };
    let mut pairs = Vec::new();
    match value {
        Value::Null => {}
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().ok_or_else(|| format!("{k:?} is not a name"))?;
                if let Some(v) = scalar(v)?.or_else(|| lookup(key)) {
                    pairs.push((key.to_string(), v));
                }
            }
        }
        Value::Sequence(items) => {
            for item in items {
                let item = item
                    .as_str()
                    .ok_or_else(|| format!("{item:?} is not NAME=VALUE"))?;
                match item.split_once('=') {
                    Some((k, v)) => pairs.push((k.to_string(), v.to_string())),
                    None => pairs.extend(lookup(item).map(|v| (item.to_string(), v))),
                }
            }
        }
        other => return Err(format!("{other:?} is not a mapping or a NAME=VALUE list")),
    }
    Ok(pairs)
}
