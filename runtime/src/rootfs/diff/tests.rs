//! The diff against real overlay mounts: round trips, refusals and limits.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, openat};

use super::{DiffOptions, write_upper_as_layer};
use crate::rootfs::DiffError;
use crate::unpack::tree::open_child_dir;
use crate::unpack::{Compression, LayerBlob, LayerFormat, Limits, unpack_layer};

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests mount overlayfs and make whiteouts: run them as root"
    );
}

/// Every entry below `root`: kind, mode, owner and content or link target.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let p = dir.join(&name);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let what = if m.is_dir() {
                walk(root, &p, out);
                "dir".to_owned()
            } else if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else {
                format!("file {:?}", std::fs::read_to_string(&p).unwrap())
            };
            out.insert(
                rel,
                format!("{what} {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()),
            );
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn entries(tar_bytes: &[u8]) -> Vec<String> {
    tar::Archive::new(tar_bytes)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Changes made through a real overlay, turned into a layer and applied on the lower tree
/// by the runtime's own unpacker, give the tree the overlay showed.
#[test]
#[ignore = "needs root and scripts/test-env"]
fn overlay_changes_round_trip_through_the_layer() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged, applied] =
        ["lower", "upper", "work", "merged", "applied"].map(|d| tmp.path().join(d));
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    write(&lower.join("changed"), "old");
    write(&lower.join("deleted"), "bye");
    write(&lower.join("dir/removed"), "x");
    write(&lower.join("dir/kept"), "k");
    write(&lower.join("replaced/old"), "o");
    write(&lower.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n");

    crate::overlay::mount_overlay(std::slice::from_ref(&lower), &upper, &work, &merged).unwrap();
    let result = std::panic::catch_unwind(|| {
        write(&merged.join("changed"), "new content");
        write(&merged.join("added/deep/file"), "a");
        std::fs::remove_file(merged.join("deleted")).unwrap();
        std::fs::remove_file(merged.join("dir/removed")).unwrap();
        std::fs::remove_dir_all(merged.join("replaced")).unwrap();
        write(&merged.join("replaced/fresh"), "f");
        symlink("../changed", merged.join("added/link")).unwrap();
        std::fs::hard_link(merged.join("added/deep/file"), merged.join("added/hard")).unwrap();
        std::fs::create_dir(merged.join("proc")).unwrap(); // a mount point, empty
        snapshot(&merged)
    });
    rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::empty()).unwrap();
    let expected = result.unwrap();

    let options = DiffOptions {
        fixed_mtime: Some(1_700_000_000),
        mount_points: vec![PathBuf::from("proc")],
        ..DiffOptions::default()
    };
    let mut layer = Vec::new();
    let report = write_upper_as_layer(&upper, &options, &mut layer).unwrap();
    let mut again = Vec::new();
    write_upper_as_layer(&upper, &options, &mut again).unwrap();
    assert_eq!(layer, again, "the same upper dir gives the same bytes");
    assert_eq!((report.whiteouts, report.opaque_dirs), (2, 1), "{report:?}");
    let names = entries(&layer);
    for wanted in [
        ".wh.deleted",
        "dir/.wh.removed",
        "replaced/.wh..wh..opq",
        "replaced/fresh",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing in {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n.starts_with("proc")), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("etc")),
        "unchanged: {names:?}"
    );

    // Apply on a copy of the lower tree: the result is what the overlay showed (but the
    // mount point left out).
    let cp = std::process::Command::new("cp")
        .args(["-a", lower.to_str().unwrap(), applied.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    let diff_id = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&layer))
    );
    unpack_layer(
        LayerBlob {
            label: "diff".into(),
            blob: Box::new(&layer[..]),
            compression: Compression::None,
            diff_id: diff_id.parse().unwrap(),
        },
        &applied,
        LayerFormat::Flattened,
        &Limits::default(),
    )
    .unwrap();
    let mut expected = expected;
    expected.remove(Path::new("proc"));
    assert_eq!(snapshot(&applied), expected);
    let hard = std::fs::metadata(applied.join("added/hard")).unwrap();
    assert_eq!(
        hard.ino(),
        std::fs::metadata(applied.join("added/deep/file"))
            .unwrap()
            .ino()
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_copied_rootfs_has_no_upper_dir() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = crate::rootfs::SnapshotStore::open(tmp.path()).unwrap();
    let chain: crate::unpack::ChainId = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
    write(&store.snapshot_dir(&chain).join("file"), "x");
    let copy = store
        .mount_run(
            &[chain],
            &tmp.path().join("run"),
            crate::rootfs::MountMode::CopyOnly,
        )
        .unwrap();
    let err = copy.upper_dir().unwrap_err();
    assert_eq!(
        err.to_string(),
        "build commands need an overlay root filesystem; this run got a copy (requested)"
    );
    copy.release().unwrap();
    let overlay = store
        .mount_run(
            &[chain],
            &tmp.path().join("run2"),
            crate::rootfs::MountMode::OverlayOnly,
        )
        .unwrap();
    assert_eq!(
        overlay.upper_dir().unwrap(),
        overlay.run_dir().join("upper")
    );
    overlay.release().unwrap();
}

