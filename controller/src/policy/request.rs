//! What the policy judges: an app's services (images pinned, fields validated) and, from
//! its compose file, which services asked for the host's network by name. A service without
//! `network_mode` joins the app's own networks (as in Compose), so only `network_mode: host`
//! as written is a request for the host's network.

use std::collections::BTreeSet;

use coracle_proto::ServiceSpec;

use crate::compose::ComposeFile;

/// An app as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct AppRequest<'a> {
    pub services: &'a [ServiceSpec],
    host_network: &'a BTreeSet<String>,
}

/// The services of `file` that say `network_mode: host`.
pub fn host_network_services(file: &ComposeFile) -> BTreeSet<String> {
    file.services
        .iter()
        .filter(|(_, s)| s.network_mode.as_deref() == Some("host"))
        .map(|(name, _)| name.clone())
        .collect()
}

impl<'a> AppRequest<'a> {
    /// `host_network`: from [`host_network_services`].
    pub fn new(services: &'a [ServiceSpec], host_network: &'a BTreeSet<String>) -> Self {
        Self {
            services,
            host_network,
        }
    }

    /// Whether `service` asked for the host's network.
    pub fn asks_host_network(&self, service: &ServiceSpec) -> bool {
        self.host_network.contains(service.name.as_str())
    }
}
