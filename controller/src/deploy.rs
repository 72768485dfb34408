//! Deploying an app to one device: image references in the app are pinned to digests from
//! the controller's registry, the services become the device's next `DesiredState`, which is
//! validated, signed with the deployment key, stored (the source of truth) and published
//! retained. Staged rollouts across many devices (`rollout/`) build on this step.

use coracle_proto::{encode, DesiredState, DeviceId, Generation, ImageRef, ServiceSpec, Signed};

use crate::fleet::{Fleet, FleetError};
use crate::registry::Registry;

/// What an `image:` value in an app names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageTarget {
    /// Already pinned (`repo@sha256:…`, possibly on another registry).
    Pinned(ImageRef),
    /// A tag in the controller's own registry (`repo[:tag]`, tag `latest` when absent).
    Local { repository: String, tag: String },
}

/// Parses an `image:` value. Images from other registries must be pinned by digest, since
/// the signature has to cover exactly what will run and the controller cannot look them up.
pub fn parse_image(text: &str) -> Result<ImageTarget, String> {
    if text.contains('@') {
        return text
            .parse::<ImageRef>()
            .map(ImageTarget::Pinned)
            .map_err(|e| e.to_string());
    }
    let first = text.split('/').next().unwrap_or_default();
    if text.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        return Err(format!(
            "{text:?} is on another registry: pin it by digest (NAME@sha256:...)"
        ));
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

/// Pins an `image:` value against the controller's registry.
pub fn resolve_image(registry: &Registry, text: &str) -> Result<ImageRef, String> {
    match parse_image(text)? {
        ImageTarget::Pinned(image) => Ok(image),
        ImageTarget::Local { repository, tag } => {
            let (digest, _) = registry
                .resolve(&repository, &tag)
                .map_err(|_| format!("{repository}:{tag} is not in the controller's registry"))?;
            let digest = digest
                .as_str()
                .parse()
                .map_err(|e: coracle_proto::RefError| e.to_string())?;
            Ok(ImageRef {
                registry: String::new(),
                repository,
                digest,
            })
        }
    }
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
        self.store.device(device)?;
        let generation = self
            .store
            .desired_generation(device)?
            .unwrap_or_default()
            .next();
        let state = DesiredState {
            device: device.clone(),
            generation,
            services,
        };
        state.validate().map_err(FleetError::InvalidApp)?;
        let signed = encode(&Signed::sign(&state, self.deployment_key()));
        // Stored but never deliverable otherwise: the agent (and the broker) refuse it.
        if signed.len() > coracle_proto::codec::MAX_BODY_BYTES {
            return Err(FleetError::DesiredTooLarge {
                device: device.clone(),
                bytes: signed.len(),
                limit: coracle_proto::codec::MAX_BODY_BYTES,
            });
        }
        self.store.put_desired(device, generation, &signed)?;
        let published = match self.client().publish_desired(device, signed).await {
            Ok(()) => {
                tracing::info!(device = %device, generation = %generation, "desired state deployed");
                true
            }
            Err(err) => {
                tracing::warn!(
                    device = %device,
                    generation = %generation,
                    error = %err,
                    "desired state stored but not published: it goes out when the broker is back"
                );
                false
            }
        };
        Ok(Deployment {
            generation,
            published,
        })
    }
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
        let pinned = format!("docker.io/library/busybox@sha256:{}", "ab".repeat(32));
        assert!(matches!(
            parse_image(&pinned).unwrap(),
            ImageTarget::Pinned(r) if r.registry == "docker.io"
        ));
        let err = parse_image("registry.example:5000/web:1").unwrap_err();
        assert!(err.contains("pin it by digest"), "{err}");
        assert!(parse_image("web:").is_err());
    }
}
