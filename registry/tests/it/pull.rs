//! Pulls of the real test images.

use dockless_registry::{Error, Store};
use dockless_testkit::{FaultProxy, test_env};

use crate::{assert_verified, ingest_leftovers, pull, pull_with, settings};

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn every_test_image_pulls_and_verifies() {
    let env = test_env();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (name, layers) in [("busybox", 1), ("layered", 5), ("python", 2)] {
        for (tag, media) in [
            ("latest", "application/vnd.oci.image.layer.v1.tar+gzip"),
            ("v2s2", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        ] {
            let image = format!("{}/{name}:{tag}", env.registry);
            let record = pull(&store, &image)
                .await
                .unwrap_or_else(|e| panic!("{image}: {e}"));
            assert_eq!(record.layers.len(), layers, "{image} layer count");
            assert!(
                record.layers.iter().all(|l| l.media_type == media),
                "{image}: {:?}",
                record.layers
            );
            assert_eq!(record.index_digest, None);
            assert_verified(&store, &record);
        }
    }
    assert_eq!(store.images().unwrap().len(), 6);
    assert!(
        ingest_leftovers(&store).is_empty(),
        "{:?}",
        ingest_leftovers(&store)
    );
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn index_resolves_to_the_requested_platform() {
    for tag in ["latest", "v2s2"] {
        index_case(tag).await;
    }
}

/// `multi:latest` is an OCI index, `multi:v2s2` a Docker manifest list.
async fn index_case(tag: &str) {
    let env = test_env();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = format!("{}/multi:{tag}", env.registry);
    let amd = pull_with(settings(), &store, &image, "linux/amd64")
        .await
        .unwrap();
    let arm = pull_with(settings(), &store, &image, "linux/arm64")
        .await
        .unwrap();
    assert!(amd.index_digest.is_some());
    assert_eq!(
        amd.index_digest, arm.index_digest,
        "both come from the same index"
    );
    assert_ne!(amd.digest, arm.digest, "each platform has its own manifest");
    for r in [&amd, &arm] {
        assert_verified(&store, r);
    }
    let config: serde_json::Value =
        serde_json::from_slice(&store.read_metadata(&arm.config).unwrap()).unwrap();
    assert_eq!(config["architecture"], "arm64");

    let err = pull_with(settings(), &store, &image, "linux/s390x")
        .await
        .unwrap_err();
    match &err {
        Error::NoMatchingPlatform { available, .. } => {
            assert!(
                available.contains("linux/amd64") && available.contains("linux/arm64"),
                "{err}"
            );
            assert!(
                !available.contains("unknown"),
                "attestation entries are not offered: {err}"
            );
        }
        other => panic!("expected NoMatchingPlatform, got {other}"),
    }
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn digest_pinning_pulls_that_manifest_and_then_needs_no_network() {
    let env = test_env();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let by_tag = pull(&store, &format!("{}/busybox:latest", env.registry))
        .await
        .unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let fresh_store = Store::open(fresh.path()).unwrap();
    let pinned = format!("{}/busybox@{}", env.registry, by_tag.digest);
    let by_digest = pull(&fresh_store, &pinned).await.unwrap();
    assert_eq!(by_digest.digest, by_tag.digest);
    assert_eq!(by_digest.name, pinned);

    // Stored and pinned: the second pull asks the registry nothing at all.
    let proxy = FaultProxy::start(&env.registry, vec![]);
    let via_proxy = format!("{}/busybox@{}", proxy.host(), by_tag.digest);
    pull(&fresh_store, &via_proxy).await.unwrap();
    let asked = proxy.log().len();
    assert!(asked > 0);
    let again = pull(&fresh_store, &via_proxy).await.unwrap();
    assert_eq!(again.digest, by_tag.digest);
    assert_eq!(
        proxy.log().len(),
        asked,
        "no request for a stored pinned image"
    );

    let missing = format!("{}/busybox@sha256:{}", env.registry, "0".repeat(64));
    let err = pull(&fresh_store, &missing).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn unknown_image_is_not_found() {
    let env = test_env();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for image in [
        format!("{}/no-such-image:latest", env.registry),
        format!("{}/busybox:no-such-tag", env.registry),
    ] {
        let err = pull(&store, &image).await.unwrap_err();
        assert!(err.is_not_found(), "{image}: {err}");
        assert!(err.to_string().contains("not found"), "{err}");
        assert!(
            err.to_string().contains(&env.registry),
            "names the registry: {err}"
        );
    }
    assert!(store.images().unwrap().is_empty());
}

#[tokio::test]
async fn registry_down_is_a_clear_retryable_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let err = pull(&store, &format!("{host}/busybox:latest"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unreachable { attempts: 4, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains(&format!("cannot reach {host}")),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn stored_blobs_are_not_fetched_again() {
    let env = test_env();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let proxy = FaultProxy::start(&env.registry, vec![]);
    let image = format!("{}/layered:latest", proxy.host());
    pull(&store, &image).await.unwrap();
    let first = proxy.requests_to("/blobs/").len();
    assert_eq!(first, 6, "config + 5 layers");
    pull(&store, &image).await.unwrap();
    assert_eq!(
        proxy.requests_to("/blobs/").len(),
        first,
        "second pull fetched no blob"
    );
    let manifest_gets = proxy
        .log()
        .iter()
        .filter(|l| l.method == "GET" && l.path.contains("/manifests/"))
        .count();
    assert_eq!(manifest_gets, 1, "the stored manifest is found by a HEAD");
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn concurrent_pulls_of_one_image_share_the_store_safely() {
    let env = test_env();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = format!("{}/python:latest", env.registry);
    let (a, b, c) = tokio::join!(
        pull(&store, &image),
        pull(&store, &image),
        pull(&store, &image)
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(a.digest, b.digest);
    assert_eq!(b.digest, c.digest);
    assert_verified(&store, &a);
    assert!(
        ingest_leftovers(&store).is_empty(),
        "{:?}",
        ingest_leftovers(&store)
    );
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn docker_hub_images_come_from_a_mirror_with_fallback() {
    let env = test_env();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // The plain test registry holds `library/busybox`, as a Docker Hub pull-through mirror does.
    let proxy = FaultProxy::start(&env.registry, vec![]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_host = dead.local_addr().unwrap().to_string();
    drop(dead);
    let mut s = settings();
    s.mirrors = vec![format!("http://{dead_host}/"), proxy.host()];
    let record = pull_with(s, &store, "busybox", "linux/amd64")
        .await
        .unwrap();
    assert_eq!(record.name, "docker.io/library/busybox:latest");
    assert_verified(&store, &record);
    assert!(
        !proxy
            .requests_to("/v2/library/busybox/manifests/latest")
            .is_empty(),
        "the second mirror served it after the first failed: {:?}",
        proxy.log()
    );
}
