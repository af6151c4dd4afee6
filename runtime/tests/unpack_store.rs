//! The snapshot store and run rootfs: diff-id verification with nothing committed on
//! failure, compression by media type, overlay-format snapshots stacked by a real overlay
//! mount, implied directories, the per-run guard, and reuse across images.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::tarw::{Tar, diff_id_of};
use common::{describe, require_root};
use dockless_runtime::rootfs::{
    LayerSource, MountMode, RootfsError, RootfsKind, SnapshotStore, Sweep,
};
use dockless_runtime::unpack::{ChainId, Compression, DiffId, LayerError, chain_ids};

fn source(
    label: &str,
    blob: Vec<u8>,
    compression: Compression,
    diff_id: DiffId,
) -> LayerSource<'static> {
    LayerSource {
        label: label.into(),
        compression,
        diff_id,
        open: Box::new(move || Ok(Box::new(std::io::Cursor::new(blob)) as Box<dyn Read + Send>)),
    }
}

fn plain(label: &str, tar: &[u8]) -> LayerSource<'static> {
    source(label, tar.to_vec(), Compression::None, diff_id_of(tar))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn snapshot_names(store_root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store_root.join("snapshots-v2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn chain_of(ensured: &[dockless_runtime::rootfs::EnsuredLayer]) -> Vec<ChainId> {
    ensured.iter().map(|l| l.chain_id).collect()
}

fn mounted_below(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| Path::new(m).starts_with(dir))
        })
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn i5_i7_diff_id_mismatch_is_refused_and_nothing_is_committed() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut good = Tar::new();
    good.file("base", b"base");
    let good = good.finish();
    let mut evil = Tar::new();
    evil.file("evil", b"evil");
    let evil = evil.finish();
    // Layer 1 claims the diff id of other content.
    let mut other = Tar::new();
    other.file("claimed", b"claimed");
    let layers = vec![
        plain("sha256:good", &good),
        source(
            "sha256:evil",
            evil.clone(),
            Compression::None,
            diff_id_of(&other.finish()),
        ),
    ];
    let err = store.ensure(layers).unwrap_err();
    match &err {
        RootfsError::Unpack { index: 1, source } => {
            assert_eq!(source.layer, "sha256:evil");
            assert!(
                matches!(source.kind, LayerError::DiffIdMismatch { .. }),
                "{err:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // The good base layer is committed; the bad one and its staging directory are gone.
    assert_eq!(snapshot_names(tmp.path()), [diff_id_of(&good).0.hex()]);

    // A gzip blob with one byte changed fails (corrupt stream or mismatch), nothing committed.
    let mut gz = gzip(&evil);
    let n = gz.len();
    gz[n / 2] ^= 0xff;
    let err = store
        .ensure(vec![source(
            "sha256:flipped",
            gz,
            Compression::Gzip,
            diff_id_of(&evil),
        )])
        .unwrap_err();
    assert!(
        matches!(err, RootfsError::Unpack { index: 0, .. }),
        "{err:?}"
    );
    assert_eq!(snapshot_names(tmp.path()).len(), 1);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn i1_i2_i8_gzip_and_zstd_layers_unpack_by_media_type() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut a = Tar::new();
    a.file("a", b"gzip layer");
    let a = a.finish();
    let mut b = Tar::new();
    b.file("b", b"zstd layer");
    let b = b.finish();
    let mut zst = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 0x5d, 0, 0, 0];
    zst.extend(zstd::encode_all(&b[..], 3).unwrap());
    let oci = "application/vnd.oci.image.layer.v1.tar";
    let layers = vec![
        source(
            "gz",
            gzip(&a),
            Compression::from_media_type(&format!("{oci}+gzip")).unwrap(),
            diff_id_of(&a),
        ),
        source(
            "zst",
            zst,
            Compression::from_media_type(&format!("{oci}+zstd")).unwrap(),
            diff_id_of(&b),
        ),
    ];
    let ensured = store.ensure(layers).unwrap();
    let run = store
        .mount_run(
            &chain_of(&ensured),
            &tmp.path().join("run"),
            MountMode::OverlayOnly,
        )
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(run.path().join("a")).unwrap(),
        "gzip layer"
    );
    assert_eq!(
        std::fs::read_to_string(run.path().join("b")).unwrap(),
        "zstd layer"
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn e11_g9_whiteouts_through_a_real_overlay_mount_and_the_copy_fallback() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    // The E11 layers (see unpack_cases.rs), checked after each prefix of the stack.
    let mk = |entries: &[&str]| {
        let mut t = Tar::new();
        for e in entries {
            if e.ends_with('/') {
                t.dir(e);
            } else {
                t.file(e, b"");
            }
        }
        t.finish()
    };
    let layers = [
        mk(&[
            ".baz",
            "bar/",
            "bar/bax",
            "bar/bay/",
            "baz",
            "foo/",
            "foo/.abc",
            "foo/.bcd/",
            "foo/.bcd/a",
            "foo/cde/",
            "foo/cde/def",
            "foo/cde/efg",
            "foo/fgh",
            "foobar",
        ]),
        mk(&[
            ".bay",
            ".wh.baz",
            "foo/",
            "foo/.bce",
            "foo/.wh..wh..opq",
            "foo/cde/",
            "foo/cde/efg",
        ]),
        mk(&[
            ".bay",
            ".wh..baz",
            ".wh.foobar",
            "foo/",
            "foo/.abc",
            "foo/.wh.cde",
            "bar/",
        ]),
        mk(&[".abc", ".wh..wh..opq", "foobar"]),
    ];
    let expected: [&[&str]; 4] = [
        &[
            ".baz",
            "bar",
            "bar/bax",
            "bar/bay",
            "baz",
            "foo",
            "foo/.abc",
            "foo/.bcd",
            "foo/.bcd/a",
            "foo/cde",
            "foo/cde/def",
            "foo/cde/efg",
            "foo/fgh",
            "foobar",
        ],
        &[
            ".bay",
            ".baz",
            "bar",
            "bar/bax",
            "bar/bay",
            "foo",
            "foo/.bce",
            "foo/cde",
            "foo/cde/efg",
            "foobar",
        ],
        &[
            ".bay", "bar", "bar/bax", "bar/bay", "foo", "foo/.abc", "foo/.bce",
        ],
        &[".abc", "foobar"],
    ];
    let ensured = store
        .ensure(
            layers
                .iter()
                .enumerate()
                .map(|(i, l)| plain(&format!("L{}", i + 1), l))
                .collect(),
        )
        .unwrap();
    let chain = chain_of(&ensured);
    // The snapshots are in overlay format.
    let l2 = store.snapshot_dir(&chain[1]);
    let wh = std::fs::symlink_metadata(l2.join("baz")).unwrap();
    assert_eq!((wh.mode() & 0o170000, wh.rdev()), (0o020000, 0));
    let mut buf = [0u8; 4];
    let n =
        rustix::fs::getxattr(l2.join("foo").as_path(), "user.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    for depth in 1..=4 {
        for mode in [MountMode::OverlayOnly, MountMode::CopyOnly] {
            let run_dir = tmp.path().join(format!("run-{depth}-{mode:?}"));
            let run = store.mount_run(&chain[..depth], &run_dir, mode).unwrap();
            let got: Vec<String> = describe(run.path(), false)
                .into_keys()
                .filter(|k| !k.is_empty())
                .collect();
            assert_eq!(got, expected[depth - 1], "{depth} layers, {mode:?}");
            run.release().unwrap();
            assert!(!run_dir.exists());
        }
    }
    assert!(!mounted_below(tmp.path()));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn e12_opaque_marker_after_its_sibling_in_the_overlay_store() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut l1 = Tar::new();
    l1.file("d/a.txt", b"").file("d/b.txt", b"");
    let mut l2 = Tar::new();
    l2.file("d/c.txt", b"").file("d/.wh..wh..opq", b"");
    let ensured = store
        .ensure(vec![plain("l1", &l1.finish()), plain("l2", &l2.finish())])
        .unwrap();
    let run = store
        .mount_run(
            &chain_of(&ensured),
            &tmp.path().join("run"),
            MountMode::OverlayOnly,
        )
        .unwrap();
    let names: Vec<String> = describe(run.path(), false)
        .into_keys()
        .filter(|k| !k.is_empty())
        .collect();
    assert_eq!(names, ["d", "d/c.txt"]);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn implied_directories_keep_the_lower_layers_attributes() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut l1 = Tar::new();
    let mut h = l1.header(b"srv/", tar::EntryType::Directory, b"", 0, 0o750);
    h.set_uid(33);
    h.set_gid(44);
    h.set_mtime(1_234_567_890);
    l1.raw(&mut h, b"");
    let mut l2 = Tar::new();
    l2.file("srv/new", b"n");
    let ensured = store
        .ensure(vec![plain("l1", &l1.finish()), plain("l2", &l2.finish())])
        .unwrap();
    let run = store
        .mount_run(
            &chain_of(&ensured),
            &tmp.path().join("run"),
            MountMode::OverlayOnly,
        )
        .unwrap();
    let md = std::fs::metadata(run.path().join("srv")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid(), md.mtime()),
        (0o750, 33, 44, 1_234_567_890)
    );
    assert_eq!(
        ensured[1].unpacked.as_ref().unwrap().implied_dirs,
        [b"srv".to_vec()]
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b24_a_layer_relying_on_a_lower_symlink_is_replayed_over_its_lowers() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut l1 = Tar::new();
    l1.dir("usr/")
        .dir_mode("usr/lib/", 0o751)
        .file("usr/lib/lower", b"l")
        .symlink("lib", "usr/lib");
    let mut l2 = Tar::new();
    l2.file("lib/systemd/system/container.service", b"unit")
        .file("usr/lib/.wh.lower", b"")
        .file("other/new", b"n");
    let l2 = l2.finish();
    let ensured = store
        .ensure(vec![plain("l1", &l1.finish()), plain("l2", &l2)])
        .unwrap();
    let chain = chain_of(&ensured);
    for mode in [MountMode::OverlayOnly, MountMode::CopyOnly] {
        let run = store
            .mount_run(&chain, &tmp.path().join(format!("run-{mode:?}")), mode)
            .unwrap();
        let root = run.path();
        assert!(
            root.join("lib").is_symlink(),
            "{mode:?}: lib must stay a symlink"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("usr/lib/systemd/system/container.service")).unwrap(),
            "unit"
        );
        assert!(
            !root.join("usr/lib/lower").exists(),
            "{mode:?}: the whiteout still applies"
        );
        assert_eq!(
            std::fs::metadata(root.join("usr/lib")).unwrap().mode() & 0o7777,
            0o751
        );
        assert_eq!(
            std::fs::read_to_string(root.join("other/new")).unwrap(),
            "n"
        );
    }
    // The temporary mount's bookkeeping (origin, impure, uuid) is not left in the snapshot.
    let rebased = store.snapshot_dir(&chain[1]);
    for (path, node) in describe(&rebased, false) {
        if node.kind == 'l' {
            continue;
        }
        let mut names = vec![0u8; 4096];
        let n = rustix::fs::listxattr(rebased.join(&path).as_path(), &mut names).unwrap();
        for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            assert!(
                !(name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay."))
                    || name == b"user.overlay.opaque",
                "{path:?} keeps {}",
                String::from_utf8_lossy(name)
            );
        }
    }
    // Only the two snapshots remain (no staging or rebase leftovers).
    assert_eq!(
        snapshot_names(tmp.path()).len(),
        2,
        "{:?}",
        snapshot_names(tmp.path())
    );
    assert!(!mounted_below(tmp.path()));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn c16_hardlinks_to_lower_layer_files_are_made_on_top_of_the_lowers() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut l1 = Tar::new();
    l1.file_mode("usr/bin/perl", b"perl", 0o755)
        .file("etc/keep", b"k");
    let mut l2 = Tar::new();
    l2.hardlink("usr/bin/perl5", "usr/bin/perl")
        .hardlink("replaced", "etc/keep")
        .file("replaced", b"same layer wins");
    let ensured = store
        .ensure(vec![plain("l1", &l1.finish()), plain("l2", &l2.finish())])
        .unwrap();
    let run = store
        .mount_run(
            &chain_of(&ensured),
            &tmp.path().join("run"),
            MountMode::OverlayOnly,
        )
        .unwrap();
    let a = std::fs::metadata(run.path().join("usr/bin/perl")).unwrap();
    let b = std::fs::metadata(run.path().join("usr/bin/perl5")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        std::fs::read_to_string(run.path().join("usr/bin/perl5")).unwrap(),
        "perl"
    );
    assert_eq!(
        std::fs::read_to_string(run.path().join("replaced")).unwrap(),
        "same layer wins"
    );
    assert_eq!(
        std::fs::metadata(run.path().join("etc/keep"))
            .unwrap()
            .nlink(),
        1
    );
    drop(run);
    // In the base layer there is nothing to link to.
    let mut l0 = Tar::new();
    l0.hardlink("dangling", "nowhere");
    let err = store.ensure(vec![plain("l0", &l0.finish())]).unwrap_err();
    assert!(
        matches!(err, RootfsError::Unpack { index: 0, .. }),
        "{err:?}"
    );
    assert_eq!(snapshot_names(tmp.path()).len(), 2);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn run_rootfs_is_private_writable_and_cleaned_up_on_drop_and_panic() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut l1 = Tar::new();
    l1.file("etc/hostname", b"image");
    let l1 = l1.finish();
    let ensured = store.ensure(vec![plain("l1", &l1)]).unwrap();
    let chain = chain_of(&ensured);
    let snapshot = store.snapshot_dir(&chain[0]);
    let run_a = store
        .mount_run(&chain, &tmp.path().join("a"), MountMode::OverlayOrCopy)
        .unwrap();
    let run_b = store
        .mount_run(&chain, &tmp.path().join("b"), MountMode::OverlayOrCopy)
        .unwrap();
    assert_eq!(run_a.kind(), &RootfsKind::Overlay);
    std::fs::write(run_a.path().join("etc/hostname"), "changed").unwrap();
    std::fs::create_dir(run_a.path().join("data")).unwrap();
    assert_eq!(
        std::fs::read_to_string(run_b.path().join("etc/hostname")).unwrap(),
        "image"
    );
    assert_eq!(
        std::fs::read_to_string(snapshot.join("etc/hostname")).unwrap(),
        "image"
    );
    assert!(!snapshot.join("data").exists());
    drop(run_a);
    assert!(!tmp.path().join("a").exists());
    // A panic while the rootfs is in use still unmounts it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _keep = run_b;
        panic!("simulated failure during a run");
    }));
    assert!(result.is_err());
    assert!(!tmp.path().join("b").exists());
    assert!(!mounted_below(tmp.path()));
    // The run directory must be new.
    std::fs::create_dir(tmp.path().join("taken")).unwrap();
    assert!(matches!(
        store.mount_run(&chain, &tmp.path().join("taken"), MountMode::OverlayOnly),
        Err(RootfsError::RunDir { .. })
    ));
    // Unknown snapshots are reported, not mounted.
    let other = chain_ids(&[diff_id_of(b"nothing")]);
    assert!(matches!(
        store.mount_run(&other, &tmp.path().join("c"), MountMode::OverlayOnly),
        Err(RootfsError::MissingSnapshot(_))
    ));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn leftovers_of_a_killed_runner_are_removed() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut l1 = Tar::new();
    l1.file("f", b"x");
    let ensured = store.ensure(vec![plain("l1", &l1.finish())]).unwrap();
    let run_dir = tmp.path().join("run");
    let run = store
        .mount_run(&chain_of(&ensured), &run_dir, MountMode::OverlayOnly)
        .unwrap();
    std::fs::write(run.path().join("written"), "w").unwrap();
    // As if the runner was SIGKILLed: no destructor runs.
    std::mem::forget(run);
    assert!(mounted_below(&run_dir));
    dockless_runtime::rootfs::remove_leftover_run(&run_dir).unwrap();
    assert!(!run_dir.exists());
    assert!(!mounted_below(tmp.path()));
    // A staging directory of a dead process is removed when the store is opened again.
    let stale = tmp.path().join("snapshots-v2/.staging-abc-999999999-0");
    std::fs::create_dir_all(stale.join("deep/tree")).unwrap();
    SnapshotStore::open(tmp.path()).unwrap();
    assert!(!stale.exists());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn overlay_unavailable_falls_back_to_a_copy_and_says_why() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut l1 = Tar::new();
    l1.file("f", b"x");
    let ensured = store.ensure(vec![plain("l1", &l1.finish())]).unwrap();
    let chain = chain_of(&ensured);
    // Overlayfs refuses an upper directory on overlayfs itself: mount a run, then try to place
    // another run's directory inside it.
    let outer = store
        .mount_run(&chain, &tmp.path().join("outer"), MountMode::OverlayOnly)
        .unwrap();
    let nested = outer.path().join("nested-run");
    let copy = store
        .mount_run(&chain, &nested, MountMode::OverlayOrCopy)
        .unwrap();
    match copy.kind() {
        RootfsKind::Copy { reason } => assert!(!reason.is_empty()),
        RootfsKind::Overlay => panic!("overlay on overlay upper unexpectedly worked"),
    }
    assert_eq!(std::fs::read_to_string(copy.path().join("f")).unwrap(), "x");
    assert!(
        store
            .mount_run(&chain, &outer.path().join("strict"), MountMode::OverlayOnly)
            .is_err()
    );
    copy.release().unwrap();
    outer.release().unwrap();
    assert!(!mounted_below(tmp.path()));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn layers_shared_by_two_images_are_unpacked_once() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut base = Tar::new();
    base.file("base", b"b");
    let base = base.finish();
    let mut app1 = Tar::new();
    app1.file("app", b"1");
    let mut app2 = Tar::new();
    app2.file("app", b"2");
    let first = store
        .ensure(vec![plain("base", &base), plain("app1", &app1.finish())])
        .unwrap();
    let second = store
        .ensure(vec![
            LayerSource {
                open: Box::new(|| panic!("the shared base must not be opened again")),
                ..plain("base", &base)
            },
            plain("app2", &app2.finish()),
        ])
        .unwrap();
    assert_eq!(first[0].chain_id, second[0].chain_id);
    assert!(second[0].unpacked.is_none() && second[1].unpacked.is_some());
    assert_eq!(snapshot_names(tmp.path()).len(), 3);
}

