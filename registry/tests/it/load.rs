//! `load` of the test images' docker-save archive and OCI layout.

use std::path::Path;
use std::process::Command;

use dockless_registry::load::load;
use dockless_registry::{Digest, Error, Platform, Store};
use dockless_testkit::test_env;

use crate::{assert_verified, ingest_leftovers};

fn amd64() -> Platform {
    Platform::linux_amd64()
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn docker_save_archive_loads_and_verifies() {
    let env = test_env();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let records = load(&store, &env.docker_archive, &amd64()).unwrap();
    assert!(!records.is_empty());
    for r in &records {
        assert_verified(&store, r);
        assert!(r.name.contains("busybox"), "{}", r.name);
        for (layer, diff_id) in r.layers.iter().zip(&r.diff_ids) {
            if layer.media_type.ends_with(".tar") {
                assert_eq!(
                    &layer.digest, diff_id,
                    "an uncompressed layer's digest is its diff id"
                );
            }
        }
    }
    assert!(
        ingest_leftovers(&store).is_empty(),
        "{:?}",
        ingest_leftovers(&store)
    );
}

/// Copies the busybox image of the test layout into a layout of its own.
fn busybox_layout(target: &Path) {
    let env = test_env();
    let status = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:busybox", env.oci_layout.display()))
        .arg(format!("oci:{}:latest", target.display()))
        .status()
        .expect("skopeo is installed by scripts/test-env");
    assert!(status.success());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn oci_layout_directory_and_archive_load() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("bb");
    busybox_layout(&layout);
    let store = Store::open(dir.path().join("store")).unwrap();
    let records = load(&store, &layout, &amd64()).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].name, "localhost/bb:latest");
    assert_verified(&store, &records[0]);

    let archive = dir.path().join("bb.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let store2 = Store::open(dir.path().join("store2")).unwrap();
    let records2 = load(&store2, &archive, &amd64()).unwrap();
    assert_eq!(
        records2[0].digest, records[0].digest,
        "same manifest either way"
    );
    assert_verified(&store2, &records2[0]);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn tampered_layout_is_refused_and_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("bb");
    busybox_layout(&layout);
    let store = Store::open(dir.path().join("store")).unwrap();
    let probe = load(
        &Store::open(dir.path().join("probe")).unwrap(),
        &layout,
        &amd64(),
    )
    .unwrap();
    let layer = &probe[0].layers[0].digest;
    let path = layout.join("blobs/sha256").join(layer.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let err = load(&store, &layout, &amd64()).unwrap_err();
    assert!(
        matches!(&err, Error::DigestMismatch { expected, .. } if *expected == layer.to_string()),
        "{err}"
    );
    assert!(store.images().unwrap().is_empty());
    assert!(!store.has_blob(layer));
    assert!(
        !store.has_blob(&Digest::of(&bytes)),
        "the bad bytes are not kept under their own name"
    );
}

#[test]
fn unknown_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let err = load(&store, dir.path(), &amd64()).unwrap_err();
    assert!(
        err.to_string().contains("neither a docker save archive"),
        "{err}"
    );
}
