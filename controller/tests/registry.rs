//! The OCI registry with a real client: Debian's `skopeo` pushes a fixture image and pulls
//! it back; Range requests, authentication and digest verification over plain HTTP.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use sha2::{Digest as _, Sha256};
use support::Controller;

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo must be installed (.ci/packages.txt)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

#[test]
fn skopeo_pushes_and_pulls_back_the_same_image() {
    let controller = Controller::start();
    let creds = format!("coracle:{}", controller.admin_token());
    let dest = format!("docker://{}/library/app:1", controller.registry);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!(
            "oci-archive:{}",
            support::fixture("busybox-oci.tar").display()
        ),
        &dest,
    ]);

    let back = controller.dir.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &dest,
        &format!("oci:{}:1", back.display()),
    ]);

    // The manifest we serve is the one skopeo stored, and every blob it names came back.
    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &creds,
            &dest,
        ])
        .output()
        .unwrap();
    assert!(raw.status.success());
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(back.join("index.json")).unwrap()).unwrap();
    let pulled = index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(
        pulled,
        format!("sha256:{}", hex::encode(Sha256::digest(&raw.stdout)))
    );
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        let blob = std::fs::read(back.join("blobs/sha256").join(&digest[7..])).unwrap();
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&blob))),
            digest
        );

        // A Range request returns exactly that slice of the blob.
        let url = format!(
            "http://{}/v2/library/app/blobs/{digest}",
            controller.registry
        );
        let mut response = agent()
            .get(&url)
            .header(
                "Authorization",
                &format!("Bearer {}", controller.admin_token()),
            )
            .header("Range", "bytes=10-19")
            .call()
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(
            response.body_mut().read_to_vec().unwrap(),
            blob[10..20].to_vec()
        );
    }

    let catalog = format!("http://{}/v2/_catalog", controller.registry);
    let mut response = agent()
        .get(&catalog)
        .header(
            "Authorization",
            &format!("Bearer {}", controller.admin_token()),
        )
        .call()
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_slice(&response.body_mut().read_to_vec().unwrap()).unwrap();
    assert_eq!(body["repositories"], serde_json::json!(["library/app"]));
}

#[test]
fn registry_refuses_missing_credentials_and_wrong_digests() {
    let controller = Controller::start();
    let base = format!("http://{}", controller.registry);
    let response = agent().get(&format!("{base}/v2/")).call().unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("www-authenticate").is_some());

    let token = format!("Bearer {}", controller.admin_token());
    let claimed = format!("sha256:{}", hex::encode(Sha256::digest(b"something else")));
    let mut response = agent()
        .post(&format!("{base}/v2/app/blobs/uploads/?digest={claimed}"))
        .header("Authorization", &token)
        .send(&b"actual bytes"[..])
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.body_mut().read_to_string().unwrap();
    assert!(body.contains("DIGEST_INVALID"), "{body}");
    let response = agent()
        .head(&format!("{base}/v2/app/blobs/{claimed}"))
        .header("Authorization", &token)
        .call()
        .unwrap();
    assert_eq!(response.status(), 404);

    // A manifest naming a blob that was never pushed is refused.
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"digest": claimed, "size": 1, "mediaType": "application/vnd.oci.image.config.v1+json"},
        "layers": []
    });
    let response = agent()
        .put(&format!("{base}/v2/app/manifests/1"))
        .header("Authorization", &token)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .send(manifest.to_string())
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[test]
fn chunked_upload_assembles_the_blob_and_reports_progress() {
    let controller = Controller::start();
    let base = format!("http://{}", controller.registry);
    let token = format!("Bearer {}", controller.admin_token());
    let started = agent()
        .post(&format!("{base}/v2/app/blobs/uploads/"))
        .header("Authorization", &token)
        .send_empty()
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_string();
    let mut range = String::new();
    for chunk in [&b"first chunk, "[..], &b"second chunk"[..]] {
        let response = agent()
            .patch(&format!("{base}{location}"))
            .header("Authorization", &token)
            .send(chunk)
            .unwrap();
        assert_eq!(response.status(), 202);
        range = response.headers()["range"].to_str().unwrap().to_string();
    }
    let whole = b"first chunk, second chunk";
    assert_eq!(range, format!("0-{}", whole.len() - 1));
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(whole)));
    let done = agent()
        .put(&format!("{base}{location}?digest={digest}"))
        .header("Authorization", &token)
        .send_empty()
        .unwrap();
    assert_eq!(done.status(), 201);
    let mut blob = agent()
        .get(&format!("{base}/v2/app/blobs/{digest}"))
        .header("Authorization", &token)
        .call()
        .unwrap();
    assert_eq!(blob.body_mut().read_to_vec().unwrap(), whole.to_vec());
}
