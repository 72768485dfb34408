//! `profiles:` as Docker Compose reads them: a service without profiles always runs; one with
//! profiles runs only when one of them is active (`coracle deploy --profile`, or
//! `COMPOSE_PROFILES`; `*` activates all). A service left running that depends on a dropped
//! one is an error.

use super::lines::line_of_path;
use super::model::{ComposeFile, DependsOn};
use super::ComposeError;

/// Whether a service with these profiles runs under the active ones.
pub fn runs(profiles: &[String], active: &[String]) -> bool {
    profiles.is_empty()
        || active
            .iter()
            .any(|a| a == "*" || profiles.iter().any(|p| p == a))
}

/// Whether the service's tree (before the typed model) runs; used to skip the env files of
/// services that will be dropped, as Docker Compose does.
pub fn tree_runs(service: &serde_yaml::Value, active: &[String]) -> bool {
    let profiles: Vec<String> = service
        .get("profiles")
        .and_then(serde_yaml::Value::as_sequence)
        .map(|p| {
            p.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    runs(&profiles, active)
}

/// The app with only the services the active profiles select.
pub fn select(
    text: &str,
    mut file: ComposeFile,
    active: &[String],
) -> Result<ComposeFile, ComposeError> {
    let runs = |profiles: &[String]| runs(profiles, active);
    let dropped: Vec<(String, Vec<String>)> = file
        .services
        .iter()
        .filter(|(_, s)| !runs(&s.profiles))
        .map(|(name, s)| (name.clone(), s.profiles.clone()))
        .collect();
    file.services.retain(|_, s| runs(&s.profiles));
    for (name, service) in &file.services {
        let deps: Vec<&String> = match &service.depends_on {
            None => continue,
            Some(DependsOn::List(list)) => list.iter().collect(),
            Some(DependsOn::Map(map)) => map.keys().collect(),
        };
        for dep in deps {
            if let Some((_, profiles)) = dropped.iter().find(|(d, _)| d == dep) {
                return Err(ComposeError::Field {
                    line: line_of_path(text, &["services", name, "depends_on"]),
                    service: name.clone(),
                    field: "depends_on",
                    reason: format!(
                        "{dep:?} is not deployed: none of its profiles ({}) is active \
                         (coracle deploy --profile NAME, or COMPOSE_PROFILES)",
                        profiles.join(", ")
                    ),
                });
            }
        }
    }
    Ok(file)
}
