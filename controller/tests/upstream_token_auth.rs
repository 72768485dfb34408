//! Token auth as Docker Hub and GHCR run it: docker-registry in `auth: token:` mode answers
//! 401 with a bearer challenge naming a token service (a test one, signing ES256 JWTs whose
//! certificate is in the registry's `rootcertbundle`); the controller fetches a token there
//! with its stored login and mirrors the image. A wrong password fails the deploy with the
//! token service's 401, and nothing is stored; so does a deploy after `registry logout`.
#![allow(clippy::unwrap_used)]

mod support;
mod upstream;

use coracle_proto::Generation;
use coracle_tests::registry::{RegistryOptions, TestRegistry};
use coracle_tests::registry_auth::TokenServer;
use upstream::{
    busybox, controller_with, deploy, desired_state, login, logout, own_registry, PASSWORD, USER,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_image_is_mirrored_with_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), USER, PASSWORD).unwrap();
    let upstream = TestRegistry::start_with(&RegistryOptions {
        auth_yaml: Some(tokens.registry_yaml()),
        ..RegistryOptions::default()
    })
    .unwrap();
    let creds = format!("{USER}:{PASSWORD}");
    let source = busybox();
    let pushed = {
        let upstream = &upstream;
        tokio::task::block_in_place(|| {
            upstream.push_with(&source, "team/app:1", &["--dest-creds", &creds])
        })
    };
    let digest = pushed.unwrap();
    let host = format!("127.0.0.1:{}", upstream.port);
    let controller = controller_with(&format!(
        "[[registries]]\nhost = \"{host}\"\ninsecure = true\n"
    ));
    let boot = controller.enrol("pi-token");
    let image = format!("{host}/team/app:1");
    let repo = format!("mirror/127.0.0.1-{}/team/app", upstream.port);
    let device = boot.device.to_string();

    login(&controller, &host, "wrong-password");
    let err = tokio::task::block_in_place(|| deploy(&controller, &device, &image)).unwrap_err();
    let text = format!("{err:#}");
    eprintln!("refused as expected: {text}");
    assert!(
        text.contains(&tokens.realm()) && text.contains("401"),
        "{text}"
    );
    assert!(text.contains(&host) && text.contains("team/app"), "{text}");
    assert_eq!(
        own_registry(&controller, &format!("{repo}/tags/list")).0,
        404
    );

    login(&controller, &host, PASSWORD);
    let answer = tokio::task::block_in_place(|| deploy(&controller, &device, &image)).unwrap();
    assert_eq!(answer.generation, Generation(1));
    let (status, stored) = own_registry(&controller, &format!("{repo}/manifests/1"));
    assert_eq!((status, stored.as_deref()), (200, Some(digest.as_str())));
    let state = desired_state(&controller, &boot).await;
    assert_eq!(
        state.services[0].image.to_string(),
        format!("{repo}@{digest}")
    );

    // After `registry logout` the tag is resolved anonymously again: the token service's
    // 401, and a second logout says there is nothing to forget.
    assert!(logout(&controller, &host).contains("removed"));
    let err = tokio::task::block_in_place(|| deploy(&controller, &device, &image)).unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");
    assert!(logout(&controller, &host).contains("not logged in"));
}