#[test]
fn reserved_names_and_metacopy_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("a/.wh.sneaky"), "");
    let err = write_upper_as_layer(tmp.path(), &DiffOptions::default(), io::sink()).unwrap_err();
    assert!(matches!(err, DiffError::ReservedName { .. }), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("bin/tool"), "");
    rustix::fs::setxattr(
        tmp.path().join("bin/tool"),
        "user.overlay.metacopy",
        b"",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let err = write_upper_as_layer(tmp.path(), &DiffOptions::default(), io::sink()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bin/tool uses overlay metacopy, which a layer cannot express"
    );
}

#[test]
fn user_xattr_opaque_marks_and_whiteout_devices_convert() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("opq")).unwrap();
    rustix::fs::setxattr(
        tmp.path().join("opq"),
        "user.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tmp.path().join("gone"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let mut out = Vec::new();
    write_upper_as_layer(tmp.path(), &DiffOptions::default(), &mut out).unwrap();
    assert_eq!(entries(&out), [".wh.gone", "opq/", "opq/.wh..wh..opq"]);
}

/// A lower tree made by `lower`, changed through a real overlay (mounted as dockless
/// mounts it, with `userxattr`) by `change`: the temp dir, the upper dir and what the
/// overlay showed.
fn through_overlay(
    lower_setup: impl FnOnce(&Path),
    change: impl FnOnce(&Path) + std::panic::UnwindSafe,
) -> (tempfile::TempDir, PathBuf, BTreeMap<PathBuf, String>) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged] =
        ["lower", "upper", "work", "merged"].map(|d| tmp.path().join(d));
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    lower_setup(&lower);
    crate::overlay::mount_overlay(std::slice::from_ref(&lower), &upper, &work, &merged).unwrap();
    let shown = merged.clone();
    let result = std::panic::catch_unwind(move || {
        change(&shown);
        snapshot(&shown)
    });
    rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::empty()).unwrap();
    (tmp, upper, result.unwrap())
}

/// `layer` applied by the runtime's unpacker on a copy of `tmp/lower`: the tree it gives.
fn applied_on_lower(tmp: &Path, layer: &[u8]) -> BTreeMap<PathBuf, String> {
    let applied = tmp.join("applied");
    let cp = std::process::Command::new("cp")
        .args(["-a"])
        .arg(tmp.join("lower"))
        .arg(&applied)
        .status()
        .unwrap();
    assert!(cp.success());
    let diff_id = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(layer))
    );
    unpack_layer(
        LayerBlob {
            label: "diff".into(),
            blob: Box::new(layer),
            compression: Compression::None,
            diff_id: diff_id.parse().unwrap(),
        },
        &applied,
        LayerFormat::Flattened,
        &Limits::default(),
    )
    .unwrap();
    snapshot(&applied)
}

/// Every xattr name the layer carries (from its PAX headers), with the entry.
fn layer_xattrs(tar_bytes: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in tar::Archive::new(tar_bytes).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let key = ext.unwrap().key().unwrap().to_owned();
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    out.push((path.clone(), name.to_owned()));
                }
            }
        }
    }
    out
}

