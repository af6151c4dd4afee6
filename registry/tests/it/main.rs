//! Integration tests of the registry crate against the real local registries started by
//! `scripts/test-env up` (Debian's docker-registry), with a fault-injecting proxy for the
//! cases a real registry cannot produce on demand.

mod auth;
mod faults;
mod limits;
mod load;
mod pull;

use std::sync::Arc;
use std::time::Duration;

use dockless_registry::{
    AuthFiles, Client, Digest, ImageRecord, ImageRef, NoProgress, Platform, Settings, Store,
};

/// Settings with a short backoff so fault tests run quickly.
pub fn settings() -> Settings {
    let mut s = Settings::default();
    s.retry.base_delay = Duration::from_millis(10);
    s.retry.attempts = 4;
    s.auth_files = AuthFiles { files: vec![] };
    s
}

/// Pulls `image` into `store` with `settings`.
pub async fn pull_with(
    settings: Settings,
    store: &Store,
    image: &str,
    platform: &str,
) -> dockless_registry::Result<ImageRecord> {
    let client = Client::new(settings)?;
    let reference = ImageRef::parse(image)?;
    let platform: Platform = platform.parse()?;
    client
        .pull(&reference, &platform, store, Arc::new(NoProgress))
        .await
}

/// Pulls for linux/amd64 with the default test settings.
pub async fn pull(store: &Store, image: &str) -> dockless_registry::Result<ImageRecord> {
    pull_with(settings(), store, image, "linux/amd64").await
}

/// Checks every blob of a record: present, right size, hashes to its name.
pub fn assert_verified(store: &Store, record: &ImageRecord) {
    let mut blobs: Vec<(Digest, Option<u64>)> =
        vec![(record.digest.clone(), None), (record.config.clone(), None)];
    blobs.extend(
        record
            .layers
            .iter()
            .map(|l| (l.digest.clone(), Some(l.size))),
    );
    for (digest, size) in blobs {
        let bytes =
            std::fs::read(store.blob_path(&digest)).unwrap_or_else(|e| panic!("{digest}: {e}"));
        assert_eq!(
            Digest::of(&bytes),
            digest,
            "blob content hashes to its name"
        );
        if let Some(size) = size {
            assert_eq!(bytes.len() as u64, size, "{digest} has its descriptor size");
        }
    }
    assert_eq!(record.diff_ids.len(), record.layers.len());
}

/// Names of files left in the ingest dir (partials and locks).
pub fn ingest_leftovers(store: &Store) -> Vec<String> {
    std::fs::read_dir(store.root().join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// busybox's layer: its `/blobs/<digest>` path and its size, from a clean pull.
pub async fn busybox_layer(registry: &str) -> (String, u64) {
    let (_dir, store) = fresh_store();
    let r = pull(&store, &format!("{registry}/busybox:latest"))
        .await
        .unwrap();
    (format!("/blobs/{}", r.layers[0].digest), r.layers[0].size)
}

/// An empty store in a temp dir (dropped with the dir).
pub fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}
