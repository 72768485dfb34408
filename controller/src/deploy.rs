//! Deploying an app to one device: image references in the app are pinned to digests from
//! the controller's registry — images of other registries are mirrored into it first
//! (`upstream/`), except those of direct registries, only pinned, which devices pull
//! themselves with a credential sealed for them (`upstream::direct`) — the services become the device's next `DesiredState`, which is
//! validated, signed with the deployment key, stored (the source of truth) and published
//! retained. Staged rollouts across many devices (`rollout/`) build on this step.

use std::collections::BTreeMap;

use coracle_proto::{
    encode, DesiredState, DeviceId, Digest, Generation, ImageRef, RegistryAccess, ServiceSpec,
    Signed,
};

use crate::compose::{self, ComposeError, ComposeFile, ProfileFiles};
use crate::fleet::{Fleet, FleetError};
use crate::registry::Registry;
use crate::store::{NewDesired, StoreError};
use crate::upstream::reference::names_host;
use crate::upstream::{Mirror, UpstreamRef};

/// What an `image:` value in an app names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageTarget {
    /// Pinned by digest in the controller's registry (`repo@sha256:…`, no host).
    Pinned(ImageRef),
    /// A short name (`repo[:tag]`, tag `latest` when absent): the controller's own registry
    /// if it holds the tag, else the same name on Docker Hub, as `docker pull` reads it.
    Local { repository: String, tag: String },
    /// An image on the registry its first component names (`ghcr.io/org/app:2`).
    Upstream(UpstreamRef),
}

/// Classifies an `image:` value; no I/O.
pub fn parse_image(text: &str) -> Result<ImageTarget, String> {
    if names_host(text) {
        return UpstreamRef::parse(text)
            .map(ImageTarget::Upstream)
            .map_err(|e| e.to_string());
    }
    if text.contains('@') {
        return text
            .parse::<ImageRef>()
            .map(ImageTarget::Pinned)
            .map_err(|e| e.to_string());
    }
    let (repository, tag) = match text.rsplit_once(':') {
        Some((repo, tag)) => (repo, tag),
        None => (text, "latest"),
    };
    if repository.is_empty() || tag.is_empty() {
        return Err(format!("{text:?} is not an image reference"));
    }
    Ok(ImageTarget::Local {
        repository: repository.to_string(),
        tag: tag.to_string(),
    })
}

/// A tag of the controller's own registry, pinned; `None` when it does not hold it.
fn resolve_local(registry: &Registry, repository: &str, tag: &str) -> Option<ImageRef> {
    let (digest, _) = registry.resolve(repository, tag).ok()?;
    Some(ImageRef {
        registry: String::new(),
        repository: repository.to_string(),
        digest: digest.as_str().parse().ok()?,
    })
}

/// Pins an `image:` value: the controller's registry first, else mirrored from upstream.
/// The error text is what the operator sees under the service's `image`.
pub async fn resolve_image(
    registry: &Registry,
    mirror: &Mirror,
    text: &str,
) -> Result<ImageRef, String> {
    use crate::api::error::error_chain as chain;
    match parse_image(text)? {
        ImageTarget::Pinned(image) => Ok(image),
        ImageTarget::Upstream(upstream) if mirror.is_direct(&upstream.host) => {
            mirror.pin_direct(&upstream).await.map_err(|e| chain(&e))
        }
        ImageTarget::Upstream(upstream) => mirror.mirror(&upstream).await.map_err(|e| chain(&e)),
        ImageTarget::Local { repository, tag } => {
            // A replica may know the tag only from the bucket another controller wrote.
            registry.refresh_entries(&repository, &tag).await;
            if let Some(image) = resolve_local(registry, &repository, &tag) {
                return Ok(image);
            }
            let missing = format!("{repository}:{tag} is not in the controller's registry");
            let upstream = UpstreamRef::parse(text).map_err(|e| format!("{missing}, and {e}"))?;
            mirror
                .mirror(&upstream)
                .await
                .map_err(|e| format!("{missing}, and pulling {upstream} failed: {}", chain(&e)))
        }
    }
}

/// An app's services with every image pinned. The fields are checked before any image is
/// pulled, so a typo costs no download; each distinct image is resolved once.
pub async fn app_services(
    registry: &Registry,
    mirror: &Mirror,
    text: &str,
    file: &ComposeFile,
    profiles: &ProfileFiles,
) -> Result<Vec<ServiceSpec>, ComposeError> {
    let placeholder = ImageRef {
        registry: String::new(),
        repository: "unresolved".into(),
        digest: Digest::from_bytes([0; 32]),
    };
    compose::to_specs(text, file, profiles, &|_| Ok(placeholder.clone()))?;
    let mut pinned: BTreeMap<&str, Result<ImageRef, String>> = BTreeMap::new();
    for service in file.services.values() {
        if !pinned.contains_key(service.image.as_str()) {
            let resolved = resolve_image(registry, mirror, &service.image).await;
            pinned.insert(&service.image, resolved);
        }
    }
    compose::to_specs(text, file, profiles, &|image| {
        pinned
            .get(image)
            .cloned()
            .unwrap_or_else(|| Err(format!("{image} was not resolved")))
    })
}

/// A stored desired state and whether it reached the broker now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    pub generation: Generation,
    /// False when the broker was unreachable: the state is stored (the store is the source
    /// of truth) and goes out when the controller's client reconnects or the controller
    /// starts, both of which republish every device's desired state.
    pub published: bool,
}

impl Fleet {
    /// Makes `services` the device's next desired state: validated, signed, stored, then
    /// published. A broker that cannot take it now does not undo it (see [`Deployment`]).
    pub async fn deploy(
        &self,
        device: &DeviceId,
        services: Vec<ServiceSpec>,
    ) -> Result<Deployment, FleetError> {
        self.deploy_with_registries(device, services, Vec::new())
            .await
    }