fn xattr_names(path: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 64 << 10];
    let n = rustix::fs::llistxattr(path, &mut buf[..]).unwrap();
    buf[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// Under `userxattr`, `trusted.overlay.*` names a container sets are data (overlay did not
/// act on them), and a `user.overlay.*` name it sets is stored escaped: none of them marks
/// anything, and none reaches the layer.
#[test]
#[ignore = "needs root and scripts/test-env"]
fn xattrs_that_are_not_overlays_marks_are_neither_interpreted_nor_carried() {
    let set = |p: &Path, name: &str, value: &[u8]| {
        rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).unwrap()
    };
    let (tmp, upper, expected) = through_overlay(
        |lower| {
            write(&lower.join("kept/a"), "a");
            write(&lower.join("moved/x"), "x");
            write(&lower.join("tool"), "binary");
            write(&lower.join("escaped/b"), "b");
        },
        move |merged| {
            set(&merged.join("kept"), "trusted.overlay.opaque", b"y");
            set(
                &merged.join("moved"),
                "trusted.overlay.redirect",
                b"/elsewhere",
            );
            set(&merged.join("tool"), "trusted.overlay.metacopy", b"");
            set(&merged.join("tool"), "user.note", b"kept");
            set(&merged.join("escaped"), "user.overlay.opaque", b"y");
        },
    );
    // The upper dir really holds the names this test is about.
    assert!(xattr_names(&upper.join("kept")).contains(&"trusted.overlay.opaque".into()));
    assert!(xattr_names(&upper.join("tool")).contains(&"trusted.overlay.metacopy".into()));
    assert!(
        xattr_names(&upper.join("escaped")).contains(&"user.overlay.overlay.opaque".into()),
        "{:?}",
        xattr_names(&upper.join("escaped"))
    );

    let mut layer = Vec::new();
    let report = write_upper_as_layer(&upper, &DiffOptions::default(), &mut layer).unwrap();
    assert_eq!(report.opaque_dirs, 0, "{:?}", entries(&layer));
    assert_eq!(
        layer_xattrs(&layer),
        [("tool".to_owned(), "user.note".to_owned())]
    );
    assert_eq!(applied_on_lower(tmp.path(), &layer), expected);
}

/// `rm -rf /data && mkdir /data` on a base with /data content: the new /data is an empty,
/// opaque mount point, and must stay opaque in the layer or the base content comes back.
#[test]
#[ignore = "needs root and scripts/test-env"]
fn an_opaque_mount_point_is_written_with_its_marker() {
    let (tmp, upper, expected) = through_overlay(
        |lower| write(&lower.join("data/old"), "from the base"),
        |merged| {
            std::fs::remove_dir_all(merged.join("data")).unwrap();
            std::fs::create_dir(merged.join("data")).unwrap();
            std::fs::create_dir(merged.join("proc")).unwrap();
        },
    );
    let options = DiffOptions {
        mount_points: vec![PathBuf::from("data"), PathBuf::from("proc")],
        ..DiffOptions::default()
    };
    let mut layer = Vec::new();
    write_upper_as_layer(&upper, &options, &mut layer).unwrap();
    assert_eq!(entries(&layer), ["data/", "data/.wh..wh..opq"]);
    let mut expected = expected;
    expected.remove(Path::new("proc"));
    let applied = applied_on_lower(tmp.path(), &layer);
    assert!(!applied.contains_key(Path::new("data/old")), "{applied:?}");
    assert_eq!(applied, expected);
}

/// `depth` directories named `d`, each in the one before, below `root` (no shell, no
/// recursion).
fn nest(root: &Path, depth: usize) {
    let mut dir = openat(
        rustix::fs::CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
        dir = open_child_dir(dir.as_fd(), b"d").unwrap();
    }
}

