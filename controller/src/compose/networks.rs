//! App networks, as Docker Compose defines them: top-level `networks:` declares bridges of
//! the app's own (only the `bridge` driver, `internal`, `labels`; keys a device cannot honour
//! are refused by name in `refused::NETWORK`), a service joins the ones its `networks:` names
//! (a list, or a map with `aliases`) or else `default`, and `network_mode` picks the
//! device's network (`host`) or none (`none`) instead.

use std::collections::BTreeMap;

use coracle_proto::network::{NetworkAttachment, DEFAULT_NETWORK};
use coracle_proto::{NetworkMode, Tuning};

use super::lines::line_of_path;
use super::model::{AppNetwork, ComposeFile, ComposeService, ServiceNetworks};
use super::refused::PREFIX;
use super::{labels, ComposeError, FieldResult};

/// The app's declared networks.
pub(super) type Declared = BTreeMap<String, Option<AppNetwork>>;

/// Checks every declared network.
pub(super) fn check(text: &str, file: &ComposeFile) -> Result<(), ComposeError> {
    for (name, network) in &file.networks {
        let Some(network) = network else { continue };
        let refuse = |key: &str, why: &str| ComposeError::Refused {
            line: line_of_path(text, &["networks", name, key]),
            key: format!("networks.{name}.{key}"),
            reason: format!("{PREFIX}: {why}"),
        };
        if let Some(driver) = network.driver.as_deref().filter(|d| *d != "bridge") {
            return Err(refuse(
                "driver",
                &format!("network driver {driver:?} (app networks are bridges)"),
            ));
        }
        let external = match &network.external {
            None | Some(serde_yaml::Value::Bool(false)) => false,
            Some(serde_yaml::Value::String(s)) => s != "false",
            Some(_) => true,
        };
        if external {
            return Err(refuse(
                "external",
                "external networks (a device creates the networks an app declares)",
            ));
        }
        if let Some(labels) = &network.labels {
            labels::pairs(labels).map_err(|reason| ComposeError::Refused {
                line: line_of_path(text, &["networks", name, "labels"]),
                key: format!("networks.{name}.labels"),
                reason,
            })?;
        }
    }
    Ok(())
}

/// The service's `network_mode`: none given is the app's networks, as in Compose.
pub(super) fn mode(s: &ComposeService) -> FieldResult<NetworkMode> {
    let mode = match s.network_mode.as_deref() {
        None | Some("bridge") | Some("private") => NetworkMode::Private,
        Some("host") => NetworkMode::Host,
        Some("none") => NetworkMode::None,
        Some(other) if other.starts_with("service:") || other.starts_with("container:") => {
            return Err((
                "network_mode",
                format!("{other:?}: {PREFIX}: sharing another container's network"),
            ))
        }
        Some(other) => {
            return Err((
                "network_mode",
                format!("{other:?} is not host, none or bridge"),
            ))
        }
    };
    if let (Some(written), Some(_)) = (&s.network_mode, &s.networks) {
        return Err((
            "network_mode",
            format!("{written:?} and networks exclude each other (as in Docker Compose)"),
        ));
    }
    Ok(mode)
}

/// The `Network` entries of a service on the app's networks (`default` when it names
/// none); nothing for `host` or `none`.
pub(super) fn attachments(
    s: &ComposeService,
    mode: NetworkMode,
    declared: &Declared,
) -> FieldResult<Vec<Tuning>> {
    if mode != NetworkMode::Private {
        return Ok(Vec::new());
    }
    let named: Vec<(String, Vec<String>)> = match &s.networks {
        None => vec![(DEFAULT_NETWORK.to_string(), Vec::new())],
        Some(ServiceNetworks::List(names)) => {
            names.iter().map(|n| (n.clone(), Vec::new())).collect()
        }
        Some(ServiceNetworks::Map(map)) => map
            .iter()
            .map(|(n, entry)| {
                let aliases = entry.as_ref().map(|e| e.aliases.clone());
                (n.clone(), aliases.unwrap_or_default())
            })
            .collect(),
    };
    named
        .into_iter()
        .map(|(name, aliases)| {
            let internal = match declared.get(&name) {
                Some(network) => network.as_ref().and_then(|n| n.internal),
                None if name == DEFAULT_NETWORK => None,
                None => {
                    return Err((
                        "networks",
                        format!("{name:?} is not declared under the top-level networks"),
                    ))
                }
            };
            Ok(Tuning::Network(NetworkAttachment {
                name,
                aliases,
                internal: internal.unwrap_or(false),
            }))
        })
        .collect()
}
