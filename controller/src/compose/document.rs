//! From app text to the typed `ComposeFile`, as Docker Compose reads it: YAML into a tree
//! (serde_yaml's alias-repetition and depth limits hold), merge keys (`<<: *anchor`) applied,
//! `x-*` extension fields dropped, refused keys named (`refused`), every value interpolated
//! (`interpolate`; keys never are), `env_file:` merged under `environment:` (`env_file`),
//! then the typed model and the active profiles (`profiles`). Each error carries the line
//! of its key in the text as written, which interpolation leaves alone.

use std::collections::BTreeSet;

use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};

use super::context::ComposeContext;
use super::interpolate::{self, Lookup, TemplateError};
use super::lines::{line_holding, line_of_path};
use super::model::ComposeFile;
use super::{env_file, profiles, refused, ComposeError};

/// A parsed app and what its interpolation met.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: ComposeFile,
    /// Variables the app names that had no value (Docker warns and uses "").
    pub unset: BTreeSet<String>,
    /// Every variable the app names.
    pub named: BTreeSet<String>,
}

/// Reads an app with the client's context (see `ComposeContext`).
pub fn load(text: &str, context: &ComposeContext) -> Result<Loaded, ComposeError> {
    let (mut root, mut recorded) = interpolated(text, context)?;
    recorded
        .named
        .extend(env_file::merge(text, &mut root, context)?);
    let file = typed(text, root)?;
    let file = profiles::select(text, file, &context.profiles)?;
    if file.services.is_empty() {
        return Err(ComposeError::NoServices);
    }
    Ok(Loaded {
        file,
        unset: recorded.unset,
        named: recorded.named,
    })
}

/// What interpolation recorded.
pub struct Recorded {
    pub unset: BTreeSet<String>,
    pub named: BTreeSet<String>,
}

/// The tree of an app, extension fields dropped, refused keys checked, values interpolated.
pub fn interpolated(
    text: &str,
    context: &ComposeContext,
) -> Result<(Value, Recorded), ComposeError> {
    let mut root = tree(text)?;
    if let Some(refusal) = refused::first_refused(&root) {
        let path: Vec<&str> = refusal.path.iter().map(String::as_str).collect();
        return Err(ComposeError::Refused {
            line: line_of_path(text, &path),
            key: refusal.path.join("."),
            reason: refusal.reason,
        });
    }
    if let Some((path, tag)) = refused::first_tag(&root, &mut Vec::new()) {
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        return Err(ComposeError::Refused {
            line: line_holding(text, line_of_path(text, &keys), &tag),
            key: path.join("."),
            reason: format!("{}: YAML tags ({tag})", refused::PREFIX),
        });
    }
    let get = |name: &str| context.variable(name);
    let mut lookup = Lookup::new(&get);
    let raw = context.variables.is_none();
    walk(&mut root, &mut Vec::new(), &mut |path, value| {
        let key = || path.iter().map(String::as_str).collect::<Vec<_>>();
        let line = |needle: &str| line_holding(text, line_of_path(text, &key()), needle);
        if raw {
            return match interpolate::has_template(value) {
                false => Ok(()),
                true => Err(ComposeError::Interpolate {
                    line: line("$"),
                    key: path.join("."),
                    reason: format!(
                        "{value:?} holds a $ that only `coracle deploy` interpolates \
                         (API clients send context.variables, or $$ for a literal $)"
                    ),
                }),
            };
        }
        *value = interpolate::interpolate(value, &mut lookup).map_err(|e| {
            let needle = match &e {
                TemplateError::Required { name, .. } => name.clone(),
                TemplateError::Invalid { .. } => "$".to_string(),
            };
            ComposeError::Interpolate {
                line: line(&needle),
                key: path.join("."),
                reason: e.to_string(),
            }
        })?;
        Ok(())
    })?;
    let recorded = Recorded {
        unset: lookup.unset,
        named: lookup.named,
    };
    Ok((root, recorded))
}

/// YAML text into a tree with merge keys applied and `x-*` fields dropped.
fn tree(text: &str) -> Result<Value, ComposeError> {
    let mut root: Value = serde_yaml::from_str(text).map_err(|err| ComposeError::Syntax {
        line: err.location().map_or(0, |l| l.line()),
        message: err.to_string(),
    })?;
    root.apply_merge().map_err(|err| ComposeError::Syntax {
        line: line_holding(text, 1, "<<"),
        message: format!("merge key: {err}"),
    })?;
    strip_extensions(&mut root);
    if let Some(services) = root.get_mut("services").and_then(Value::as_mapping_mut) {
        for service in services.values_mut() {
            strip_extensions(service);
            for key in ["deploy", "healthcheck"] {
                if let Some(inner) = service.get_mut(key) {
                    strip_extensions(inner);
                }
            }
            for key in ["ports", "volumes"] {
                if let Some(entries) = service.get_mut(key).and_then(Value::as_sequence_mut) {
                    entries.iter_mut().for_each(strip_extensions);
                }
            }
            if let Some(networks) = service.get_mut("networks").and_then(Value::as_mapping_mut) {
                networks.values_mut().for_each(strip_extensions);
            }
        }
    }
    for key in ["volumes", "networks"] {
        if let Some(entries) = root.get_mut(key).and_then(Value::as_mapping_mut) {
            entries.values_mut().for_each(strip_extensions);
        }
    }
    Ok(root)
}

/// Drops the `x-*` keys of a mapping (Compose's extension fields).
fn strip_extensions(value: &mut Value) {
    if let Some(mapping) = value.as_mapping_mut() {
        mapping.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
    }
}

/// What `walk` calls on each string value: its path and the value.
type Visit<'a> = dyn FnMut(&[String], &mut String) -> Result<(), ComposeError> + 'a;

/// Calls `visit` on every string value (never a key), with its path of keys and indexes.
fn walk(
    value: &mut Value,
    path: &mut Vec<String>,
    visit: &mut Visit<'_>,
) -> Result<(), ComposeError> {
    match value {
        Value::String(s) => visit(path, s),
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                walk(item, path, visit)?;
                path.pop();
            }
            Ok(())
        }
        Value::Mapping(mapping) => walk_mapping(mapping, path, visit),
        Value::Tagged(tagged) => walk(&mut tagged.value, path, visit),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn walk_mapping(
    mapping: &mut Mapping,
    path: &mut Vec<String>,
    visit: &mut Visit<'_>,
) -> Result<(), ComposeError> {
    for (key, value) in mapping.iter_mut() {
        path.push(key_text(key));
        walk(value, path, visit)?;
        path.pop();
    }
    Ok(())
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

/// The tree into the typed model; an error names the key path and its line.
fn typed(text: &str, root: Value) -> Result<ComposeFile, ComposeError> {
    serde_path_to_error::deserialize(root).map_err(|err| {
        let mut path: Vec<String> = err
            .path()
            .iter()
            .filter_map(|segment| match segment {
                Segment::Map { key } => Some(key.clone()),
                Segment::Seq { index } => Some(index.to_string()),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        let message = err.into_inner().to_string();
        if let Some(field) = unknown_field(&message) {
            if path.last() != Some(&field) {
                path.push(field);
            }
        }
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        ComposeError::Syntax {
            line: line_of_path(text, &keys),
            message: match path.is_empty() {
                true => message,
                false => format!("{}: {message}", path.join(".")),
            },
        }
    })
}

/// The field of serde's "unknown field `x`, expected …".
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}
