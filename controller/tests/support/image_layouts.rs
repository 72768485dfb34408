//! One-layer OCI layouts built in a test (incompressible file contents, gzip layer, this
//! host's platform) for pushes with skopeo: two versions of one image make a delta pair.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use coracle_agent::platform::this_device as host_platform;
use sha2::{Digest as _, Sha256};

use super::Controller;

pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic incompressible bytes, so the full layer is large and a delta must reuse it.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn layer_tar(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, name, data.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = sha(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
    digest
}

/// Writes a one-layer OCI layout holding `tar` (gzip) for this host's platform.
pub fn oci_layout(layout: &Path, tar: &[u8]) -> (String, u64) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(tar).unwrap();
    let gz = gz.finish().unwrap();
    let layer = put_blob(layout, &gz);
    let platform = host_platform();
    let config = serde_json::json!({
        "architecture": platform.architecture, "os": platform.os,
        "config": {"Cmd": ["/app"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(tar)]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = put_blob(layout, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer, "size": gz.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put_blob(layout, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    (manifest_digest, gz.len() as u64)
}

/// Pushes the layout's image to `repository:tag` with skopeo and the admin token.
pub fn push_to(controller: &Controller, layout: &Path, repository: &str, tag: &str) {
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("coracle:{}", controller.admin_token()),
            &format!("oci:{}:1", layout.display()),
            &format!("docker://{}/{repository}:{tag}", controller.registry),
        ])
        .output()
        .expect("skopeo must be installed (.ci/packages.txt)");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