#[test]
fn a_failing_base_layer_commits_nothing_and_openers_errors_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut ok = Tar::new();
    ok.file("ok", b"ok");
    let ok = ok.finish();
    let mut truncated = Tar::new();
    let mut h = truncated.header(b"big", tar::EntryType::Regular, b"", 1 << 20, 0o644);
    truncated.raw(&mut h, b"short");
    let truncated = truncated.unterminated();
    let err = store
        .ensure(vec![
            plain("broken-base", &truncated),
            plain("ok1", &ok),
            plain("ok2", &ok),
        ])
        .unwrap_err();
    assert!(
        matches!(err, RootfsError::Unpack { index: 0, ref source } if matches!(source.kind, LayerError::Stream(_))),
        "{err:?}"
    );
    assert!(
        snapshot_names(tmp.path()).is_empty(),
        "{:?}",
        snapshot_names(tmp.path())
    );
    let err = store
        .ensure(vec![LayerSource {
            open: Box::new(|| Err(std::io::Error::other("registry gone"))),
            ..plain("sha256:unreachable", &ok)
        }])
        .unwrap_err();
    assert!(
        matches!(err, RootfsError::OpenLayer { ref label, .. } if label == "sha256:unreachable")
    );
    assert!(snapshot_names(tmp.path()).is_empty());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_layer_streams_from_a_reader_that_is_still_being_written() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut t = Tar::new();
    for i in 0..200 {
        t.file(
            &format!("dir{}/file{i}", i % 7),
            format!("content {i}").repeat(300).as_bytes(),
        );
    }
    let layer = t.finish();
    let gz = gzip(&layer);
    // A pipe fed in small, slow pieces stands in for a download in progress.
    let (reader, mut writer) = std::io::pipe().unwrap();
    let feeder = std::thread::spawn(move || {
        for piece in gz.chunks(1000) {
            writer.write_all(piece).unwrap();
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    let source = LayerSource {
        label: "streamed".into(),
        compression: Compression::Gzip,
        diff_id: diff_id_of(&layer),
        open: Box::new(move || Ok(Box::new(reader) as Box<dyn Read + Send>)),
    };
    let ensured = store.ensure(vec![source]).unwrap();
    feeder.join().unwrap();
    let report = ensured[0].unpacked.as_ref().unwrap();
    assert_eq!(report.stats.entries, 200);
    assert_eq!(report.uncompressed_bytes, layer.len() as u64);
    let dir = store.snapshot_dir(&ensured[0].chain_id);
    assert_eq!(
        std::fs::read_to_string(dir.join("dir3/file199")).unwrap(),
        "content 199".repeat(300)
    );
}

#[test]
fn limits_stop_decompression_bombs_and_entry_floods() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(tmp.path()).unwrap();
    let mut t = Tar::new();
    t.file("zeros", &vec![0u8; 4 << 20]);
    let bomb = t.finish();
    store.limits.max_layer_bytes = 1 << 20;
    let err = store
        .ensure(vec![source(
            "bomb",
            gzip(&bomb),
            Compression::Gzip,
            diff_id_of(&bomb),
        )])
        .unwrap_err();
    assert!(
        matches!(err, RootfsError::Unpack { ref source, .. } if matches!(source.kind, LayerError::Limit(_))),
        "{err:?}"
    );
    store.limits = Default::default();
    store.limits.max_entries = 10;
    let mut t = Tar::new();
    for i in 0..11 {
        t.file(&format!("f{i}"), b"");
    }
    let err = store.ensure(vec![plain("flood", &t.finish())]).unwrap_err();
    assert!(
        matches!(err, RootfsError::Unpack { ref source, .. } if matches!(source.kind, LayerError::Limit(_))),
        "{err:?}"
    );
    assert!(snapshot_names(tmp.path()).is_empty());
}

/// A layer with a world-usable character device (1:3, the host's null device) and a setuid
/// root file: the two things a host user reaching a run's rootfs must get nothing from.
fn device_and_setuid_layer() -> Vec<u8> {
    let mut t = Tar::new();
    let mut h = t.header(b"disk", tar::EntryType::Char, b"", 0, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    t.raw(&mut h, b"");
    t.file_mode("suid", b"#!/bin/sh\n", 0o4755);
    t.finish()
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn run_rootfs_is_nodev_nosuid_in_both_modes() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let ensured = store
        .ensure(vec![plain("dev", &device_and_setuid_layer())])
        .unwrap();
    let chain = chain_of(&ensured);
    for mode in [MountMode::OverlayOnly, MountMode::CopyOnly] {
        let run_dir = tmp.path().join(format!("run-{mode:?}"));
        let run = store.mount_run(&chain, &run_dir, mode).unwrap();
        // The node is there (as root sees it), but the mount gives it no device semantics.
        let node = std::fs::symlink_metadata(run.path().join("disk")).unwrap();
        assert_eq!(node.mode() & 0o170000, 0o020000, "{mode:?}");
        let flags = rustix::fs::statvfs(run.path()).unwrap().f_flag;
        assert!(
            flags.contains(rustix::fs::StatVfsMountFlags::NODEV)
                && flags.contains(rustix::fs::StatVfsMountFlags::NOSUID),
            "{mode:?}: {flags:?}"
        );
        let opened = std::fs::File::open(run.path().join("disk"));
        assert_eq!(
            opened.map(|_| ()).unwrap_err().raw_os_error(),
            Some(libc::EACCES),
            "{mode:?}"
        );
        run.release().unwrap();
        assert!(!run_dir.exists());
    }
    assert!(!mounted_below(tmp.path()));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn an_id_shifted_store_skips_device_nodes() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let shift = dockless_runtime::unpack::IdShift {
        base: 300_000,
        count: 65_536,
    };
    let store = SnapshotStore::open_shifted(tmp.path(), shift).unwrap();
    let ensured = store
        .ensure(vec![plain("dev", &device_and_setuid_layer())])
        .unwrap();
    let stats = &ensured[0].unpacked.as_ref().unwrap().stats;
    assert_eq!(stats.devices_skipped, 1);
    let snap = store.snapshot_dir(&chain_of(&ensured)[0]);
    assert!(std::fs::symlink_metadata(snap.join("disk")).is_err());
    let suid = std::fs::symlink_metadata(snap.join("suid")).unwrap();
    assert_eq!((suid.uid(), suid.mode() & 0o7777), (300_000, 0o4755));
}

/// A committed snapshot as the store sees one (a directory named by its chain id), made by
/// hand so that removal can be tested without unpacking (and without root).
fn fake_snapshot(store: &SnapshotStore, n: u8) -> ChainId {
    let chain: ChainId = format!("sha256:{}", hex::encode([n; 32])).parse().unwrap();
    let dir = store.snapshot_dir(&chain);
    std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
    std::fs::write(dir.join("usr/lib/data"), [n; 100]).unwrap();
    chain
}

fn store_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn h9_snapshots_no_image_references_are_removed_unless_a_run_leases_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let (kept, leased, orphan) = (
        fake_snapshot(&store, 1),
        fake_snapshot(&store, 2),
        fake_snapshot(&store, 3),
    );
    // A removal killed after its rename: never a chain id, finished by the next sweep.
    let half = tmp.path().join("snapshots-v2/.removing-dead-1-0");
    std::fs::create_dir_all(half.join("usr")).unwrap();
    // The same chain ids in a store shifted for `--userns`, found by `open_all`.
    let shift = dockless_runtime::unpack::IdShift {
        base: 300_000,
        count: 65_536,
    };
    let shifted = SnapshotStore::open_shifted(tmp.path(), shift).unwrap();
    for n in [1, 2, 3] {
        fake_snapshot(&shifted, n);
    }

    let lease = store.lease(&[leased]).unwrap();
    let keep: HashSet<ChainId> = [kept].into();
    let stores = SnapshotStore::open_all(tmp.path()).unwrap();
    assert_eq!(stores.len(), 2);
    let sweeps: Vec<Sweep> = stores
        .iter()
        .map(|s| s.remove_unreferenced(&keep).unwrap())
        .collect();
    // The plain store: the leased snapshot stays (and says so), the orphan is gone.
    let plain_sweep = sweeps
        .iter()
        .find(|s| !s.in_use.is_empty())
        .expect("the plain store's sweep");
    assert_eq!(plain_sweep.removed, [orphan]);
    assert_eq!(plain_sweep.in_use, [leased]);
    // The shifted store's lease files are its own: nothing of it is leased.
    let shifted_sweep = sweeps.iter().find(|s| s.in_use.is_empty()).unwrap();
    assert_eq!(shifted_sweep.removed, [leased, orphan]);
    assert!(store.contains(&kept) && store.contains(&leased) && !store.contains(&orphan));
    assert!(!half.exists());
    assert!(shifted.contains(&kept) && !shifted.contains(&leased));
    assert_eq!(
        std::fs::read(store.snapshot_dir(&leased).join("usr/lib/data")).unwrap(),
        [2; 100]
    );
    // Removing one snapshot by name refuses a leased one too.
    let err = store.remove(&leased).unwrap_err();
    assert!(
        matches!(err, RootfsError::SnapshotInUse(c) if c == leased),
        "{err:?}"
    );
    assert!(err.to_string().contains("in use"), "{err}");

    // The run ended: the next sweep removes it, and no lease file is left behind.
    drop(lease);
    let sweep = store.remove_unreferenced(&keep).unwrap();
    assert_eq!((sweep.removed, sweep.in_use), (vec![leased], vec![]));
    assert_eq!(
        store_entries(&tmp.path().join("snapshots-v2")),
        [kept.hex()]
    );
    store.remove(&kept).unwrap();
    assert!(store_entries(&tmp.path().join("snapshots-v2")).is_empty());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn h9_a_running_rootfs_keeps_its_snapshots_until_it_is_released() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let mut base = Tar::new();
    base.file("base", b"base");
    let mut app = Tar::new();
    app.file("app", b"app");
    let ensured = store
        .ensure(vec![
            plain("base", &base.finish()),
            plain("app", &app.finish()),
        ])
        .unwrap();
    let chain = chain_of(&ensured);
    for mode in [MountMode::OverlayOnly, MountMode::CopyOnly] {
        let run = store
            .mount_run(&chain, &tmp.path().join(format!("run-{mode:?}")), mode)
            .unwrap();
        // `rmi` during the run: its image is gone, its snapshots stay while it runs.
        let removed = store.remove(&chain[0]);
        assert!(
            removed
                .as_ref()
                .is_err_and(|e| e.to_string().contains("in use")),
            "{mode:?}: {removed:?}"
        );
        let sweep = store.remove_unreferenced(&HashSet::new()).unwrap();
        assert!(sweep.removed.is_empty(), "{mode:?}: {sweep:?}");
        assert_eq!(sweep.in_use, {
            let mut c = chain.clone();
            c.sort();
            c
        });
        assert_eq!(
            std::fs::read_to_string(run.path().join("base")).unwrap(),
            "base"
        );
        assert!(chain.iter().all(|c| store.contains(c)));
        run.release().unwrap();
    }
    // The run is over: the sweep `dockless gc` does removes them.
    let sweep = store.remove_unreferenced(&HashSet::new()).unwrap();
    assert_eq!(sweep.removed.len(), 2);
    assert!(snapshot_names(tmp.path()).is_empty());
    // A run of an image whose snapshots were removed is refused, not mounted half.
    let err = store
        .mount_run(&chain, &tmp.path().join("late"), MountMode::OverlayOnly)
        .unwrap_err();
    assert!(matches!(err, RootfsError::MissingSnapshot(_)), "{err:?}");
}

/// A staging directory in the store, as an unpacking process names one.
fn fake_staging(store_root: &Path, name: &str) -> std::path::PathBuf {
    let dir = store_root.join("snapshots-v2").join(name);
    std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
    std::fs::write(dir.join("usr/lib/big"), [0u8; 4096]).unwrap();
    dir
}

#[test]
fn h6_a_staging_dir_is_removed_when_its_owner_is_gone_whatever_its_pid() {
    let tmp = tempfile::tempdir().unwrap();
    SnapshotStore::open(tmp.path()).unwrap();
    let me = std::process::id();
    // A killed pull whose pid now belongs to a live process (pid 1; or ours, with its lock
    // file left unlocked): its owner is gone all the same.
    let reused = fake_staging(tmp.path(), ".staging-aa-1-0");
    let unlocked = fake_staging(tmp.path(), &format!(".staging-bb-{me}-1-0"));
    let unlocked_lock = tmp
        .path()
        .join(format!("snapshots-v2/.staging-bb-{me}-1-0.lock"));
    std::fs::write(&unlocked_lock, "").unwrap();
    // A live owner (its lock held) whose name carries a pid that does not exist, as a process
    // in another pid namespace would write: it is not touched.
    let owned = fake_staging(tmp.path(), ".staging-cc-999999999-0");
    let owner = std::fs::File::create(tmp.path().join("snapshots-v2/.staging-cc-999999999-0.lock"))
        .unwrap();
    owner.lock().unwrap();
    // A lock whose directory is gone and whose owner died.
    let lone_lock = tmp.path().join("snapshots-v2/.staging-dd-1-0.lock");
    std::fs::write(&lone_lock, "").unwrap();

    let store = SnapshotStore::open(tmp.path()).unwrap();
    assert!(!reused.exists() && !unlocked.exists() && !unlocked_lock.exists());
    assert!(!lone_lock.exists());
    assert!(owned.join("usr/lib/big").exists());
    assert_eq!(store.remove_stale_staging().unwrap(), 0);
    // The owner is gone (as when it is killed: the kernel drops its lock).
    drop(owner);
    assert_eq!(store.remove_stale_staging().unwrap(), 1);
    assert!(store_entries(&tmp.path().join("snapshots-v2")).is_empty());
}

#[test]
fn h6_a_pull_in_progress_keeps_its_staging_dir_through_a_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    // A layer with no entries (only end-of-archive blocks) unpacks without root.
    let layer = vec![0u8; 64 * 1024];
    let (reader, mut writer) = std::io::pipe().unwrap();
    let source = LayerSource {
        label: "slow".into(),
        compression: Compression::None,
        diff_id: diff_id_of(&layer),
        open: Box::new(move || Ok(Box::new(reader) as Box<dyn Read + Send>)),
    };
    let pull = std::thread::spawn(move || store.ensure(vec![source]));
    writer.write_all(&layer[..1024]).unwrap();
    let snapshots = tmp.path().join("snapshots-v2");
    let staging = |entries: &[String]| -> Vec<String> {
        entries
            .iter()
            .filter(|n| n.starts_with(".staging-") && !n.ends_with(".lock"))
            .cloned()
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while staging(&store_entries(&snapshots)).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no staging dir appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // What `dockless gc` calls, while the pull is running (in this process: a lock is per
    // open file, so the same process counts as another owner).
    let other = SnapshotStore::open(tmp.path()).unwrap();
    assert_eq!(other.remove_stale_staging().unwrap(), 0);
    assert_eq!(staging(&store_entries(&snapshots)).len(), 1);
    writer.write_all(&layer[1024..]).unwrap();
    drop(writer);
    let ensured = pull.join().unwrap().unwrap();
    assert_eq!(
        store_entries(&snapshots),
        [ensured[0].chain_id.hex()],
        "only the committed snapshot is left"
    );
}

#[test]
fn h4_an_image_past_its_total_size_limit_is_refused_and_nothing_is_committed() {
    assert_eq!(
        dockless_runtime::unpack::Limits::default().max_image_bytes,
        256 << 30
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(tmp.path()).unwrap();
    store.limits.max_image_bytes = 10 * 1024;
    // Layers with no entries (only end-of-archive blocks), so that no root is needed: each
    // fits the limit, together they do not.
    let small = vec![0u8; 6 * 1024];
    let other = vec![0u8; 7 * 1024];
    let err = store
        .ensure(vec![
            plain("sha256:small", &small),
            plain("sha256:other", &other),
        ])
        .unwrap_err();
    let RootfsError::Unpack { source, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert!(
        matches!(source.kind, LayerError::ImageLimit { max: 10240 }),
        "{err:?}"
    );
    let text = format!("{err}: {source}: {}", source.kind);
    for part in ["sha256:", "10240 bytes", "max_image_bytes"] {
        assert!(text.contains(part), "{part:?} not in {text:?}");
    }
    // Not even the layer below the one that passed it: a retry would add more each time.
    assert!(
        store_entries(&tmp.path().join("snapshots-v2")).is_empty(),
        "{:?}",
        store_entries(&tmp.path().join("snapshots-v2"))
    );
    // Each layer alone is within the limit; one past it on its own is not.
    store.ensure(vec![plain("sha256:small", &small)]).unwrap();
    let err = store
        .ensure(vec![plain("sha256:huge", &vec![0u8; 11 * 1024])])
        .unwrap_err();
    assert!(
        matches!(err, RootfsError::Unpack { index: 0, ref source } if matches!(source.kind, LayerError::ImageLimit { .. })),
        "{err:?}"
    );
}
