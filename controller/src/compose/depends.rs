//! `depends_on:` — the short list or the long map (condition per dependency), checked
//! against the app's services. Docker's optional dependencies and restarting dependents are
//! refused by name: a device starts every service of the app.

use std::collections::BTreeMap;

use coracle_proto::{Dependency, DependencyCondition};

use super::model::{ComposeService, DependsOn};
use super::{refused, FieldResult};

/// The service's dependencies, each on a service of the app.
pub(super) fn dependencies(
    s: &ComposeService,
    all: &BTreeMap<String, ComposeService>,
) -> FieldResult<Vec<Dependency>> {
    if let Some(DependsOn::Map(map)) = &s.depends_on {
        for (dep, entry) in map {
            if entry.required == Some(false) {
                return Err((
                    "depends_on",
                    format!(
                        "{dep}: required: false is {}: optional dependencies",
                        refused::PREFIX
                    ),
                ));
            }
            if entry.restart.is_some() {
                return Err((
                    "depends_on",
                    format!(
                        "{dep}: restart is {}: restarting dependents",
                        refused::PREFIX
                    ),
                ));
            }
        }
    }
    Ok(match &s.depends_on {
        None => Vec::new(),
        Some(deps) => deps
            .entries()
            .into_iter()
            .map(|(service, condition)| {
                if !all.contains_key(&service) {
                    return Err(format!("names unknown service {service:?}"));
                }
                let condition = match condition.as_deref() {
                    None | Some("service_started") => DependencyCondition::Started,
                    Some("service_healthy") => DependencyCondition::Healthy,
                    Some("service_completed_successfully") => {
                        DependencyCondition::CompletedSuccessfully
                    }
                    Some(other) => return Err(format!("condition {other:?} is not supported")),
                };
                let service = service
                    .parse()
                    .map_err(|e: coracle_proto::IdError| e.to_string())?;
                Ok(Dependency { service, condition })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| ("depends_on", e))?,
    })
}

impl DependsOn {
    /// Each dependency with its condition (none in the short list form).
    fn entries(&self) -> Vec<(String, Option<String>)> {
        match self {
            DependsOn::List(list) => list.iter().map(|s| (s.clone(), None)).collect(),
            DependsOn::Map(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.condition.clone()))
                .collect(),
        }
    }
}
