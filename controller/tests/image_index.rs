//! Issue 19: a multi-platform image (an OCI index) is shown per platform — each platform's
//! layers and size in `GET /api/v1/images` (the dashboard's Images page), `coracle image
//! inspect` and `coracle image ls` — instead of as a 0-layer image of the index's own size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::registry_client::{digest_of, RegistryClient, INDEX_TYPE, MANIFEST_TYPE};
use support::{api, Controller};

/// Pushes a one-layer image for `arch`; its manifest (digest, size).
fn push_image(registry: &RegistryClient, arch: &str, layer: &[u8]) -> (String, usize) {
    let config = json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]}}).to_string();
    let config_digest = registry.push_blob("app", config.as_bytes());
    let layer_digest = registry.push_blob("app", layer);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    });
    let digest = digest_of(manifest.to_string().as_bytes());
    let put = registry.put_manifest("app", &digest, MANIFEST_TYPE, &manifest);
    assert_eq!(put.status, 201);
    (digest, manifest.to_string().len())
}

#[test]
fn an_index_is_shown_per_platform() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    let (amd64, amd64_size) = push_image(&registry, "amd64", &[1; 3000]);
    let (arm64, arm64_size) = push_image(&registry, "arm64", &[2; 5000]);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [
            {"mediaType": MANIFEST_TYPE, "digest": amd64, "size": amd64_size, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": MANIFEST_TYPE, "digest": arm64, "size": arm64_size, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    });
    assert_eq!(
        registry
            .put_manifest("app", "multi", INDEX_TYPE, &index)
            .status,
        201
    );

    let repos: serde_json::Value = api(&controller).get("list images", "/images").unwrap();
    let tag = &repos[0]["tags"][0];
    assert_eq!(tag["tag"], "multi");
    let platforms = tag["platforms"].as_array().unwrap();
    let named: Vec<(&str, usize)> = platforms
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().unwrap(),
                p["layers"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(named, [("linux/amd64", 1), ("linux/arm64/v8", 1)]);
    let per_platform: u64 = platforms.iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert!(per_platform > 8000, "{platforms:?}");
    assert_eq!(
        tag["size"].as_u64().unwrap(),
        per_platform + index.to_string().len() as u64
    );

    let inspect = controller.cli(&["image", "inspect", "app:multi"]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success(), "{inspect:?}");
    assert!(text.contains("index "), "{text}");
    assert!(
        text.contains("linux/amd64") && text.contains("linux/arm64/v8"),
        "{text}"
    );
    assert!(text.contains("1 layers"), "{text}");
    let ls = controller.cli(&["image", "ls"]);
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains("(2 platforms)"),
        "{ls:?}"
    );
}
