//! `labels:` (a map or a `KEY=VALUE` list): metadata Docker attaches to the container. A
//! device has no use for them yet and the wire has no field for them, so they are checked,
//! not sent (a rollout's record keeps the app text that holds them).

use super::model::Labels;

/// The labels as pairs; an empty key is an error.
pub fn pairs(labels: &Labels) -> Result<Vec<(String, String)>, String> {
    let pairs: Vec<(String, String)> = match labels {
        Labels::Map(map) => map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                )
            })
            .collect(),
        Labels::List(list) => list
            .iter()
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (item.clone(), String::new()),
            })
            .collect(),
    };
    match pairs.iter().find(|(k, _)| k.trim().is_empty()) {
        Some((_, v)) => Err(format!("a label with value {v:?} has no key")),
        None => Ok(pairs),
    }
}