#[test]
fn a_tree_deeper_than_the_cap_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    nest(tmp.path(), 300);
    let err = write_upper_as_layer(tmp.path(), &DiffOptions::default(), io::sink()).unwrap_err();
    let DiffError::TooDeep { path, max } = &err else {
        panic!("{err}");
    };
    assert_eq!((path.components().count(), *max), (257, 256));
    assert_eq!(
        err.to_string(),
        format!(
            "{} is nested deeper than 256 levels",
            "d/".repeat(257).trim_end_matches('/')
        )
    );

    // Within a larger cap the same tree is written, on a thread with a stack far too
    // small for one frame per level (the recursive walk this replaced overflowed it).
    let upper = tmp.path().to_path_buf();
    let report = std::thread::Builder::new()
        .stack_size(128 << 10)
        .spawn(move || {
            let options = DiffOptions {
                max_depth: 300,
                ..DiffOptions::default()
            };
            write_upper_as_layer(&upper, &options, io::sink())
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(report.entries, 300);
}

#[test]
fn files_over_the_size_limits_are_refused_before_they_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    // Sparse: 64 GiB of holes, over the default max_file_size of 32 GiB.
    let big = std::fs::File::create(tmp.path().join("big")).unwrap();
    big.set_len(64 << 30).unwrap();
    let started = std::time::Instant::now();
    let err = write_upper_as_layer(tmp.path(), &DiffOptions::default(), io::sink()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "big exceeds the layer limit max_file_size of 34359738368"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    big.set_len(1 << 20).unwrap();
    let mut options = DiffOptions::default();
    options.limits.max_file_size = 1000;
    let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
    assert!(
        matches!(&err, DiffError::Limit { path, limit: "max_file_size", max: 1000 }
            if path == Path::new("big")),
        "{err}"
    );

    // Within max_file_size but over what the whole layer may hold.
    let mut options = DiffOptions::default();
    options.limits.max_layer_bytes = 1 << 19;
    let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "big exceeds the layer limit max_layer_bytes of 524288"
    );
}

#[test]
fn the_layer_size_counts_headers_too() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        write(&tmp.path().join(name), &"x".repeat(100));
    }
    // Each file takes a 512-byte header and a 512-byte block: "c" passes 3000 bytes.
    let mut options = DiffOptions::default();
    options.limits.max_layer_bytes = 3000;
    let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
    assert!(
        matches!(&err, DiffError::Limit { path, limit: "max_layer_bytes", max: 3000 }
            if path == Path::new("c")),
        "{err}"
    );
    // Room for the three files but not the end of the archive (two zero blocks).
    options.limits.max_layer_bytes = 3 * 1024 + 1023;
    let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
    assert!(
        matches!(&err, DiffError::Limit { path, .. } if path == Path::new("end of archive")),
        "{err}"
    );
    options.limits.max_layer_bytes = 4 * 1024;
    let mut layer = Vec::new();
    write_upper_as_layer(tmp.path(), &options, &mut layer).unwrap();
    assert!(layer.len() <= 4 * 1024, "{}", layer.len());
}

#[test]
fn entries_over_max_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c", "d", "e"] {
        write(&tmp.path().join(name), "");
    }
    let mut options = DiffOptions::default();
    options.limits.max_entries = 3;
    let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "d exceeds the layer limit max_entries of 3"
    );
    options.limits.max_entries = 5;
    let report = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap();
    assert_eq!(report.entries, 5);
}

#[test]
fn xattrs_over_their_limits_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    write(&file, "");
    for (name, value) in [
        ("user.a", &b"1"[..]),
        ("user.b", b"2"),
        ("user.c", &[7; 100]),
    ] {
        rustix::fs::setxattr(&file, name, value, rustix::fs::XattrFlags::empty()).unwrap();
    }
    let mut options = DiffOptions::default();
    options.limits.max_xattrs_per_entry = 2;
    let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "f exceeds the layer limit max_xattrs_per_entry of 2"
    );
    let mut options = DiffOptions::default();
    options.limits.max_xattr_value = 99;
    let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "f exceeds the layer limit max_xattr_value of 99"
    );
    options.limits.max_xattr_value = 100;
    let mut layer = Vec::new();
    write_upper_as_layer(tmp.path(), &options, &mut layer).unwrap();
    assert_eq!(layer_xattrs(&layer).len(), 3);
}
