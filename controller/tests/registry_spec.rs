//! The registry against the OCI distribution-spec v1.1, behaviour by behaviour (the
//! conformance suite, `.ci/conformance`, checks the same against the whole API): unknown
//! references, DELETE, tag pages, referrers, nested repositories and index validation.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::registry_client::{digest_of, RegistryClient, INDEX_TYPE, MANIFEST_TYPE};
use support::Controller;

#[test]
fn unknown_manifest_references_answer_404_with_oci_codes() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    registry.push_image("app", "1", b"{}", json!({}));
    let missing_digest = digest_of(b"never pushed");
    for reference in [".INVALID_MANIFEST_NAME", "2", missing_digest.as_str()] {
        for method in ["GET", "HEAD", "DELETE"] {
            let answer = registry.send(method, &format!("/v2/app/manifests/{reference}"), &[], b"");
            assert_eq!(answer.status, 404, "{method} {reference}");
            if method != "HEAD" {
                assert_eq!(
                    answer.error_code(),
                    "MANIFEST_UNKNOWN",
                    "{method} {reference}"
                );
            }
        }
    }
    let answer = registry.get("/v2/nothing/here/tags/list");
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error_code(), "NAME_UNKNOWN");
    let answer = registry.get(&format!("/v2/app/blobs/{missing_digest}"));
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error_code(), "BLOB_UNKNOWN");
}

#[test]
fn delete_removes_a_tag_a_manifest_with_its_tags_and_a_blob() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    let (manifest, digest) = registry.push_image("app", "1", b"{\"a\":1}", json!({}));
    assert_eq!(
        registry
            .put_manifest("app", "2", MANIFEST_TYPE, &manifest)
            .status,
        201
    );
    assert_eq!(
        registry
            .put_manifest("app", "3", MANIFEST_TYPE, &manifest)
            .status,
        201
    );

    assert_eq!(
        registry
            .send("DELETE", "/v2/app/manifests/1", &[], b"")
            .status,
        202
    );
    assert_eq!(registry.get("/v2/app/manifests/1").status, 404);
    assert_eq!(registry.get("/v2/app/manifests/2").status, 200);
    assert_eq!(
        registry.get("/v2/app/tags/list").json()["tags"],
        json!(["2", "3"])
    );

    // By digest: the manifest goes, and every tag naming it.
    let path = format!("/v2/app/manifests/{digest}");
    assert_eq!(registry.send("DELETE", &path, &[], b"").status, 202);
    assert_eq!(registry.get(&path).status, 404);
    assert_eq!(registry.get("/v2/app/manifests/2").status, 404);
    assert_eq!(registry.get("/v2/app/tags/list").json()["tags"], json!([]));

    let config = manifest["config"]["digest"].as_str().unwrap();
    let blob = format!("/v2/app/blobs/{config}");
    assert_eq!(registry.get(&blob).status, 200);
    assert_eq!(registry.send("DELETE", &blob, &[], b"").status, 202);
    assert_eq!(registry.get(&blob).status, 404);
    let again = registry.send("DELETE", &blob, &[], b"");
    assert_eq!(again.status, 404);
    assert_eq!(again.error_code(), "BLOB_UNKNOWN");
}

#[test]
fn tag_list_pages_with_n_and_last_and_links_the_next_page() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    let (manifest, _) = registry.push_image("app", "a", b"{}", json!({}));
    for tag in ["b", "c", "d", "e"] {
        assert_eq!(
            registry
                .put_manifest("app", tag, MANIFEST_TYPE, &manifest)
                .status,
            201
        );
    }
    let page = registry.get("/v2/app/tags/list?n=2");
    assert_eq!(page.status, 200);
    assert_eq!(page.json()["tags"], json!(["a", "b"]));
    assert_eq!(
        page.header("link").as_deref(),
        Some("</v2/app/tags/list?n=2&last=b>; rel=\"next\"")
    );
    let page = registry.get("/v2/app/tags/list?n=2&last=b");
    assert_eq!(page.json()["tags"], json!(["c", "d"]));
    let page = registry.get("/v2/app/tags/list?n=2&last=d");
    assert_eq!(page.json()["tags"], json!(["e"]));
    assert_eq!(page.header("link"), None, "the last page links nowhere");
    let all = registry.get("/v2/app/tags/list");
    assert_eq!(all.json()["tags"], json!(["a", "b", "c", "d", "e"]));
    assert_eq!(all.header("link"), None);
    assert_eq!(registry.get("/v2/app/tags/list?n=many").status, 400);
}

