//! `coracle image import|ls|inspect` with the real fixtures (oci-archive, docker-archive,
//! zstd layers, OCI layout dir) while the controller runs: the registry serves what was
//! imported at once. Bad input (not an image, a layer whose bytes do not match its digest)
//! is refused with a clear error and stores nothing.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use support::Controller;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(name)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn blob_count(controller: &Controller) -> usize {
    std::fs::read_dir(controller.data_dir().join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn manifest_status(controller: &Controller, repo_tag: &str) -> (u16, String) {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .get(&format!(
            "http://{}/v2/{repo}/manifests/{tag}",
            controller.registry
        ))
        .header(
            "Authorization",
            &format!("Bearer {}", controller.admin_token()),
        )
        .call()
        .unwrap();
    let digest = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (response.status().as_u16(), digest)
}

#[test]
fn fixtures_import_list_inspect_and_are_served() {
    let controller = Controller::start();
    let cases = [
        ("busybox-oci.tar", "bb/oci:1"),
        ("busybox-docker.tar", "bb/docker:1"),
        ("busybox-zstd-oci.tar", "bb/zstd:1"),
        ("busybox-layers-docker.tar", "bb/layers:1"),
    ];
    for (file, tag) in cases {
        let path = fixture(file);
        let out = controller.cli(&["image", "import", path.to_str().unwrap(), "--tag", tag]);
        assert!(out.status.success(), "{file}: {}", text(&out));
        let printed = text(&out);
        assert!(
            printed.contains(&format!("imported {tag} sha256:")),
            "{printed}"
        );
        let (status, digest) = manifest_status(&controller, tag);
        assert_eq!(status, 200, "{tag}");
        assert!(printed.contains(&digest), "{printed} vs {digest}");
    }

    // An OCI layout directory, as skopeo writes it, imports too (default name: the dir's).
    let layout = controller.dir.path().join("webapp");
    let out = std::process::Command::new("tar")
        .arg("-xf")
        .arg(fixture("busybox-oci.tar"))
        .arg("-C")
        .arg({
            std::fs::create_dir_all(&layout).unwrap();
            &layout
        })
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = controller.cli(&["image", "import", layout.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(manifest_status(&controller, "webapp:latest").0, 200);

    let ls = text(&controller.cli(&["image", "ls"]));
    for repo in ["bb/oci", "bb/docker", "bb/zstd", "bb/layers", "webapp"] {
        assert!(ls.contains(repo), "{repo} missing from:\n{ls}");
    }

    let inspect = controller.cli(&["image", "inspect", "bb/layers:1"]);
    assert!(inspect.status.success(), "{}", text(&inspect));
    let inspect = text(&inspect);
    assert!(inspect.contains("platform  linux/"), "{inspect}");
    assert_eq!(inspect.matches("diff_id sha256:").count(), 4, "{inspect}");

    let missing = controller.cli(&["image", "inspect", "bb/nothing:1"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("no image bb/nothing:1"),
        "{}",
        text(&missing)
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_stored() {
    let controller = Controller::start();
    let before = blob_count(&controller);

    let readme = fixture("README.md");
    let out = controller.cli(&["image", "import", readme.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not a readable OCI or docker image"),
        "{}",
        text(&out)
    );

    // A layout whose layer blob was altered in place: its bytes no longer match its name.
    let layout = controller.dir.path().join("tampered");
    std::fs::create_dir_all(&layout).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-xf")
        .arg(fixture("busybox-oci.tar"))
        .arg("-C")
        .arg(&layout)
        .output()
        .unwrap();
    assert!(out.status.success());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_hex = &index["manifests"][0]["digest"].as_str().unwrap()[7..];
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(manifest_hex)).unwrap(),
    )
    .unwrap();
    let layer_hex = &manifest["layers"][0]["digest"].as_str().unwrap()[7..];
    let layer_path = layout.join("blobs/sha256").join(layer_hex);
    let mut bytes = std::fs::read(&layer_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer_path, &bytes).unwrap();

    let out = controller.cli(&[
        "image",
        "import",
        layout.to_str().unwrap(),
        "--tag",
        "bad:1",
    ]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("has digest") && said.contains(layer_hex),
        "{said}"
    );
    assert_eq!(
        blob_count(&controller),
        before,
        "a refused import stored blobs"
    );
    assert_eq!(manifest_status(&controller, "bad:1").0, 404);
}
