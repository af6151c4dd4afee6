//! The test images unpack exactly as `umoci unpack` does: file for file, mode for mode, owner
//! for owner, link for link, through the snapshot store and both kinds of run rootfs.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use dockless_runtime::rootfs::{MountMode, RootfsKind, SnapshotStore};
use dockless_runtime::unpack::ChainId;

fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) {
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .expect("umoci must be installed (run scripts/test-env up)");
    assert!(
        out.status.success(),
        "umoci unpack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Guards against a vacuous comparison: the reference tree must hold what the image promises.
fn assert_features(tree: &std::collections::BTreeMap<String, Node>, tag: &str) {
    assert!(tree.len() > 50, "{tag}: only {} entries", tree.len());
    assert!(tree.values().any(|n| n.kind == 'l'), "{tag}: no symlink");
    if tag == "layered" {
        assert!(
            tree.values().any(|n| n.mode & 0o4000 != 0),
            "no setuid file"
        );
        assert!(
            tree.values().any(|n| !n.hardlinks.is_empty()),
            "no hardlink"
        );
        assert!(
            tree.values().any(|n| n.uid == 1000),
            "no file owned by 1000"
        );
        assert!(
            tree.values().any(|n| n.kind == 'd' && n.mode == 0o700),
            "no 0700 dir"
        );
    }
}

fn check_image(tag: &str, with_dir_mtimes: bool) {
    require_root();
    let layout = oci_layout();
    let layers = image_layers(&layout, tag);
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("umoci");
    umoci_unpack(&layout, tag, &bundle);
    let mut expected = describe(&bundle.join("rootfs"), with_dir_mtimes);
    assert_features(&expected, tag);
    // The rootfs directory itself is the bundle's, not the image's.
    expected.remove("");

    let store = SnapshotStore::open(&tmp.path().join("store")).unwrap();
    let ensured = store.ensure(sources(&layers)).unwrap();
    assert_eq!(ensured.len(), layers.len());
    assert!(ensured.iter().all(|l| l.unpacked.is_some()));
    let chain: Vec<ChainId> = ensured.iter().map(|l| l.chain_id).collect();

    let overlay = store
        .mount_run(
            &chain,
            &tmp.path().join("run-overlay"),
            MountMode::OverlayOnly,
        )
        .unwrap();
    assert_eq!(overlay.kind(), &RootfsKind::Overlay);
    let mut got = describe(overlay.path(), with_dir_mtimes);
    got.remove("");
    assert_same_tree(&expected, &got, &format!("{tag} via overlay"));
    overlay.release().unwrap();
    assert!(!tmp.path().join("run-overlay").exists());

    let copy = store
        .mount_run(&chain, &tmp.path().join("run-copy"), MountMode::CopyOnly)
        .unwrap();
    assert!(matches!(copy.kind(), RootfsKind::Copy { .. }));
    let mut got = describe(copy.path(), with_dir_mtimes);
    got.remove("");
    assert_same_tree(&expected, &got, &format!("{tag} via flattened copy"));
    drop(copy);
    assert!(!tmp.path().join("run-copy").exists());

    // A second ensure reuses every snapshot and opens no blob.
    let again = store
        .ensure(
            sources(&layers)
                .into_iter()
                .map(|mut s| {
                    s.open = Box::new(|| panic!("a cached layer must not be opened"));
                    s
                })
                .collect(),
        )
        .unwrap();
    assert!(again.iter().all(|l| l.unpacked.is_none()));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn layered_image_matches_umoci() {
    check_image("layered", true);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn busybox_image_matches_umoci() {
    check_image("busybox", true);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn python_image_matches_umoci() {
    check_image("python", false);
}