    /// [`Self::deploy`] with the device's access to the direct registries its images name.
    pub async fn deploy_with_registries(
        &self,
        device: &DeviceId,
        services: Vec<ServiceSpec>,
        registries: Vec<RegistryAccess>,
    ) -> Result<Deployment, FleetError> {
        let request = DeployRequest {
            device: device.clone(),
            services,
            registries,
        };
        let mut outcomes = self.deploy_many(vec![request]).await?;
        outcomes.pop().unwrap_or_else(|| {
            Err(FleetError::Store(StoreError::DeviceNotFound {
                device: device.to_string(),
            }))
        })
    }

    /// Deploys to many distinct devices at once (a rollout's wave): their generations read
    /// in one query, every state signed and stored in one transaction, then published.
    /// The outer error is the store's (nothing was stored); the inner ones, in the order of
    /// `requests`, are each device's own (removed, an invalid or oversized state).
    pub async fn deploy_many(
        &self,
        requests: Vec<DeployRequest>,
    ) -> Result<Vec<Result<Deployment, FleetError>>, StoreError> {
        let ids: Vec<DeviceId> = requests.iter().map(|r| r.device.clone()).collect();
        let existing = self.store.existing_devices(&ids)?;
        let generations = self.store.desired_generations_of(&ids)?;
        let mut outcomes: Vec<Result<Generation, FleetError>> = Vec::with_capacity(ids.len());
        let mut states = Vec::new();
        for request in requests {
            if !existing.contains(&request.device) {
                outcomes.push(Err(FleetError::Store(StoreError::DeviceNotFound {
                    device: request.device.to_string(),
                })));
                continue;
            }
            let generation = generations
                .get(&request.device)
                .copied()
                .unwrap_or_default()
                .next();
            let state = DesiredState {
                registries: request.registries,
                device: request.device,
                generation,
                services: request.services,
            };
            match state.validate() {
                Ok(()) => {
                    outcomes.push(Ok(generation));
                    states.push((outcomes.len() - 1, state));
                }
                Err(invalid) => outcomes.push(Err(FleetError::InvalidApp(invalid))),
            }
        }
        // Signed and stored under the key lock, so a rotation signs these states again too.
        let signed = self.deployment_keys().sign_with(|key| {
            let mut signed = Vec::with_capacity(states.len());
            for (index, state) in &states {
                let body = encode(&Signed::sign(state, key));
                // Stored but never deliverable otherwise: the agent (and the broker) refuse it.
                if body.len() > coracle_proto::codec::MAX_BODY_BYTES {
                    outcomes[*index] = Err(FleetError::DesiredTooLarge {
                        device: state.device.clone(),
                        bytes: body.len(),
                        limit: coracle_proto::codec::MAX_BODY_BYTES,
                    });
                    continue;
                }
                signed.push((*index, state, body));
            }
            let rows: Vec<NewDesired<'_>> = signed
                .iter()
                .map(|(_, state, body)| NewDesired {
                    device: &state.device,
                    generation: state.generation,
                    signed: body,
                })
                .collect();
            self.store.put_desired_many(&rows)?;
            Ok::<_, StoreError>(signed)
        })?;
        let mut published = vec![false; outcomes.len()];
        let mut unpublished: Option<(usize, crate::broker::client::ClientError)> = None;
        for (index, state, body) in signed {
            match self.client().publish_desired(&state.device, body).await {
                Ok(()) => {
                    tracing::info!(device = %state.device, generation = %state.generation, "desired state deployed");
                    published[index] = true;
                }
                Err(err) => unpublished.get_or_insert((0, err)).0 += 1,
            }
        }
        // One line for the lot: a broker down during a wave fails every publish.
        if let Some((devices, error)) = unpublished {
            tracing::warn!(
                devices,
                error = %error,
                "desired states stored but not published: they go out when the broker is back"
            );
        }
        Ok(outcomes
            .into_iter()
            .zip(published)
            .map(|(outcome, published)| {
                outcome.map(|generation| Deployment {
                    generation,
                    published,
                })
            })
            .collect())
    }
}

/// One device's next app, for [`Fleet::deploy_many`].
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub device: DeviceId,
    pub services: Vec<ServiceSpec>,
    /// Its access to the direct registries the services' images name.
    pub registries: Vec<RegistryAccess>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_values_are_classified() {
        assert_eq!(
            parse_image("hello").unwrap(),
            ImageTarget::Local {
                repository: "hello".into(),
                tag: "latest".into()
            }
        );
        assert_eq!(
            parse_image("apps/web:1.2").unwrap(),
            ImageTarget::Local {
                repository: "apps/web".into(),
                tag: "1.2".into()
            }
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert!(matches!(
            parse_image(&format!("web@{digest}")).unwrap(),
            ImageTarget::Pinned(r) if r.registry.is_empty() && r.repository == "web"
        ));
        let pinned = format!("docker.io/library/busybox@{digest}");
        assert!(matches!(
            parse_image(&pinned).unwrap(),
            ImageTarget::Upstream(r) if r.host == "docker.io" && r.repository == "library/busybox"
        ));
        assert!(matches!(
            parse_image("registry.example:5000/web:1").unwrap(),
            ImageTarget::Upstream(r) if r.host == "registry.example:5000"
        ));
        assert!(matches!(
            parse_image("ghcr.io/org/app:2").unwrap(),
            ImageTarget::Upstream(r) if r.host == "ghcr.io" && r.repository == "org/app"
        ));
        assert!(parse_image("web:").is_err());
        assert!(parse_image("ghcr.io/Org/app:2").is_err());
    }
}
