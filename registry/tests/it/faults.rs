//! Faults injected between the client and the real registry.

use std::time::{Duration, Instant};

use dockless_registry::Error;
use dockless_testkit::{Fault, FaultProxy, Rule, test_env};

use crate::{assert_verified, busybox_layer, fresh_store, ingest_leftovers, pull};

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn corrupt_byte_rejects_commit() {
    let env = test_env();
    let (layer, _) = busybox_layer(&env.registry).await;
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new(&layer, 1, Fault::CorruptByte(1000))],
    );
    let (_dir, store) = fresh_store();
    let err = pull(&store, &format!("{}/busybox:latest", proxy.host()))
        .await
        .unwrap_err();
    match &err {
        Error::DigestMismatch {
            expected, actual, ..
        } => assert_ne!(expected, actual),
        other => panic!("expected a digest mismatch, got {other}"),
    }
    let digest = layer.trim_start_matches("/blobs/");
    assert!(err.to_string().contains(digest), "names the blob: {err}");
    assert!(
        !store
            .root()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
            .exists()
    );
    assert!(
        ingest_leftovers(&store)
            .iter()
            .all(|f| !f.ends_with(".partial")),
        "bad bytes are not kept for resume"
    );
    assert!(store.images().unwrap().is_empty(), "no image recorded");
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn cut_mid_blob_resumes_with_range() {
    let env = test_env();
    let (layer, size) = busybox_layer(&env.registry).await;
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new(&layer, 1, Fault::CutAfter(300_000))],
    );
    let (_dir, store) = fresh_store();
    let record = pull(&store, &format!("{}/busybox:latest", proxy.host()))
        .await
        .unwrap();
    assert_verified(&store, &record);
    let attempts = proxy.requests_to(&layer);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].range, None);
    assert_eq!(
        attempts[1].range.as_deref(),
        Some("bytes=300000-"),
        "resumed from the bytes on disk"
    );
    assert!(size > 300_000);
    assert!(ingest_leftovers(&store).is_empty());
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn server_ignoring_range_gets_a_clean_restart() {
    let env = test_env();
    let (layer, _) = busybox_layer(&env.registry).await;
    let rules = vec![
        Rule::new(&layer, 1, Fault::CutAfter(200_000)),
        Rule {
            first: 2,
            ..Rule::new(&layer, 1, Fault::IgnoreRange)
        },
    ];
    let proxy = FaultProxy::start(&env.registry, rules);
    let (_dir, store) = fresh_store();
    let record = pull(&store, &format!("{}/busybox:latest", proxy.host()))
        .await
        .unwrap();
    assert_verified(&store, &record);
    assert_eq!(proxy.requests_to(&layer).len(), 2);
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn rate_limit_with_retry_after_is_honoured() {
    let env = test_env();
    let (layer, _) = busybox_layer(&env.registry).await;
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new(&layer, 1, Fault::Status(429, Some("1".into())))],
    );
    let (_dir, store) = fresh_store();
    let start = Instant::now();
    let record = pull(&store, &format!("{}/busybox:latest", proxy.host()))
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "waited as Retry-After asked"
    );
    assert_verified(&store, &record);
    assert_eq!(proxy.requests_to(&layer).len(), 2);
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn rate_limit_with_a_far_reset_fails_fast_with_the_reset_time() {
    let env = test_env();
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new(
            "/manifests/",
            100,
            Fault::Status(429, Some("3600".into())),
        )],
    );
    let (_dir, store) = fresh_store();
    let start = Instant::now();
    let err = pull(&store, &format!("{}/busybox:latest", proxy.host()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 3600),
        "{err}"
    );
    assert!(err.to_string().contains("retry after 3600 s"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "did not sit out the reset"
    );
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn server_error_then_success() {
    let env = test_env();
    let (layer, _) = busybox_layer(&env.registry).await;
    let proxy = FaultProxy::start(
        &env.registry,
        vec![
            Rule::new(&layer, 2, Fault::Status(500, None)),
            Rule::new("/manifests/", 1, Fault::Status(503, None)),
        ],
    );
    let (_dir, store) = fresh_store();
    let record = pull(&store, &format!("{}/busybox:latest", proxy.host()))
        .await
        .unwrap();
    assert_verified(&store, &record);
    assert_eq!(proxy.requests_to(&layer).len(), 3);
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn persistent_server_errors_give_up_with_the_status() {
    let env = test_env();
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new("/blobs/", 1000, Fault::Status(502, None))],
    );
    let (_dir, store) = fresh_store();
    let err = pull(&store, &format!("{}/busybox:latest", proxy.host()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Status { status: 502, .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn more_bytes_than_the_descriptor_are_refused() {
    let env = test_env();
    let (layer, _) = busybox_layer(&env.registry).await;
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new(&layer, 10, Fault::ExtraBytes(4096))],
    );
    let (_dir, store) = fresh_store();
    let err = pull(&store, &format!("{}/busybox:latest", proxy.host()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(
        ingest_leftovers(&store)
            .iter()
            .all(|f| !f.ends_with(".partial"))
    );
    assert!(store.images().unwrap().is_empty());
}