#[test]
fn referrers_list_the_manifests_naming_a_subject_and_filter_by_artifact_type() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    let (subject, subject_digest) = registry.push_image("app", "1", b"{\"subject\":1}", json!({}));
    let subject_descriptor = json!({
        "mediaType": MANIFEST_TYPE,
        "digest": subject_digest,
        "size": subject.to_string().len(),
    });
    // Pushed by digest, as referrers are; the response names the subject.
    let config = b"{\"sig\":1}";
    let config_digest = registry.push_blob("app", config);
    let signature = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": "application/x.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [],
        "subject": subject_descriptor,
        "annotations": {"kind": "sig"},
    });
    let signature_digest = digest_of(signature.to_string().as_bytes());
    let answer = registry.put_manifest("app", &signature_digest, MANIFEST_TYPE, &signature);
    assert_eq!(answer.status, 201);
    assert_eq!(answer.header("oci-subject"), Some(subject_digest.clone()));
    let sbom_config = b"{\"sbom\":1}";
    let sbom_config_digest = registry.push_blob("app", sbom_config);
    let sbom = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/x.sbom", "digest": sbom_config_digest, "size": sbom_config.len()},
        "layers": [],
        "subject": subject_descriptor,
    });
    let sbom_digest = digest_of(sbom.to_string().as_bytes());
    assert_eq!(
        registry
            .put_manifest("app", &sbom_digest, MANIFEST_TYPE, &sbom)
            .status,
        201
    );

    let all = registry.get(&format!("/v2/app/referrers/{subject_digest}"));
    assert_eq!(all.status, 200);
    assert_eq!(all.header("content-type").as_deref(), Some(INDEX_TYPE));
    assert_eq!(all.header("oci-filters-applied"), None);
    let index = all.json();
    assert_eq!(index["schemaVersion"], 2);
    let mut found: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().into(),
                d["artifactType"].as_str().unwrap().into(),
            )
        })
        .collect();
    found.sort();
    let mut want = vec![
        (signature_digest.clone(), "application/x.sig".to_string()),
        (sbom_digest, "application/x.sbom".to_string()),
    ];
    want.sort();
    assert_eq!(found, want);

    let filtered = registry.get(&format!(
        "/v2/app/referrers/{subject_digest}?artifactType=application%2Fx.sig"
    ));
    assert_eq!(
        filtered.header("oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let manifests = filtered.json()["manifests"].clone();
    assert_eq!(manifests.as_array().unwrap().len(), 1);
    assert_eq!(manifests[0]["digest"], signature_digest.as_str());
    assert_eq!(manifests[0]["annotations"]["kind"], "sig");

    // A subject nothing refers to (or that was never pushed) has an empty list, not 404.
    let none = registry.get(&format!("/v2/app/referrers/{}", digest_of(b"nothing")));
    assert_eq!(none.status, 200);
    assert_eq!(none.json()["manifests"], json!([]));
}

#[test]
fn a_nested_repository_adds_no_tags_to_its_parent() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    registry.push_image("a", "1", b"{}", json!({}));
    registry.push_image("a/tags", "2", b"{\"x\":1}", json!({}));
    registry.push_image("a/manifests", "3", b"{\"y\":1}", json!({}));
    assert_eq!(registry.get("/v2/a/tags/list").json()["tags"], json!(["1"]));
    assert_eq!(
        registry.get("/v2/a/tags/tags/list").json()["tags"],
        json!(["2"])
    );
    assert_eq!(
        registry.get("/v2/_catalog").json()["repositories"],
        json!(["a", "a/manifests", "a/tags"])
    );
}

#[test]
fn an_index_naming_missing_manifests_is_refused() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    let config = b"{\"arch\":\"arm64\"}";
    let config_digest = registry.push_blob("app", config);
    let child = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [],
    });
    let child_digest = digest_of(child.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": child_digest, "size": child.to_string().len()}],
    });
    let refused = registry.put_manifest("app", "multi", INDEX_TYPE, &index);
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error_code(), "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(registry.get("/v2/app/manifests/multi").status, 404);

    // A manifest naming a blob never pushed is refused the same way.
    let dangling = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(b"gone"), "size": 4},
        "layers": [],
    });
    let refused = registry.put_manifest("app", "dangling", MANIFEST_TYPE, &dangling);
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error_code(), "MANIFEST_BLOB_UNKNOWN");

    assert_eq!(
        registry
            .put_manifest("app", &child_digest, MANIFEST_TYPE, &child)
            .status,
        201
    );
    assert_eq!(
        registry
            .put_manifest("app", "multi", INDEX_TYPE, &index)
            .status,
        201
    );
    assert_eq!(registry.get("/v2/app/manifests/multi").status, 200);
}

#[test]
fn a_tag_that_cannot_be_stored_is_a_storage_error_not_a_bad_manifest() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    let (manifest, _) = registry.push_image("b", "1", b"{}", json!({}));
    // The nested repository `b/tags/v2` is a directory where `b`'s tag `v2` would be stored.
    registry.push_image("b/tags/v2", "1", b"{\"z\":1}", json!({}));
    let answer = registry.put_manifest("b", "v2", MANIFEST_TYPE, &manifest);
    assert_eq!(
        answer.status,
        500,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.error_code(), "UNKNOWN");
    let text = String::from_utf8_lossy(&answer.body);
    assert!(
        text.contains("registry storage failed: store tag"),
        "{text}"
    );
    // What was stored stays readable.
    assert_eq!(registry.get("/v2/b/tags/list").json()["tags"], json!(["1"]));
    assert_eq!(registry.get("/v2/b/manifests/1").status, 200);
}
