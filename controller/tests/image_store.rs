//! `coracle image import|ls|inspect` with the real fixtures (oci-archive, docker-archive,
//! zstd layers, OCI layout dir) while the controller runs: the registry serves what was
//! imported at once. Bad input (not an image, a layer whose bytes do not match its digest)
//! is refused with a clear error and stores nothing.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use support::{fixture, Controller};

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

/// The manifest digest an oci-archive's `index.json` names (its first manifest).
fn index_digest(archive: &Path) -> String {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("index.json") {
            let index: serde_json::Value = serde_json::from_reader(&mut entry).unwrap();
            return index["manifests"][0]["digest"]
                .as_str()
                .unwrap()
                .to_string();
        }
    }
    panic!("{} has no index.json", archive.display());
}

#[test]
fn oci_imports_keep_the_source_manifest_digest() {
    let controller = Controller::start();
    for (file, tag) in [
        ("busybox-oci.tar", "keep/oci:1"),
        ("busybox-zstd-oci.tar", "keep/zstd:1"),
        ("busybox-layers-oci.tar", "keep/layers:1"),
    ] {
        let path = fixture(file);
        let source = index_digest(&path);
        let out = controller.cli(&["image", "import", path.to_str().unwrap(), "--tag", tag]);
        assert!(out.status.success(), "{file}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("imported {tag} {source}")),
            "{file}: {}",
            text(&out)
        );
        let (status, served) = manifest_status(&controller, tag);
        assert_eq!((status, served), (200, source), "{file}");
    }
}

#[test]
fn import_progress_is_one_plain_line_per_layer_without_a_terminal() {
    let controller = Controller::start();
    let path = fixture("busybox-layers-docker.tar");
    let out = controller.cli(&["image", "import", path.to_str().unwrap(), "--tag", "p/q:1"]);
    assert!(out.status.success(), "{}", text(&out));
    let progress = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !progress.contains('\r') && !progress.contains('\x1b'),
        "{progress:?}"
    );
    let lines: Vec<&str> = progress.lines().collect();
    assert_eq!(lines.len(), 4, "{progress}");
    for (n, line) in lines.iter().enumerate() {
        let prefix = format!("layer {}/4 sha256:", n + 1);
        assert!(line.starts_with(&prefix), "{line}");
        assert!(
            line.ends_with(" verified") && line.contains("/s)"),
            "{line}"
        );
    }
    // stdout keeps only the result, for scripts.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("imported p/q:1 sha256:"), "{stdout}");
}

#[test]
fn an_import_beside_a_running_server_gets_its_deltas_in_the_background() {
    // A rescan far away: only the import's request to the server can start the work.
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[registry]\nlisten = \"127.0.0.1:0\"\n[deltas]\nrescan_s = 3600\n",
        support::data_dir(dir.path())
    );
    let controller = Controller::start_with_config(dir, &config);
    for (file, tag) in [
        ("busybox-oci.tar", "bg/app:1"),
        ("busybox-layers-oci.tar", "bg/app:2"),
    ] {
        let path = fixture(file);
        let out = controller.cli(&["image", "import", path.to_str().unwrap(), "--tag", tag]);
        assert!(out.status.success(), "{file}: {}", text(&out));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let started = std::time::Instant::now();
    loop {
        let listing: serde_json::Value = serde_json::from_str(
            &agent
                .get(&format!("http://{}/api/v1/images", controller.api))
                .header(
                    "Authorization",
                    &format!("Bearer {}", controller.admin_token()),
                )
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap(),
        )
        .unwrap();
        let deltas = listing[0]["tags"][1]["deltas"].as_array().unwrap().clone();
        let states: Vec<&str> = deltas
            .iter()
            .map(|d| d["state"].as_str().unwrap())
            .collect();
        if !states.is_empty() && states.iter().all(|s| ["ready", "not_worth_it"].contains(s)) {
            eprintln!(
                "imported tag's deltas after {:?}: {deltas:?}",
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "deltas of an imported tag never encoded: {deltas:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
