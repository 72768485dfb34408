//! Which platforms the images of an app run on, and the check that refuses to deploy it to a
//! device that runs another one ("image hello has linux/arm64 only; device pi-3 is
//! linux/arm/v7") before anything reaches the device. Images in the controller's registry
//! (pushed or mirrored) are read there, images on direct registries from those registries.
//! Devices that have not reported their platform yet are not checked: the agent still
//! refuses a foreign binary at start, naming both platforms.

use coracle_images::oci::Platform;
use coracle_proto::{DeviceId, ServiceSpec};

use crate::api::error::error_chain;
use crate::registry::Registry;
use crate::upstream::Mirror;

/// The platforms of each image of an app that the controller's registry holds.
#[derive(Debug, Clone, Default)]
pub struct AppPlatforms {
    /// (image as the operator knows it, the platforms it offers)
    images: Vec<(String, Vec<Platform>)>,
}

impl AppPlatforms {
    /// Reads the platforms of every image of `services`: from the controller's registry, or
    /// from the direct registry the image is pinned on.
    pub async fn of(
        registry: &Registry,
        mirror: &Mirror,
        services: &[ServiceSpec],
    ) -> Result<Self, String> {
        let mut images: Vec<(String, Vec<Platform>)> = Vec::new();
        for service in services {
            let image = &service.image;
            let name = if image.registry.is_empty() {
                format!("{}@{}", image.repository, image.digest)
            } else {
                image.to_string()
            };
            if images.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let failed = |err: String| format!("service {}: image {name}: {err}", service.name);
            let platforms = if image.registry.is_empty() {
                // Pinned by digest on another replica: its manifests may be in the bucket only.
                let digest = image.digest.to_string();
                registry.refresh_entries(&image.repository, &digest).await;
                registry
                    .image_platforms(&image.repository, &image.digest.to_string())
                    .map_err(|err| failed(err.to_string()))?
            } else if mirror.is_direct(&image.registry) {
                let platforms = mirror.direct_platforms(image).await;
                Some(platforms.map_err(|err| failed(error_chain(&err)))?)
            } else {
                None
            };
            if let Some(platforms) = platforms {
                images.push((name, platforms));
            }
        }
        Ok(Self { images })
    }

    /// Refuses when the device has reported a platform that some image does not offer.
    pub fn check(&self, device: &DeviceId, device_platform: &str) -> Result<(), String> {
        let Some(wanted) = Platform::parse(device_platform) else {
            return Ok(()); // not reported yet (or by an older agent)
        };
        for (name, offered) in &self.images {
            if offered.is_empty() || offered.iter().any(|p| runs_on(p, &wanted)) {
                continue;
            }
            let list: Vec<String> = offered.iter().map(Platform::to_string).collect();
            return Err(format!(
                "image {name} has {} only; device {device} is {device_platform}",
                list.join(", ")
            ));
        }
        Ok(())
    }
}

/// Whether an image built for `image` runs on a device of platform `device`, as Docker
/// matches them: same OS and architecture; a 32-bit ARM device runs its own variant and older
/// ones (a v7 board runs v6 images); arm64's `v8` is the only arm64 there is.
pub fn runs_on(image: &Platform, device: &Platform) -> bool {
    if image.os != device.os || image.architecture != device.architecture {
        return false;
    }
    let level =
        |v: &Option<String>| -> Option<u32> { v.as_deref()?.strip_prefix('v')?.parse().ok() };
    match image.architecture.as_str() {
        "arm64" => true,
        "arm" => match (level(&image.variant), level(&device.variant)) {
            (Some(image), Some(device)) => image <= device,
            _ => true,
        },
        _ => match (&image.variant, &device.variant) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    #[test]
    fn runs_on_table() {
        let cases = [
            ("linux/arm64", "linux/arm64", true),
            ("linux/arm64/v8", "linux/arm64", true),
            ("linux/arm/v7", "linux/arm/v7", true),
            ("linux/arm/v6", "linux/arm/v7", true),
            ("linux/arm/v7", "linux/arm/v6", false),
            ("linux/arm", "linux/arm/v7", true),
            ("linux/arm64", "linux/arm/v7", false),
            ("linux/amd64", "linux/arm64", false),
            ("linux/amd64", "linux/amd64", true),
            ("windows/amd64", "linux/amd64", false),
        ];
        for (image, device, want) in cases {
            assert_eq!(
                runs_on(&platform(image), &platform(device)),
                want,
                "{image} on {device}"
            );
        }
    }

    #[test]
    fn check_names_the_image_its_platforms_and_the_device() {
        let app = AppPlatforms {
            images: vec![("web@sha256:ab".into(), vec![platform("linux/arm64")])],
        };
        let device: DeviceId = "pi-3".parse().unwrap();
        let err = app.check(&device, "linux/arm/v7").unwrap_err();
        assert_eq!(
            err,
            "image web@sha256:ab has linux/arm64 only; device pi-3 is linux/arm/v7"
        );
        app.check(&device, "linux/arm64").unwrap();
        // A device that has not reported its platform is not refused.
        app.check(&device, "").unwrap();
    }
}
