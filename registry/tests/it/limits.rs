//! A hostile or broken registry: lying descriptors, endless and trickling bodies, too many
//! layers, a full disk, and a reader that gives up (issue 18, items 2, 4, 5 and the unclear
//! `images` size). Every test is bounded in time (a timeout around the pull) and in bytes
//! (small caps through `Settings`, and the proxy's endless body stops at `ENDLESS_CAP`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dockless_registry::follow::{Follow, FollowError};
use dockless_registry::limits;
use dockless_registry::{
    Client, Digest, Error, ImageRecord, ImageRef, NoProgress, Platform, Settings, Store,
};
use dockless_testkit::{Fault, FaultProxy, Rule, test_env};

use crate::{
    assert_verified, busybox_layer, fresh_store, ingest_leftovers, pull, pull_with, settings,
};

/// The declared size of the repro: 32 TiB.
const HUGE: u64 = 35_184_372_088_832;

/// Pulls with a hard time bound, so a regression fails instead of hanging.
async fn bounded(
    secs: u64,
    pull: impl Future<Output = dockless_registry::Result<ImageRecord>>,
) -> dockless_registry::Result<ImageRecord> {
    tokio::time::timeout(Duration::from_secs(secs), pull)
        .await
        .unwrap_or_else(|_| panic!("the pull did not end within {secs} s"))
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn a_huge_lying_layer_is_refused_before_any_blob_is_fetched() {
    let env = test_env();
    let (layer, _) = busybox_layer(&env.registry).await;
    let proxy = FaultProxy::start(
        &env.registry,
        vec![
            Rule::new("/manifests/", 100, Fault::LayerSize(HUGE)),
            Rule::new(&layer, 100, Fault::Endless),
        ],
    );
    let (_dir, store) = fresh_store();
    let err = bounded(
        30,
        pull(&store, &format!("{}/busybox:latest", proxy.host())),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::LayerTooLarge { size: HUGE, max, .. } if max == 16 << 30),
        "{err}"
    );
    let text = err.to_string();
    for part in [
        layer.trim_start_matches("/blobs/"),
        "16.0 GiB",
        limits::MAX_LAYER_BYTES_VAR,
    ] {
        assert!(text.contains(part), "names {part}: {text}");
    }
    assert!(
        proxy.requests_to("/blobs/").is_empty(),
        "no blob was asked for: {:?}",
        proxy.requests_to("/blobs/")
    );
    assert!(ingest_leftovers(&store).is_empty());
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn an_endless_body_stops_at_the_declared_size() {
    let env = test_env();
    let (layer, size) = busybox_layer(&env.registry).await;
    let declared = size + 100_000; // a lie under the cap: the body is checked as it arrives
    let proxy = FaultProxy::start(
        &env.registry,
        vec![
            Rule::new("/manifests/", 100, Fault::LayerSize(declared)),
            Rule::new(&layer, 100, Fault::Endless),
        ],
    );
    let (_dir, store) = fresh_store();
    let err = bounded(
        30,
        pull(&store, &format!("{}/busybox:latest", proxy.host())),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { expected, .. } if expected == declared),
        "{err}"
    );
    assert_eq!(proxy.requests_to(&layer).len(), 1, "not retried");
    assert!(
        ingest_leftovers(&store)
            .iter()
            .all(|f| !f.ends_with(".partial")),
        "bytes that overran their descriptor are not kept"
    );
    assert!(store.images().unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn an_image_over_the_image_cap_is_refused_before_any_blob_is_fetched() {
    let env = test_env();
    let proxy = FaultProxy::start(&env.registry, vec![]);
    let mut s = settings();
    s.limits.max_image_bytes = 1 << 20; // busybox's one layer is 1.04 MiB
    let (_dir, store) = fresh_store();
    let err = bounded(
        30,
        pull_with(
            s,
            &store,
            &format!("{}/busybox:latest", proxy.host()),
            "linux/amd64",
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::ImageTooLarge { max, .. } if max == 1 << 20),
        "{err}"
    );
    assert!(
        err.to_string().contains(limits::MAX_IMAGE_BYTES_VAR),
        "{err}"
    );
    assert!(proxy.requests_to("/blobs/").is_empty());
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn a_manifest_with_too_many_layers_is_refused_before_any_blob_is_fetched() {
    let env = test_env();
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new("/manifests/", 100, Fault::RepeatLayers(5000))],
    );
    let (_dir, store) = fresh_store();
    let err = bounded(
        30,
        pull(&store, &format!("{}/busybox:latest", proxy.host())),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyLayers {
                count: 5000,
                max: 127,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("5000") && text.contains("127") && text.contains(limits::MAX_LAYERS_VAR),
        "{text}"
    );
    assert!(proxy.requests_to("/blobs/").is_empty());
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn a_pull_that_would_eat_into_the_reserve_is_refused_up_front() {
    let env = test_env();
    let proxy = FaultProxy::start(&env.registry, vec![]);
    let mut s = settings();
    // More than any test machine has free, so the check cannot pass by luck.
    s.limits.free_space_reserve = 1 << 50;
    let (_dir, store) = fresh_store();
    let err = bounded(
        30,
        pull_with(
            s,
            &store,
            &format!("{}/busybox:latest", proxy.host()),
            "linux/amd64",
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert!(
        err.to_string().contains(limits::FREE_SPACE_RESERVE_VAR),
        "{err}"
    );
    assert!(proxy.requests_to("/blobs/").is_empty());
}

/// A tmpfs of `size` mounted on a fresh temp dir, unmounted when dropped: a file system small
/// enough to fill in a test.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs (needs root)");
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn a_download_stops_when_the_reserve_is_reached() {
    let env = test_env();
    let (layer, size) = busybox_layer(&env.registry).await;
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new(
            &layer,
            100,
            Fault::Trickle {
                after: 64 << 10,
                bytes: 64 << 10,
                every: Duration::from_millis(150),
            },
        )],
    );
    let fs = SmallFs::mount("3m");
    let store = Store::open(fs.path().join("store")).unwrap();
    let mut s = settings();
    s.limits.free_space_reserve = 1 << 20; // 1 MiB + the 1.04 MiB layer fit in 3 MiB
    let partial = store.partial_path(&Digest::parse(layer.trim_start_matches("/blobs/")).unwrap());
    let image = format!("{}/busybox:latest", proxy.host());
    let pulling = tokio::spawn({
        let store = store.clone();
        async move { pull_with(s, &store, &image, "linux/amd64").await }
    });
    // Once the download runs, something else eats the space (1.5 MiB of 3).
    let start = Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "download started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(fs.path().join("filler"), vec![1u8; 3 << 19]).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), pulling)
        .await
        .expect("the pull ended")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(layer.trim_start_matches("/blobs/"))
            && text.contains(limits::FREE_SPACE_RESERVE_VAR),
        "names the blob and the setting: {text}"
    );
    let left = std::fs::metadata(&partial).map_or(0, |m| m.len());
    assert!(left < size, "stopped before the end ({left} of {size})");
    // The partial stays for a resume once space is freed; gc removes it (no pull runs).
    let removed = store.collect_partials().unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(!partial.exists());
}

fn trickle() -> Fault {
    Fault::Trickle {
        after: 10_000,
        bytes: 10,
        every: Duration::from_millis(100),
    }
}

fn short_stall(mut s: Settings) -> Settings {
    s.limits.stall.window = Duration::from_millis(500);
    s
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn a_trickling_registry_fails_as_stalled_after_the_retries() {
    let env = test_env();
    let (layer, _) = busybox_layer(&env.registry).await;
    let proxy = FaultProxy::start(&env.registry, vec![Rule::new(&layer, 100, trickle())]);
    let (_dir, store) = fresh_store();
    let start = Instant::now();
    let err = bounded(
        60,
        pull_with(
            short_stall(settings()),
            &store,
            &format!("{}/busybox:latest", proxy.host()),
            "linux/amd64",
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Stalled {
                attempts: 4,
                min_rate: 1024,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("stalled") && text.contains(limits::STALL_WINDOW_MS_VAR),
        "{text}"
    );
    let attempts = proxy.requests_to(&layer);
    assert_eq!(attempts.len(), 4, "retried: {attempts:?}");
    assert!(
        attempts[1].range.is_some(),
        "resumed from the bytes on disk: {attempts:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn a_stalled_attempt_is_resumed_by_the_next() {
    let env = test_env();
    let (layer, _) = busybox_layer(&env.registry).await;
    let proxy = FaultProxy::start(&env.registry, vec![Rule::new(&layer, 1, trickle())]);
    let (_dir, store) = fresh_store();
    let record = bounded(
        60,
        pull_with(
            short_stall(settings()),
            &store,
            &format!("{}/busybox:latest", proxy.host()),
            "linux/amd64",
        ),
    )
    .await
    .unwrap();
    assert_verified(&store, &record);
    let attempts = proxy.requests_to(&layer);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts[1].range.is_some(), "{attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and scripts/test-env"]
async fn a_reader_that_gives_up_stops_the_download() {
    let env = test_env();
    let (layer, _) = busybox_layer(&env.registry).await;
    // A first part the follower can read (more than the ingest writer's 256 KiB buffer), then
    // so slow that only an abort ends it within the test's bound; the stall rule is off.
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new(
            &layer,
            100,
            Fault::Trickle {
                after: 300 << 10,
                bytes: 10,
                every: Duration::from_millis(100),
            },
        )],
    );
    let mut s = settings();
    s.limits.stall.min_bytes_per_sec = 0;
    let (_dir, store) = fresh_store();
    let follow = Follow::new(store.clone(), Arc::new(NoProgress));
    let pulling = tokio::spawn({
        let (store, follow) = (store.clone(), follow.clone());
        let image = ImageRef::parse(&format!("{}/busybox:latest", proxy.host())).unwrap();
        async move {
            Client::new(s)?
                .pull(&image, &Platform::linux_amd64(), &store, follow)
                .await
        }
    });
    // The "unpacker": reads the start of the layer as it arrives, then fails on its own.
    let reader = std::thread::spawn({
        let follow = follow.clone();
        move || {
            use std::io::Read;
            let (layers, _) = follow.wait_layers().expect("layers announced");
            let mut r = follow.reader(&layers[0].digest);
            let mut buf = [0u8; 4096];
            r.read_exact(&mut buf).expect("the first bytes arrive");
            follow.abort("unpack failed: bad tar header (test)".into());
            let after = r
                .read(&mut buf)
                .expect_err("a follower of an aborted pull fails");
            assert!(FollowError::caused(&after), "{after}");
        }
    });
    let start = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), pulling)
        .await
        .expect("the abort ended the pull")
        .unwrap()
        .unwrap_err();
    reader.join().unwrap();
    assert!(matches!(err, Error::Aborted { .. }), "{err}");
    assert!(err.to_string().contains("bad tar header (test)"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    let unrelated = std::io::Error::other("invalid tar header");
    assert!(!FollowError::caused(&unrelated));
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn the_record_keeps_the_verified_size_of_a_blob_whose_descriptor_lies() {
    let env = test_env();
    let (_dir, store) = fresh_store();
    let honest = pull(&store, &format!("{}/busybox:latest", env.registry))
        .await
        .unwrap();
    let real = honest.layers[0].size;
    // The blob is stored already, so it is not fetched again and its lie is never caught by
    // a download: the record must still not believe it.
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new("/manifests/", 100, Fault::LayerSize(1 << 33))],
    );
    let name = format!("{}/busybox:latest", proxy.host());
    let record = bounded(30, pull(&store, &name)).await.unwrap();
    assert_eq!(record.layers[0].size, real);
    assert!(proxy.requests_to("/blobs/").is_empty(), "nothing fetched");
    let listed = store.find_image(&name).unwrap().expect("recorded");
    assert_eq!(listed.size(), real, "`images` shows the verified size");
    assert_verified(&store, &listed);
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn a_pull_dropped_at_a_deadline_frees_its_downloads_for_the_next() {
    // What a job's timeout does to its pull: the binary drops the pull future when the
    // deadline passes (`tokio::time::timeout_at`). Every download stops with it, its lock is
    // released and its bytes stay on disk for the next pull to resume (or for gc).
    let env = test_env();
    let (layer, size) = busybox_layer(&env.registry).await;
    let proxy = FaultProxy::start(
        &env.registry,
        vec![Rule::new(
            &layer,
            1,
            Fault::Trickle {
                after: 300 << 10,
                bytes: 10,
                every: Duration::from_millis(100),
            },
        )],
    );
    let mut s = settings();
    s.limits.stall.min_bytes_per_sec = 0;
    let (_dir, store) = fresh_store();
    let image = format!("{}/busybox:latest", proxy.host());
    let started = Instant::now();
    let dropped = tokio::time::timeout(
        Duration::from_secs(2),
        pull_with(s.clone(), &store, &image, "linux/amd64"),
    )
    .await;
    assert!(dropped.is_err(), "the deadline ended the pull");
    assert!(started.elapsed() < Duration::from_secs(5));
    let record = bounded(30, pull_with(s, &store, &image, "linux/amd64"))
        .await
        .unwrap();
    assert_verified(&store, &record);
    let attempts = proxy.requests_to(&layer);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let resumed_at: u64 = attempts[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .expect("resumed with a Range");
    assert!(resumed_at >= 300 << 10 && resumed_at < size, "{resumed_at}");
    assert!(ingest_leftovers(&store).is_empty());
}
