//! The OCI image model: index, manifest, config (plus Docker schema 2 equivalents) and
//! platform selection from multi-arch indexes. Unknown fields are kept out, not rejected:
//! registries add annotations freely.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media_type;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("parse {what} json")]
    ParseJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("index has no manifest for platform {wanted}; it offers {offered:?}")]
    SelectPlatform {
        wanted: String,
        offered: Vec<String>,
    },
    #[error("manifest has {layers} layers but its config lists {diff_ids} diff_ids")]
    CountDiffIds { layers: usize, diff_ids: usize },
}

/// A content descriptor (also used for Docker schema 2, which has the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OS/architecture pair with an optional variant (`linux/arm/v7`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parse `os/arch[/variant]`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('/');
        let os = parts.next()?.to_owned();
        let architecture = parts.next()?.to_owned();
        let variant = parts.next().map(str::to_owned);
        if parts.next().is_some() || os.is_empty() || architecture.is_empty() {
            return None;
        }
        Some(Self {
            architecture,
            os,
            variant,
        })
    }

    /// The platform of the running build, in OCI's spelling (the armv7 build runs 32-bit ARM
    /// userlands, whose images are `linux/arm/v7`).
    pub fn this_build() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7".to_string())),
            "x86" => ("386", None),
            other => (other, None),
        };
        Self {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant,
        }
    }

    /// Does an index entry for `self` run on `wanted`? arm64 entries often omit `v8`.
    pub fn matches(&self, wanted: &Platform) -> bool {
        let normal = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_owned),
        };
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none() || normal(self) == normal(wanted))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// OCI image index or Docker manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

impl Index {
    pub fn parse(bytes: &[u8]) -> Result<Self, OciError> {
        serde_json::from_slice(bytes).map_err(|source| OciError::ParseJson {
            what: "index",
            source,
        })
    }

    /// The manifest for `wanted`; an index with one manifest and no platform is taken as is.
    pub fn select(&self, wanted: &Platform) -> Result<&Descriptor, OciError> {
        let found = self
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(wanted)));
        match found {
            Some(d) => Ok(d),
            None if self.manifests.len() == 1 && self.manifests[0].platform.is_none() => {
                Ok(&self.manifests[0])
            }
            None => Err(OciError::SelectPlatform {
                wanted: wanted.to_string(),
                offered: self
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(Platform::to_string)
                    .collect(),
            }),
        }
    }
}

/// OCI image manifest or Docker schema 2 manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, OciError> {
        serde_json::from_slice(bytes).map_err(|source| OciError::ParseJson {
            what: "manifest",
            source,
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serialises")
    }

    /// True for Docker schema 2 manifests (as opposed to OCI).
    pub fn is_docker(&self) -> bool {
        self.media_type.as_deref() == Some(media_type::DOCKER_MANIFEST)
    }
}

/// The parts of an image config Coracle reads; other fields are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, OciError> {
        serde_json::from_slice(bytes).map_err(|source| OciError::ParseJson {
            what: "config",
            source,
        })
    }

    /// Check that the image runs on `wanted` (for indexes that carry no platform).
    pub fn check_platform(&self, wanted: &Platform) -> Result<(), OciError> {
        let have = Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
        };
        if have.matches(wanted) {
            Ok(())
        } else {
            Err(OciError::SelectPlatform {
                wanted: wanted.to_string(),
                offered: vec![have.to_string()],
            })
        }
    }

    /// Check that the manifest and config agree on the number of layers.
    pub fn check_layers(&self, manifest: &Manifest) -> Result<(), OciError> {
        if self.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(OciError::CountDiffIds {
                layers: manifest.layers.len(),
                diff_ids: self.rootfs.diff_ids.len(),
            });
        }
        Ok(())
    }
}

/// How the container is run (`config` inside the image config).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: &str) -> Descriptor {
        Descriptor {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: Digest::of(platform.as_bytes()),
            size: 1,
            platform: Platform::parse(platform),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn index_selects_each_edge_platform() {
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                entry("linux/amd64"),
                entry("linux/arm/v7"),
                entry("linux/arm64/v8"),
            ],
        };
        for (wanted, expect) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("linux/arm64", "linux/arm64/v8"),
        ] {
            let got = index.select(&Platform::parse(wanted).unwrap()).unwrap();
            assert_eq!(got.digest, Digest::of(expect.as_bytes()), "{wanted}");
        }
        let err = index
            .select(&Platform::parse("linux/arm/v6").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("linux/arm/v6"), "{err}");
    }

    #[test]
    fn docker_schema2_manifest_parses() {
        let json = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
          "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
          "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}]}"#;
        let m = Manifest::parse(json).unwrap();
        assert!(m.is_docker());
        assert_eq!(m.layers.len(), 1);
        let again = Manifest::parse(&m.to_json()).unwrap();
        assert_eq!(again.layers[0], m.layers[0]);
    }

    #[test]
    fn manifest_with_bad_digest_is_refused() {
        let json = br#"{"schemaVersion":2,"config":{"mediaType":"x","size":1,"digest":"sha256:nothex"},"layers":[]}"#;
        let err = Manifest::parse(json).unwrap_err();
        assert!(format!("{:#}", anyhow_chain(&err)).contains("manifest"));
    }

    fn anyhow_chain(e: &OciError) -> String {
        format!(
            "{e}: {}",
            std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        )
    }
}
