//! An agent build as an OCI image, pure: one gzip layer holding the file `coracle-agent`
//! (mode 0755, owner 0, time 0, so the same binary always makes the same layer), a config
//! naming its platform, a manifest, and the release index that gathers one manifest per
//! platform under the version's tag. The index's descriptors carry the version and the
//! binary's digest as annotations, which is all `coracle agent ls` needs to read.

use std::io::Write;

use coracle_images::media_type;
use coracle_images::oci::Platform;
use coracle_proto::{Digest, AGENT_BINARY_FILE};
use serde_json::{json, Value};

/// Annotation: the release's version.
pub const VERSION_ANNOTATION: &str = "org.coracle.agent.version";
/// Annotation: `sha256:` of the binary file.
pub const BINARY_ANNOTATION: &str = "org.coracle.agent.binary";
/// Annotation: the binary's size in bytes.
pub const SIZE_ANNOTATION: &str = "org.coracle.agent.size";
/// Annotation (index entries): hex of the encoded `Signed<AgentRelease>`, the detached
/// signature of (version, platform, binary digest) by the deployment key.
pub const SIGNATURE_ANNOTATION: &str = "org.coracle.agent.signature";

/// The blobs and manifest of one platform's build.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub binary: Digest,
}

fn sha(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

/// The layer tar (uncompressed): the one file.
fn layer_tar(binary: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(binary.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, AGENT_BINARY_FILE, binary)?;
    builder.into_inner()
}

/// Builds the image of `binary` for `platform`.
pub fn platform_image(
    binary: &[u8],
    version: &str,
    platform: &Platform,
) -> std::io::Result<PlatformImage> {
    let tar = layer_tar(binary)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar)?;
    let layer = gz.finish()?;
    let mut config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]},
    });
    if let Some(variant) = &platform.variant {
        config["variant"] = json!(variant);
    }
    let config = serde_json::to_vec(&config).expect("a JSON value always serializes");
    let binary_digest = Digest::of(binary);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {"mediaType": media_type::OCI_CONFIG, "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": media_type::OCI_LAYER_GZIP, "digest": sha(&layer), "size": layer.len()}],
        "annotations": annotations(version, &binary_digest, binary.len()),
    });
    Ok(PlatformImage {
        layer,
        config,
        manifest: serde_json::to_vec(&manifest).expect("a JSON value always serializes"),
        binary: binary_digest,
    })
}

fn annotations(version: &str, binary: &Digest, size: usize) -> Value {
    json!({
        VERSION_ANNOTATION: version,
        BINARY_ANNOTATION: binary.to_string(),
        SIZE_ANNOTATION: size.to_string(),
    })
}

/// The release index with `image` for `platform` added to `existing` (replacing that
/// platform's entry, keeping the others).
pub fn merge_index(
    existing: Option<&[u8]>,
    image: &PlatformImage,
    version: &str,
    platform: &Platform,
    signature: &str,
) -> Result<Vec<u8>, String> {
    let mut manifests: Vec<Value> = match existing {
        None => Vec::new(),
        Some(bytes) => {
            let index: Value = serde_json::from_slice(bytes)
                .map_err(|e| format!("the stored release index is not JSON: {e}"))?;
            index["manifests"].as_array().cloned().unwrap_or_default()
        }
    };
    let wanted = json!(platform);
    manifests.retain(|m| m["platform"] != wanted);
    let mut platform_json = json!({"architecture": platform.architecture, "os": platform.os});
    if let Some(variant) = &platform.variant {
        platform_json["variant"] = json!(variant);
    }
    let mut entry_annotations = annotations(version, &image.binary, binary_size(image));
    entry_annotations[SIGNATURE_ANNOTATION] = json!(signature);
    manifests.push(json!({
        "mediaType": media_type::OCI_MANIFEST,
        "digest": sha(&image.manifest),
        "size": image.manifest.len(),
        "platform": platform_json,
        "annotations": entry_annotations,
    }));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    });
    Ok(serde_json::to_vec(&index).expect("a JSON value always serializes"))
}

fn binary_size(image: &PlatformImage) -> usize {
    serde_json::from_slice::<Value>(&image.manifest)
        .ok()
        .and_then(|m| m["annotations"][SIZE_ANNOTATION].as_str()?.parse().ok())
        .unwrap_or(0)
}

/// One platform's entry of a release index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub platform: String,
    pub manifest: Digest,
    pub binary: Digest,
    pub size: u64,
    /// See [`SIGNATURE_ANNOTATION`] (empty when missing).
    pub signature: String,
}

/// The platform entries of a release index.
pub fn index_entries(index: &[u8]) -> Vec<IndexEntry> {
    let Ok(index) = serde_json::from_slice::<Value>(index) else {
        return Vec::new();
    };
    let Some(manifests) = index["manifests"].as_array() else {
        return Vec::new();
    };
    manifests
        .iter()
        .filter_map(|m| {
            let platform: Platform = serde_json::from_value(m["platform"].clone()).ok()?;
            Some(IndexEntry {
                platform: platform.to_string(),
                manifest: m["digest"].as_str()?.parse().ok()?,
                binary: m["annotations"][BINARY_ANNOTATION].as_str()?.parse().ok()?,
                size: m["annotations"][SIZE_ANNOTATION]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                signature: m["annotations"][SIGNATURE_ANNOTATION]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    #[test]
    fn the_same_binary_makes_the_same_image() {
        let a = platform_image(b"\x7fELF...", "0.2.0", &platform("linux/arm64")).unwrap();
        let b = platform_image(b"\x7fELF...", "0.2.0", &platform("linux/arm64")).unwrap();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.binary, Digest::of(b"\x7fELF..."));
    }

    #[test]
    fn the_index_keeps_one_entry_per_platform() {
        let arm = platform_image(b"arm", "0.2.0", &platform("linux/arm64")).unwrap();
        let amd = platform_image(b"amd", "0.2.0", &platform("linux/amd64")).unwrap();
        let arm2 = platform_image(b"arm2", "0.2.0", &platform("linux/arm64")).unwrap();
        let index = merge_index(None, &arm, "0.2.0", &platform("linux/arm64"), "s1").unwrap();
        let index =
            merge_index(Some(&index), &amd, "0.2.0", &platform("linux/amd64"), "s2").unwrap();
        let index =
            merge_index(Some(&index), &arm2, "0.2.0", &platform("linux/arm64"), "s3").unwrap();
        let entries = index_entries(&index);
        assert_eq!(entries.len(), 2);
        let arm_entry = entries
            .iter()
            .find(|e| e.platform == "linux/arm64")
            .unwrap();
        assert_eq!(arm_entry.binary, Digest::of(b"arm2"));
        assert_eq!(arm_entry.size, 4);
        assert_eq!(arm_entry.signature, "s3");
        assert!(merge_index(Some(b"{"), &arm, "0.2.0", &platform("linux/arm64"), "s").is_err());
    }
}
