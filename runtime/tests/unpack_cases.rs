//! Every case of `unpack-cases.md` that applies to a Linux unpacker (sections A-H), written
//! as hostile tars in the test code. The case ids (A1, B10, ...) are in the test names.
//! The unpacker uses chroot semantics: `..` and absolute symlinks are clamped at the root.
//! Where a project in the corpus errors instead, the corpus allows either; these tests then
//! assert the outcome we chose and, always, that nothing outside the root changed.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::tarw::{Tar, apply, apply_with};
use common::{Node, describe, require_root};
use dockless_runtime::unpack::{EntryError, LayerError, LayerFormat};
use tar::EntryType;

/// A temp dir holding the root `R` and sibling "host" content that must never change.
struct Fx {
    tmp: tempfile::TempDir,
    root: PathBuf,
    before: BTreeMap<String, Node>,
}

impl Fx {
    /// The fixture, for a test that needs root (mknod, chown to other owners).
    fn new() -> Self {
        require_root();
        Self::any_user()
    }

    /// The fixture, for a test that needs no privilege (it runs in the root-free tier).
    fn any_user() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let t = tmp.path();
        std::fs::create_dir(t.join("victim")).unwrap();
        std::fs::write(t.join("victim/hello"), "victim").unwrap();
        std::fs::write(t.join("test"), "").unwrap();
        std::fs::create_dir(t.join("dest-evil")).unwrap();
        std::fs::write(t.join("dest-evil/secret"), "secret").unwrap();
        std::fs::create_dir(t.join("outside-dir")).unwrap();
        std::fs::set_permissions(
            t.join("outside-dir"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(t.join("readonly"), "ro").unwrap();
        std::fs::set_permissions(t.join("readonly"), std::fs::Permissions::from_mode(0o400))
            .unwrap();
        let mut fx = Self {
            tmp,
            root,
            before: BTreeMap::new(),
        };
        fx.before = fx.outside();
        fx
    }

    fn outside(&self) -> BTreeMap<String, Node> {
        describe(self.tmp.path(), true)
            .into_iter()
            .filter(|(k, _)| !k.is_empty() && k != "root" && !k.starts_with("root/"))
            .collect()
    }

    /// The first rule of the corpus: nothing outside R changed.
    fn assert_outside_untouched(&self) {
        common::assert_same_tree(&self.before, &self.outside(), "outside the root");
        let parent_entries = std::fs::read_dir(self.tmp.path()).unwrap().count();
        assert_eq!(
            parent_entries, 6,
            "the root's parent gained or lost entries"
        );
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.p(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn exists(&self, rel: &str) -> bool {
        std::fs::symlink_metadata(self.p(rel)).is_ok()
    }

    fn ino(&self, rel: &str) -> u64 {
        std::fs::symlink_metadata(self.p(rel)).unwrap().ino()
    }

    fn link(&self, rel: &str) -> PathBuf {
        std::fs::read_link(self.p(rel)).unwrap()
    }

    fn mode(&self, rel: &str) -> u32 {
        std::fs::symlink_metadata(self.p(rel)).unwrap().mode()
    }

    fn names(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.p(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn entry_error(e: &dockless_runtime::unpack::UnpackError) -> &EntryError {
    match &e.kind {
        LayerError::Entry { source, .. } => source,
        other => panic!("expected an entry error, got {other:?}"),
    }
}

fn base_etc() -> Tar {
    let mut t = Tar::new();
    t.dir("etc/").file("etc/passwd", b"inside");
    t
}

// ---------------------------------------------------------------- A: names leaving R

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a1_a2_a4_dot_dot_names_are_clamped_into_the_root() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.file("../victim/dotdot", b"1")
        .file("/../victim/slash-dotdot", b"2")
        .file("../file", b"3")
        .file("/../file2", b"4");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.read("victim/dotdot"), "1");
    assert_eq!(fx.read("victim/slash-dotdot"), "2");
    assert_eq!(fx.read("file"), "3");
    assert_eq!(fx.read("file2"), "4");
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a3_a5_b8_h15_degenerate_names_are_skipped_and_absolute_ones_rerooted() {
    let fx = Fx::new();
    let mut t = Tar::new();
    for (i, name) in [
        "/tmp/abs_evil.txt",
        "//tmp/abs_evil2.txt",
        "///tmp/abs_evil3.txt",
        "/./tmp/abs_evil4.txt",
        "//./tmp/abs_evil5.txt",
        "///./tmp/abs_evil6.txt",
        "/../tmp/rel_evil.txt",
        "../rel_evil2.txt",
        "./../rel_evil3.txt",
        "some/../../rel_evil4.txt",
    ]
    .iter()
    .enumerate()
    {
        t.file(name, format!("{i}").as_bytes());
    }
    for name in ["", "././//./..", "..", "/////////..", "/////////"] {
        t.file(name, b"degenerate");
    }
    t.dir("..")
        .file("../pwned", b"p")
        .file("../../pwned2", b"p");
    // B8: a symlink named ".." or "" pointing at /etc/ must not replace anything.
    t.symlink("..", "/etc/").symlink("", "/etc/");
    let report = apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(report.stats.root_entries_skipped, 8);
    for i in 1..=6 {
        let n = if i == 1 { String::new() } else { i.to_string() };
        assert!(fx.exists(&format!("tmp/abs_evil{n}.txt")), "abs_evil{n}");
    }
    assert!(fx.exists("tmp/rel_evil.txt"));
    for n in [
        "rel_evil2.txt",
        "rel_evil3.txt",
        "rel_evil4.txt",
        "pwned",
        "pwned2",
    ] {
        assert!(fx.exists(n), "{n}");
    }
    assert!(
        !fx.exists("some"),
        "the cleaned name does not create `some`"
    );
    assert!(fx.p("").is_dir() && !fx.p("").is_symlink());
    assert!(!Path::new("/tmp/abs_evil.txt").exists());
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a6_a7_h14_odd_but_legal_names_are_literal() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.file("..gitme", b"g")
        .file("foo\\bar", b"b")
        .file("C:\\tmp\\evil", b"c")
        .file("..\\..\\tmp\\evil", b"d")
        .dir(".")
        .file("tmp/safe", b"s");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.read("..gitme"), "g");
    assert_eq!(fx.read("foo\\bar"), "b");
    assert_eq!(fx.read("C:\\tmp\\evil"), "c");
    assert_eq!(fx.read("..\\..\\tmp\\evil"), "d");
    assert_eq!(fx.read("tmp/safe"), "s");
    fx.assert_outside_untouched();
}

#[test]
fn a8_hardlink_to_a_sibling_with_a_shared_prefix_is_not_created() {
    let fx = Fx::any_user();
    let mut t = Tar::new();
    t.hardlink("grab", "../dest-evil/secret");
    let err = apply(&fx.root, &t.finish()).unwrap_err();
    assert!(
        matches!(entry_error(&err), EntryError::MissingLinkTarget(_)),
        "{err:?}"
    );
    assert!(!fx.exists("grab"));
    fx.assert_outside_untouched();
}

// ---------------------------------------------------------------- B: symlinks

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b1_b2_b26_symlink_targets_are_stored_verbatim() {
    let fx = Fx::new();
    let mut t = Tar::new();
    let links = [
        ("bin/tool", "../usr/local/bin/tool"),
        ("bin/tool2", "/usr/local/bin/tool"),
        ("home/derek/breakout", "../../../breakout"),
        ("breakout2", "../../breakout"),
        ("localetc", "/etc"),
        ("etc/foo", "../../../tmp/evil"),
        ("etc/win", "..\\..\\tmp\\evil"),
        ("weird", "a//b/./c/../d/"),
    ];
    for (n, target) in links {
        t.symlink(n, target);
    }
    apply(&fx.root, &t.finish()).unwrap();
    for (n, target) in links {
        assert_eq!(fx.link(n), PathBuf::from(target), "{n}");
    }
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b3_to_b7_writes_through_symlinks_stay_in_the_root() {
    let cases: Vec<(&str, Tar)> = vec![
        ("B3", {
            let mut t = base_etc();
            t.symlink("localetc", "/etc")
                .file("/localetc/unbroken", b"x");
            t
        }),
        ("B4", {
            let mut t = base_etc();
            t.symlink("localetc", "/dummy/../etc")
                .file("/localetc/unbroken", b"x");
            t
        }),
        ("B5", {
            let mut t = base_etc();
            t.symlink("dummy/etc", "/etc")
                .symlink("localetc", "/dummy/etc")
                .file("/localetc/unbroken", b"x");
            t
        }),
        ("B6", {
            let mut t = base_etc();
            t.symlink("dummy/etc", "/etc")
                .symlink("localetc", "./dummy/etc")
                .file("localetc/unbroken", b"x");
            t
        }),
    ];
    for (id, t) in cases {
        let fx = Fx::new();
        apply(&fx.root, &t.finish()).unwrap();
        assert_eq!(fx.read("etc/unbroken"), "x", "{id}");
        assert!(fx.link("localetc").is_relative() || fx.link("localetc").is_absolute());
        assert!(!Path::new("/etc/unbroken").exists(), "{id}");
        fx.assert_outside_untouched();
    }
    // B7: an empty file written through the symlink empties the file inside R.
    let fx = Fx::new();
    let mut t = base_etc();
    t.file("etc/emptied", b"notempty")
        .symlink("localetc", "/etc")
        .file("/localetc/emptied", b"");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.read("etc/emptied"), "");
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b8_hardlink_after_odd_symlinks_resolves_inside() {
    let fx = Fx::new();
    let mut t = base_etc();
    t.symlink("..", "/etc/")
        .symlink("", "/etc/")
        .hardlink("localpasswd", "/etc/passwd");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.ino("localpasswd"), fx.ino("etc/passwd"));
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b9_symlink_name_with_dot_dot_cleans_to_its_parent() {
    let fx = Fx::new();
    let mut t = base_etc();
    t.symlink("localetc/sub/..", "/etc/");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.link("localetc"), PathBuf::from("/etc/"));
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b10_symlink_replacing_a_directory_is_not_written_through_to_the_host() {
    let fx = Fx::new();
    let name = format!("breakout-{}", std::process::id());
    let mut t = Tar::new();
    t.dir("foo/")
        .dir("foo/tmp/")
        .file(&format!("foo/tmp/{name}"), &[0, 1, 2])
        .symlink("foo", "/")
        .file(&format!("foo/tmp/{name}"), &[3, 4, 5])
        .dir("foo")
        .dir("foo/tmp")
        .file(&format!("foo/tmp/{name}"), &[6, 7, 8]);
    apply(&fx.root, &t.finish()).unwrap();
    assert!(!Path::new("/tmp").join(&name).exists());
    assert_eq!(
        std::fs::read(fx.p(&format!("foo/tmp/{name}"))).unwrap(),
        [6, 7, 8]
    );
    // The middle write went to R/tmp (the symlink resolved with R as /).
    assert_eq!(
        std::fs::read(fx.p(&format!("tmp/{name}"))).unwrap(),
        [3, 4, 5]
    );
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b11_b16_two_hop_and_parent_symlinks_cannot_escape() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.dir("inner/")
        .symlink("inner/go_up", "..")
        .symlink("inner/go_up/escape", "../victim")
        .file("inner/go_up/escape/newfile", b"n")
        .symlink("symlink", "..")
        .file("symlink/foo/bar", b"b");
    apply(&fx.root, &t.finish()).unwrap();
    assert!(!fx.tmp.path().join("victim/newfile").exists());
    assert!(!fx.tmp.path().join("foo").exists());
    assert_eq!(fx.read("victim/newfile"), "n");
    assert_eq!(fx.read("foo/bar"), "b");
    fx.assert_outside_untouched();
}

#[test]
fn b12_c8_moby_invalid_symlink_and_hardlink_sets_leave_the_victim_alone() {
    let sets: Vec<Tar> = vec![
        {
            let mut t = Tar::new();
            t.symlink("dotdot", "../victim/hello")
                .file("dotdot", b"overwritten");
            t
        },
        {
            let mut t = Tar::new();
            t.symlink("slash-dotdot", "/../victim/hello")
                .file("slash-dotdot", b"x");
            t
        },
        {
            let mut t = Tar::new();
            t.symlink("loophole-victim", "../victim")
                .file("loophole-victim/file", b"x");
            t
        },
        {
            let mut t = Tar::new();
            t.symlink("loophole-victim", "../victim")
                .symlink("symlink", "loophole-victim/hello")
                .file("symlink", b"x");
            t
        },
        {
            let mut t = Tar::new();
            t.symlink("loophole-victim", "../victim")
                .hardlink("hardlink", "loophole-victim/hello")
                .file("hardlink", b"x");
            t
        },
        {
            let mut t = Tar::new();
            t.symlink("loophole-victim", "../victim")
                .file("loophole-victim", b"x");
            t
        },
        {
            let mut t = Tar::new();
            t.dir("dir/")
                .symlink("dir/loophole", "../../victim")
                .file("dir/loophole/newdir/newfile", b"x");
            t
        },
        {
            let mut t = Tar::new();
            t.hardlink("dotdot", "../victim/hello");
            t
        },
        {
            let mut t = Tar::new();
            t.hardlink("slash-dotdot", "/../victim/hello");
            t
        },
        {
            let mut t = Tar::new();
            t.hardlink("loophole-victim", "../victim")
                .file("loophole-victim/file", b"x");
            t
        },
    ];
    for (i, t) in sets.into_iter().enumerate() {
        let fx = Fx::any_user();
        // An error is acceptable; what matters is the victim.
        let _ = apply(&fx.root, &t.finish());
        assert_eq!(
            std::fs::read_to_string(fx.tmp.path().join("victim/hello")).unwrap(),
            "victim",
            "set {i}"
        );
        fx.assert_outside_untouched();
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b13_b14_b15_lower_symlinks_to_the_root_are_evaluated_inside() {
    for target in [
        "/",
        "/../",
        "/../../../../../../",
        "/./.././../",
        "..",
        "../../../../",
    ] {
        let fx = Fx::new();
        std::os::unix::fs::symlink(target, fx.p("link")).unwrap();
        let mut t = Tar::new();
        t.file("link/file", b"f");
        apply(&fx.root, &t.finish()).unwrap();
        assert_eq!(fx.read("file"), "f", "link -> {target}");
        fx.assert_outside_untouched();
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b17_b18_links_resolving_inside_the_root_work() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.symlink("foo", "bar")
        .file("bar/foo", b"1")
        .file("foo/bar", b"2");
    t.dir("x/").symlink("x/bar", "../y").file("y", b"3");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.read("bar/foo"), "1");
    assert_eq!(fx.read("bar/bar"), "2");
    assert_eq!(fx.read("foo/foo"), "1");
    assert_eq!(fx.read("x/bar"), "3");
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b19_c14_a_regular_file_replaces_a_link_instead_of_writing_through_it() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.symlink("foo", "../test").file("foo", b"x");
    apply(&fx.root, &t.finish()).unwrap();
    assert!(!fx.p("foo").is_symlink());
    assert_eq!(fx.read("foo"), "x");
    // C14: a hardlink to something outside is refused; the outside file stays empty.
    let mut t = Tar::new();
    t.hardlink("bar", "../test").file("bar", b"x");
    assert!(apply(&fx.root, &t.finish()).is_err());
    assert_eq!(std::fs::read(fx.tmp.path().join("test")).unwrap(), b"");
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b20_b21_no_chmod_or_chown_through_a_symlink() {
    let fx = Fx::new();
    let outside = fx.tmp.path().join("outside-dir");
    let readonly = fx.tmp.path().join("readonly");
    let mut t = Tar::new();
    t.symlink("foo", outside.to_str().unwrap())
        .dir_mode("foo", 0o777)
        .symlink(readonly.to_str().unwrap(), readonly.to_str().unwrap())
        .symlink("abs", readonly.to_str().unwrap());
    let mut h = t.header(b"sketchylink", EntryType::Link, b"abs", 0, 0o777);
    h.set_uid(1234);
    t.raw(&mut h, b"");
    apply(&fx.root, &t.finish()).unwrap();
    // The directory entry replaced the symlink (D2) instead of chmodding its target.
    assert!(fx.p("foo").is_dir() && !fx.p("foo").is_symlink());
    assert_eq!(std::fs::metadata(&outside).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(std::fs::metadata(&readonly).unwrap().mode() & 0o7777, 0o400);
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b22_b24_missing_parents_are_created_through_lower_symlinks() {
    for with_existing in [false, true] {
        let fx = Fx::new();
        std::fs::create_dir_all(fx.p("var")).unwrap();
        std::os::unix::fs::symlink("/run", fx.p("var/run")).unwrap();
        if with_existing {
            std::fs::create_dir_all(fx.p("run/existing")).unwrap();
        }
        let mut t = Tar::new();
        t.file("var/run/existing/non-existing/file", b"f");
        apply(&fx.root, &t.finish()).unwrap();
        assert_eq!(fx.read("run/existing/non-existing/file"), "f");
        assert!(fx.p("var/run").is_symlink());
        fx.assert_outside_untouched();
    }
    // B24: implied parents do not replace a lower symlink.
    let fx = Fx::new();
    std::fs::create_dir_all(fx.p("usr/lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib", fx.p("lib")).unwrap();
    let mut t = Tar::new();
    t.file("lib/systemd/system/container.service", b"unit");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.read("usr/lib/systemd/system/container.service"), "unit");
    assert!(fx.p("lib").is_symlink());
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn b23_relative_escape_then_absolute_hop_stays_inside() {
    // moby errors here; with chroot semantics `escape` is R itself and the write lands in
    // R/target/file. Either way nothing outside R is touched.
    let fx = Fx::new();
    std::os::unix::fs::symlink("..", fx.p("escape")).unwrap();
    std::os::unix::fs::symlink("/target", fx.p("absolute")).unwrap();
    let mut t = Tar::new();
    t.file("escape/absolute/file", b"f");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.read("target/file"), "f");
    assert!(!fx.tmp.path().join("target").exists());
    fx.assert_outside_untouched();
}

#[test]
fn b25_a_target_that_is_a_symlink_is_refused() {
    let fx = Fx::any_user();
    let safe = fx.p("safe");
    std::os::unix::fs::symlink(fx.tmp.path().join("victim"), &safe).unwrap();
    let mut t = Tar::new();
    t.file("hello", b"overwritten");
    let err = apply(&safe, &t.finish()).unwrap_err();
    assert!(matches!(err.kind, LayerError::OpenTarget { .. }), "{err:?}");
    fx.assert_outside_untouched();
}

// ---------------------------------------------------------------- C: hardlinks

#[test]
#[ignore = "needs root and scripts/test-env"]
fn c1_to_c7_hardlinks_through_symlinks_and_clamped_names_land_inside() {
    let cases: Vec<(&str, Tar, &str)> = vec![
        (
            "C1",
            {
                let mut t = base_etc();
                t.symlink("breakouts/d1", "../../etc")
                    .hardlink("breakouts/mypasswd", "/breakouts/d1/passwd");
                t
            },
            "breakouts/mypasswd",
        ),
        (
            "C3",
            {
                let mut t = base_etc();
                t.symlink("localetc", "/etc")
                    .hardlink("localpasswd", "/localetc/passwd");
                t
            },
            "localpasswd",
        ),
        (
            "C4",
            {
                let mut t = base_etc();
                t.symlink("localetc", "../../../../../../../etc")
                    .hardlink("localpasswd", "localetc/passwd");
                t
            },
            "localpasswd",
        ),
        (
            "C5",
            {
                let mut t = base_etc();
                t.hardlink("localpasswd", "../../../../../etc/passwd");
                t
            },
            "localpasswd",
        ),
        (
            "C6",
            {
                let mut t = base_etc();
                t.hardlink("localpasswd", "/etc/passwd");
                t
            },
            "localpasswd",
        ),
    ];
    for (id, t, link) in cases {
        let fx = Fx::new();
        apply(&fx.root, &t.finish()).unwrap_or_else(|e| panic!("{id}: {e:?}"));
        assert_eq!(fx.ino(link), fx.ino("etc/passwd"), "{id}");
        fx.assert_outside_untouched();
    }
    // C2: `d1 -> ../downandout/../../etc` with no `downandout`. containerd cleans the target
    // lexically and links R/etc/passwd; the kernel (and so the container at run time) cannot
    // resolve `downandout/..`, and we resolve as the kernel does: a clean error, nothing outside.
    let fx = Fx::new();
    let mut t = base_etc();
    t.symlink("breakouts/d1", "../downandout/../../etc")
        .hardlink("breakouts/mypasswd", "/breakouts/d1/passwd");
    let err = apply(&fx.root, &t.finish()).unwrap_err();
    assert!(
        matches!(entry_error(&err), EntryError::MissingLinkTarget(_)),
        "{err:?}"
    );
    fx.assert_outside_untouched();
    // C4 variant `localetc -> upandout/../../../etc`: the same, for the same reason.
    let fx = Fx::new();
    let mut t = base_etc();
    t.symlink("localetc", "upandout/../../../etc")
        .hardlink("localpasswd", "localetc/passwd");
    let err = apply(&fx.root, &t.finish()).unwrap_err();
    assert!(
        matches!(entry_error(&err), EntryError::MissingLinkTarget(_)),
        "{err:?}"
    );
    fx.assert_outside_untouched();
    // ... and with `downandout` present it links R/etc/passwd.
    let fx = Fx::new();
    let mut t = base_etc();
    t.dir("downandout/")
        .symlink("breakouts/d1", "../downandout/../../etc")
        .hardlink("breakouts/mypasswd", "/breakouts/d1/passwd");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.ino("breakouts/mypasswd"), fx.ino("etc/passwd"));
    fx.assert_outside_untouched();
    // C7: absolute link names (kaniko).
    let fx = Fx::new();
    let mut t = Tar::new();
    t.file("usr/bin/perlbug", b"perl")
        .hardlink("usr/bin/perlthanks", "/usr/bin/perlbug");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.ino("usr/bin/perlthanks"), fx.ino("usr/bin/perlbug"));
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn c9_c10_c11_c12_hardlinks_to_symlinks_link_the_symlink_itself() {
    let fx = Fx::new();
    let mut t = base_etc();
    t.symlink("symlink1", "regfile")
        .hardlink("symlink2", "symlink1")
        .file("regfile", b"r")
        .symlink("passwdlink", "../../../../../etc/passwd")
        .hardlink("localpasswd", "/passwdlink")
        .symlink("abslink", "/etc/shadow")
        .hardlink("abslink-dup", "abslink");
    let mut h = t.header(
        b"hl-other-owner",
        EntryType::Link,
        b"../../../symlink1",
        0,
        0o600,
    );
    h.set_uid(4242);
    h.set_gid(4242);
    t.raw(&mut h, b"");
    t.file("etc/shadow", b"shadow");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.ino("symlink2"), fx.ino("symlink1"));
    assert!(fx.p("symlink2").is_symlink());
    assert_eq!(fx.ino("localpasswd"), fx.ino("passwdlink"));
    assert_eq!(fx.link("localpasswd"), fx.link("passwdlink"));
    assert_eq!(fx.ino("abslink-dup"), fx.ino("abslink"));
    // C12: the hardlink header's owner is not applied.
    let md = std::fs::symlink_metadata(fx.p("hl-other-owner")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
    assert_eq!(md.ino(), fx.ino("symlink1"));
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn c13_hardlink_source_through_an_absolute_symlink() {
    let fx = Fx::new();
    std::fs::create_dir_all(fx.p("var")).unwrap();
    std::os::unix::fs::symlink("/run", fx.p("var/run")).unwrap();
    let mut t = Tar::new();
    t.file("var/run/source", b"s")
        .hardlink("var/run/link", "var/run/source");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.ino("run/link"), fx.ino("run/source"));
    assert_eq!(std::fs::metadata(fx.p("run/source")).unwrap().nlink(), 2);
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn c15_d4_d5_replacing_a_path_unlinks_and_recreates() {
    let fx = Fx::new();
    let mut t = base_etc();
    t.symlink("localetc", "etc")
        .hardlink("localetc/localpasswd", "etc/passwd");
    apply(&fx.root, &t.finish()).unwrap();
    let mut t = Tar::new();
    t.dir("/localetc/")
        .file("/localetc/localpasswd", b"different");
    apply(&fx.root, &t.finish()).unwrap();
    assert!(fx.p("localetc").is_dir() && !fx.p("localetc").is_symlink());
    assert_ne!(fx.ino("localetc/localpasswd"), fx.ino("etc/passwd"));
    assert_eq!(fx.read("etc/passwd"), "inside");
    // D4: a directory replaced by a symlink; then a hardlink through it.
    let mut t = Tar::new();
    t.symlink("localetc", "/etc")
        .hardlink("localetc/localpasswd2", "/etc/passwd");
    apply(&fx.root, &t.finish()).unwrap();
    assert!(fx.p("localetc").is_symlink());
    assert_eq!(fx.ino("etc/localpasswd2"), fx.ino("etc/passwd"));
    fx.assert_outside_untouched();
}

#[test]
fn c16_hardlink_to_a_missing_or_lower_file() {
    let fx = Fx::any_user();
    std::fs::write(fx.p("lower"), "lower").unwrap();
    let mut t = Tar::new();
    t.hardlink("to-lower", "lower");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.ino("to-lower"), fx.ino("lower"));
    let mut t = Tar::new();
    t.hardlink("dangling", "nothing/here");
    let err = apply(&fx.root, &t.finish()).unwrap_err();
    assert!(matches!(
        entry_error(&err),
        EntryError::MissingLinkTarget(_)
    ));
    fx.assert_outside_untouched();
}

// ---------------------------------------------------------------- D: replacing entries

#[test]
#[ignore = "needs root and scripts/test-env"]
fn d1_d2_d3_d6_d9_replacement_rules() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.dir_mode("d/", 0o755)
        .file("d/child", b"c")
        .file("foo.txt", b"foo")
        .symlink("bin/myapp", "actualbinary");
    apply(&fx.root, &t.finish()).unwrap();
    let mut t = Tar::new();
    let mut h = t.header(b"d/", EntryType::Directory, b"", 0, 0o711);
    h.set_uid(7);
    h.set_mtime(12345);
    t.raw(&mut h, b"");
    t.file("bar.txt", b"bar")
        .symlink("foo.txt", "bar.txt")
        .dir("bin/myapp")
        .dir("bin/myapp")
        .dir("d/");
    apply(&fx.root, &t.finish()).unwrap();
    // D1 (+D9: the directory listed twice): children kept, attributes of the last entry.
    assert_eq!(fx.read("d/child"), "c");
    let md = std::fs::metadata(fx.p("d")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o755, 0));
    // D3
    assert!(fx.p("foo.txt").is_symlink());
    assert_eq!(fx.read("foo.txt"), "bar");
    // D6
    assert!(fx.p("bin/myapp").is_dir() && !fx.p("bin/myapp").is_symlink());
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn d7_a_file_is_never_used_as_a_directory() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.file("nondir", b"data").file("nondir/foo/bar/baz", b"x");
    let err = apply(&fx.root, &t.finish()).unwrap_err();
    assert!(
        matches!(entry_error(&err), EntryError::Invalid(_)),
        "{err:?}"
    );
    assert_eq!(fx.read("nondir"), "data");
    fx.assert_outside_untouched();
}

// ---------------------------------------------------------------- E: whiteouts

#[test]
#[ignore = "needs root and scripts/test-env"]
fn e1_to_e4_invalid_whiteouts_are_errors_and_delete_nothing() {
    for name in [
        ".wh.",
        ".wh..",
        ".wh...",
        "etc/.wh..",
        "etc/.wh...",
        "some/path/.wh.",
    ] {
        let fx = Fx::new();
        apply(&fx.root, &base_etc().finish()).unwrap();
        let mut t = Tar::new();
        t.file(name, b"");
        let err = apply(&fx.root, &t.finish()).unwrap_err();
        assert!(
            matches!(entry_error(&err), EntryError::Invalid(_)),
            "{name}: {err:?}"
        );
        assert_eq!(fx.read("etc/passwd"), "inside", "{name}");
        fx.assert_outside_untouched();
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn e5_whiteout_removes_the_tree_and_keeps_the_parent_times() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.dir("sub/")
        .dir("sub/dir/")
        .dir("sub/dir/.subdir/")
        .file("sub/dir/.subdir/file3", b"3")
        .file("sub/file", b"f")
        .file(".hiddenroot", b"h")
        .dir("sub/");
    apply(&fx.root, &t.finish()).unwrap();
    let before = std::fs::metadata(fx.p("sub")).unwrap();
    let mut t = Tar::new();
    t.file("sub/.wh.dir", b"")
        .file("sub/.wh.file", b"")
        .file(".wh..hiddenroot", b"");
    apply(&fx.root, &t.finish()).unwrap();
    assert!(fx.names("sub").is_empty());
    assert!(!fx.exists(".hiddenroot"));
    let after = std::fs::metadata(fx.p("sub")).unwrap();
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec())
    );
    assert_eq!(after.mtime(), 1_600_000_000);
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn e6_e7_e8_e9_e10_whiteouts_never_follow_outside() {
    let fx = Fx::new();
    let mut t = base_etc();
    t.file("etc/whitedout", b"w")
        .symlink("localetc", "/etc")
        .symlink("deadlink", "/dne")
        .dir("keep/");
    apply(&fx.root, &t.finish()).unwrap();
    let mut t = Tar::new();
    t.file("localetc/.wh.whitedout", b"") // E7: resolved inside R
        .file("deadlink/.wh.etc", b"") // E9: no-op
        .file(".wh.etc/somefile", b"s"); // E8: a literal directory
    apply(&fx.root, &t.finish()).unwrap();
    assert!(!fx.exists("etc/whitedout"));
    assert_eq!(fx.read("etc/passwd"), "inside");
    assert_eq!(fx.read(".wh.etc/somefile"), "s");
    let mut t = Tar::new();
    t.file(".wh.localetc", b""); // E6: only the symlink goes
    apply(&fx.root, &t.finish()).unwrap();
    assert!(!fx.exists("localetc"));
    assert_eq!(fx.read("etc/passwd"), "inside");
    let mut t = Tar::new();
    t.file("dne/../.wh.etc", b""); // E10
    apply(&fx.root, &t.finish()).unwrap();
    assert!(!fx.exists("etc"));
    assert!(!fx.exists("dne"));
    fx.assert_outside_untouched();
}

/// The four layers of E11 with the expected trees (shared with the overlay store test).
pub fn e11_layers() -> Vec<(Vec<u8>, Vec<&'static str>)> {
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
    vec![
        (
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
            vec![
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
        ),
        (
            mk(&[
                ".bay",
                ".wh.baz",
                "foo/",
                "foo/.bce",
                "foo/.wh..wh..opq",
                "foo/cde/",
                "foo/cde/efg",
            ]),
            vec![
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
        ),
        (
            mk(&[
                ".bay",
                ".wh..baz",
                ".wh.foobar",
                "foo/",
                "foo/.abc",
                "foo/.wh.cde",
                "bar/",
            ]),
            vec![
                ".bay", "bar", "bar/bax", "bar/bay", "foo", "foo/.abc", "foo/.bce",
            ],
        ),
        (
            mk(&[".abc", ".wh..wh..opq", "foobar"]),
            vec![".abc", "foobar"],
        ),
    ]
}

/// Relative paths below `root`, sorted.
pub fn list_tree(root: &Path) -> Vec<String> {
    describe(root, false)
        .into_keys()
        .filter(|k| !k.is_empty())
        .collect()
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn e11_four_layers_of_whiteouts_flattened() {
    let fx = Fx::new();
    for (i, (layer, expected)) in e11_layers().into_iter().enumerate() {
        apply(&fx.root, &layer).unwrap();
        assert_eq!(list_tree(&fx.root), expected, "after layer {}", i + 1);
    }
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn e12_e13_opaque_markers_spare_the_same_layer_and_remove_lower_links() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.file("d/a.txt", b"a")
        .file("d/b.txt", b"b")
        .dir("d/sub/")
        .file("d/sub/lower", b"l")
        .symlink("d/link", "..")
        .symlink("d/sub/verybadlink", "../../../../../../etc/shadow");
    apply(&fx.root, &t.finish()).unwrap();
    let mut t = Tar::new();
    t.file("d/c.txt", b"c")
        .file("d/sub/upper", b"u")
        .file("d/.wh..wh..opq", b"");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.names("d"), ["c.txt", "sub"]);
    assert_eq!(fx.names("d/sub"), ["upper"]);
    // Opaque marker with no upper children: the directory stays, empty.
    let mut t = Tar::new();
    t.file("d/sub/.wh..wh..opq", b"");
    apply(&fx.root, &t.finish()).unwrap();
    assert!(fx.p("d/sub").is_dir());
    assert!(fx.names("d/sub").is_empty());
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn e15_e16_whiteout_then_recreate_in_a_later_layer() {
    let fx = Fx::new();
    let mut l1 = Tar::new();
    l1.dir("a/").file("a/foo", b"");
    let mut l2 = Tar::new();
    l2.dir("b/").file("b/bar", b"");
    let mut l3 = Tar::new();
    // E16: whiteouts may be -r-xr-xr-x and of type '\0'.
    l3.entry(b".wh.a", EntryType::new(0), b"", b"", 0o555);
    let mut l4 = Tar::new();
    l4.dir("a/").file("a/baz", b"");
    for l in [l1, l2, l3, l4] {
        apply(&fx.root, &l.finish()).unwrap();
    }
    assert_eq!(list_tree(&fx.root), ["a", "a/baz", "b", "b/bar"]);
    fx.assert_outside_untouched();
}

// ---------------------------------------------------------------- F: dirs, modes, times

#[test]
#[ignore = "needs root and scripts/test-env"]
fn f1_f2_f4_f9_implied_parents_and_exact_modes() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.dir("/etc/subdir")
        .dir("/etc/subdir2/")
        .file("/other/noparent-1/1", b"")
        .dir("/other/noparent-2/2/")
        .file("foo/bar", b"")
        .dir_mode("explicit/", 0o644)
        .dir_mode("explicit/permissions/", 0o600)
        .dir_mode("explicit/permissions/specified/", 0o400)
        .file_mode("explicit/permissions/specified/f", b"x", 0o666)
        .dir_mode("open", 0o777)
        .dir_mode("priv", 0o700)
        .file_mode("f644", b"", 0o644)
        .file_mode("f755", b"", 0o755)
        .file_mode("f600", b"", 0o600)
        .file_mode("suid", b"", 0o4755)
        .file_mode("sgid", b"", 0o2711)
        .dir_mode("sticky", 0o1777);
    apply(&fx.root, &t.finish()).unwrap();
    for implied in [
        "etc",
        "other",
        "other/noparent-1",
        "other/noparent-2",
        "foo",
    ] {
        assert_eq!(fx.mode(implied), 0o40755, "{implied}");
    }
    for (p, m) in [
        ("explicit", 0o40644),
        ("explicit/permissions", 0o40600),
        ("explicit/permissions/specified", 0o40400),
        ("explicit/permissions/specified/f", 0o100666),
        ("open", 0o40777),
        ("priv", 0o40700),
        ("f644", 0o100644),
        ("f755", 0o100755),
        ("f600", 0o100600),
        ("suid", 0o104755),
        ("sgid", 0o102711),
        ("sticky", 0o41777),
    ] {
        assert_eq!(fx.mode(p), m, "{p}");
    }
    fx.assert_outside_untouched();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn f5_old_style_directory_with_a_trailing_slash() {
    let fx = Fx::new();
    let mut t = Tar::new();
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..8].copy_from_slice(b"testdir/");
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    t.raw(&mut h, b"");
    apply(&fx.root, &t.finish()).unwrap();
    assert!(fx.p("testdir").is_dir());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn f6_f7_f8_times_are_set_exactly_including_zero_and_on_symlinks() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.mtime = 1_000_000_000;
    t.file("file", b"x").dir("dir/").file("dir/inner", b"");
    t.mtime = 1_448_291_033;
    t.symlink("lnk", "file");
    t.mtime = 0;
    t.file("zero", b"");
    apply(&fx.root, &t.finish()).unwrap();
    let md = std::fs::metadata(fx.p("file")).unwrap();
    assert_eq!((md.mtime(), md.atime()), (1_000_000_000, 1_000_000_000));
    assert_eq!(
        std::fs::metadata(fx.p("dir")).unwrap().mtime(),
        1_000_000_000
    );
    assert_eq!(
        std::fs::symlink_metadata(fx.p("lnk")).unwrap().mtime(),
        1_448_291_033
    );
    assert_eq!(std::fs::metadata(fx.p("zero")).unwrap().mtime(), 0);
}

// ---------------------------------------------------------------- G: nodes, owners, xattrs

#[test]
fn g1_device_numbers_that_do_not_parse_fail_before_mknod() {
    let fx = Fx::any_user();
    let mut t = Tar::new();
    let mut h = t.header(b"dev", EntryType::Block, b"", 0, 0o600);
    // Base-256 (GNU binary) in a field the parser only accepts as octal.
    h.as_gnu_mut().unwrap().dev_major = [0x80, 0, 0, 1, 0, 0, 0, 0];
    t.raw(&mut h, b"");
    let err = apply(&fx.root, &t.finish()).unwrap_err();
    assert!(
        matches!(entry_error(&err), EntryError::Io { .. }),
        "{err:?}"
    );
    assert!(!fx.exists("dev"));
    let mut t = Tar::new();
    let mut h = t.header(b"dev2", EntryType::Char, b"", 0, 0o600);
    h.as_gnu_mut().unwrap().dev_minor = *b"-000001\0";
    t.raw(&mut h, b"");
    assert!(apply(&fx.root, &t.finish()).is_err());
    assert!(!fx.exists("dev2"));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn g2_g4_devices_fifos_and_owners_are_created_as_root() {
    let fx = Fx::new();
    let mut t = Tar::new();
    let mut h = t.header(b"null", EntryType::Char, b"", 0, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    t.raw(&mut h, b"");
    let mut h = t.header(b"loop9", EntryType::Block, b"", 0, 0o660);
    h.set_device_major(7).unwrap();
    h.set_device_minor(9).unwrap();
    h.set_gid(6);
    t.raw(&mut h, b"");
    t.entry(b"fifo", EntryType::Fifo, b"", b"", 0o640);
    for (name, kind, link) in [
        (&b"owned"[..], EntryType::Regular, &b""[..]),
        (b"owned-dir", EntryType::Directory, b""),
        (b"owned-link", EntryType::Symlink, b"owned"),
    ] {
        let mut h = t.header(name, kind, link, 0, 0o640);
        h.set_uid(580800000);
        h.set_gid(580800001);
        t.raw(&mut h, b"");
    }
    apply(&fx.root, &t.finish()).unwrap();
    let null = std::fs::metadata(fx.p("null")).unwrap();
    assert_eq!(
        (null.mode(), null.rdev()),
        (0o20666, rustix::fs::makedev(1, 3))
    );
    let lp = std::fs::metadata(fx.p("loop9")).unwrap();
    assert_eq!(
        (lp.mode(), lp.rdev(), lp.gid()),
        (0o60660, rustix::fs::makedev(7, 9), 6)
    );
    assert_eq!(fx.mode("fifo"), 0o10640);
    for n in ["owned", "owned-dir", "owned-link"] {
        let md = std::fs::symlink_metadata(fx.p(n)).unwrap();
        assert_eq!((md.uid(), md.gid()), (580800000, 580800001), "{n}");
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn g5_g6_big_ids_in_gnu_base256_and_pax() {
    let fx = Fx::new();
    let mut t = Tar::new();
    let mut h = t.header(b"gnu", EntryType::Regular, b"", 0, 0o644);
    // GNU base-256 for 4294967294 in the 8-byte uid/gid fields.
    let big = [0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe];
    h.as_gnu_mut().unwrap().uid = big;
    h.as_gnu_mut().unwrap().gid = big;
    t.raw(&mut h, b"");
    t.pax(&[("uid", b"4294967294"), ("gid", b"831580115")]);
    t.file("pax", b"");
    apply(&fx.root, &t.finish()).unwrap();
    let g = std::fs::metadata(fx.p("gnu")).unwrap();
    assert_eq!((g.uid(), g.gid()), (4294967294, 4294967294));
    let p = std::fs::metadata(fx.p("pax")).unwrap();
    assert_eq!((p.uid(), p.gid()), (4294967294, 831580115));
    // u32::MAX means "unchanged" to chown and is refused.
    let mut t = Tar::new();
    t.pax(&[("uid", b"4294967295")]);
    t.file("minus-one", b"");
    assert!(apply(&fx.root, &t.finish()).is_err());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn g7_g8_xattrs_are_allow_listed() {
    let fx = Fx::new();
    let mut t = Tar::new();
    // A file capability (cap_net_raw+ep), a user xattr, and four that must not come from
    // images (overlay's own marks in both namespaces: the snapshots use `user.overlay.*`).
    let cap: &[u8] = &[
        0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    t.pax(&[
        ("SCHILY.xattr.user.pax.flags", b"epm"),
        ("SCHILY.xattr.security.capability", cap),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.user.overlay.opaque", b"y"),
        ("SCHILY.xattr.user.overlay.redirect", b"/etc"),
        (
            "SCHILY.xattr.security.selinux",
            b"system_u:object_r:shadow_t:s0",
        ),
    ]);
    t.dir("a/");
    t.pax(&[
        ("SCHILY.xattr.user.pax.flags", b"epm"),
        ("SCHILY.xattr.security.capability", cap),
    ]);
    t.file_mode("a/b", b"", 0o755);
    let report = apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(report.stats.xattrs_dropped, 4);
    let get = |p: &str, n: &str| {
        let mut buf = vec![0u8; 256];
        rustix::fs::getxattr(fx.p(p).as_path(), n, &mut buf)
            .ok()
            .map(|len| buf[..len].to_vec())
    };
    assert_eq!(get("a/b", "user.pax.flags").as_deref(), Some(&b"epm"[..]));
    assert_eq!(get("a/b", "security.capability").as_deref(), Some(cap));
    assert_eq!(get("a", "trusted.overlay.opaque"), None);
    assert_eq!(get("a", "user.overlay.opaque"), None);
    assert_eq!(get("a", "user.overlay.redirect"), None);
    assert_eq!(get("a", "user.pax.flags").as_deref(), Some(&b"epm"[..]));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn g9_overlay_format_writes_whiteouts_as_devices_and_opaque_xattrs() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.file("gone.txt", b"")
        .file(".wh.gone.txt", b"") // same layer: not hidden
        .file("d/.wh.x", b"")
        .dir("o/")
        .file("o/.wh..wh..opq", b"")
        .file("o/new", b"n");
    apply_with(&fx.root, &t.finish(), LayerFormat::OverlaySnapshot).unwrap();
    assert!(fx.p("gone.txt").is_file());
    let wh = std::fs::symlink_metadata(fx.p("d/x")).unwrap();
    assert_eq!((wh.mode() & 0o170000, wh.rdev()), (0o020000, 0));
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(fx.p("o").as_path(), "user.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert_eq!(fx.read("o/new"), "n");
}

// ---------------------------------------------------------------- H: tar format robustness

#[test]
#[ignore = "needs root and scripts/test-env"]
fn h1_h7_h8_long_names_in_prefix_pax_and_gnu_records() {
    let fx = Fx::new();
    let mut t = Tar::new();
    // H1: ustar prefix + name.
    let mut h = tar::Header::new_ustar();
    let prefix = "a".repeat(95);
    h.as_ustar_mut().unwrap().prefix[..95].copy_from_slice(prefix.as_bytes());
    h.as_ustar_mut().unwrap().name[..3].copy_from_slice(b"foo");
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(1);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    t.raw(&mut h, b"p");
    // H7: PAX path / linkpath (the helper switches to PAX over 100 bytes).
    let long_dir = format!("{}/{}", "d".repeat(120), "e".repeat(120));
    t.dir(&long_dir)
        .file(&format!("{long_dir}/file"), b"pax")
        .symlink(
            &format!("{long_dir}/sym"),
            &format!("{}file", "./".repeat(60)),
        )
        .hardlink(&format!("{long_dir}/hard"), &format!("{long_dir}/file"));
    // H8: a GNU long name record with its trailing NUL.
    let gnu_name = format!("{}/gnu-long\0", "g".repeat(150));
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(EntryType::GNULongName);
    h.set_size(gnu_name.len() as u64);
    t.raw(&mut h, gnu_name.as_bytes());
    let mut h = t.header(b"placeholder", EntryType::Regular, b"", 3, 0o644);
    t.raw(&mut h, b"gnu");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.read(&format!("{prefix}/foo")), "p");
    assert_eq!(fx.read(&format!("{long_dir}/sym")), "pax");
    assert_eq!(
        fx.ino(&format!("{long_dir}/hard")),
        fx.ino(&format!("{long_dir}/file"))
    );
    assert_eq!(fx.read(&format!("{}/gnu-long", "g".repeat(150))), "gnu");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn h3_h4_h5_h6_pax_records_global_size_smuggling_and_times() {
    let fx = Fx::new();
    let mut t = Tar::new();
    // H3: a global header is neither an error nor a file.
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().unwrap().name[..17].copy_from_slice(b"pax_global_header");
    h.set_entry_type(EntryType::XGlobalHeader);
    let body = b"18 comment=hello!\n";
    h.set_size(body.len() as u64);
    t.raw(&mut h, body);
    // H4: PAX size overrides a header size of 0.
    t.pax(&[("size", b"4")]);
    let mut h = t.header(b"sized", EntryType::Regular, b"", 0, 0o644);
    t.raw(&mut h, b"four");
    // H5: the PAX size (2048) covers a symlink header hidden in the data.
    let mut hidden = Tar::new();
    hidden.symlink("smuggled", "/etc/shadow");
    let mut data = b"regular".to_vec();
    data.resize(512, 0);
    data.extend(hidden.unterminated());
    data.resize(2048, 0);
    t.pax(&[("size", b"2048")]);
    let mut h = t.header(b"regular.txt", EntryType::Regular, b"", 8, 0o644);
    h.set_cksum();
    t.raw(&mut h, &data);
    // H6: fractional PAX mtime.
    t.pax(&[("mtime", b"1453146164.953123768")]);
    t.file("timed", b"");
    let report = apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(report.stats.entries, 3);
    assert!(!fx.exists("pax_global_header"));
    assert_eq!(fx.read("sized"), "four");
    assert!(!fx.exists("smuggled"));
    assert_eq!(std::fs::metadata(fx.p("regular.txt")).unwrap().len(), 2048);
    let md = std::fs::metadata(fx.p("timed")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1453146164, 953123768));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn h10_numeric_fields_padded_with_spaces() {
    let fx = Fx::new();
    let mut t = Tar::new();
    let mut h = t.header(b"spaces", EntryType::Regular, b"", 2, 0o644);
    let g = h.as_gnu_mut().unwrap();
    g.mode = *b"   777 \0";
    g.uid = *b"     0 \0";
    g.size = *b"          2 ";
    g.mtime = *b"12440016664 ";
    t.raw(&mut h, b"hi");
    apply(&fx.root, &t.finish()).unwrap();
    let md = std::fs::metadata(fx.p("spaces")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.len(), md.mtime()),
        (0o777, 0, 2, 0o12440016664)
    );
}

/// A 12-byte octal field (NUL-terminated when it fits in 11 digits).
fn octal12(v: u64) -> [u8; 12] {
    let text = if v < 8u64.pow(11) {
        format!("{v:011o}\0")
    } else {
        format!("{v:012o}")
    };
    text.as_bytes().try_into().unwrap()
}

/// A GNU sparse entry: `data` blocks at the given offsets in a file of `real` bytes.
fn sparse_entry(t: &mut Tar, name: &[u8], real: u64, blocks: &[(u64, &[u8])]) {
    // GNU tar ends the map with an empty block at the real size.
    let mut blocks = blocks.to_vec();
    blocks.push((real, &[]));
    let stored: Vec<u8> = blocks
        .iter()
        .flat_map(|(_, d)| {
            let mut v = d.to_vec();
            v.resize(d.len().div_ceil(512) * 512, 0);
            v
        })
        .collect();
    let mut h = t.header(name, EntryType::GNUSparse, b"", stored.len() as u64, 0o644);
    {
        let g = h.as_gnu_mut().unwrap();
        for (i, (off, d)) in blocks.iter().enumerate() {
            let len = d.len().div_ceil(512) * 512;
            g.sparse[i].offset.copy_from_slice(&octal12(*off));
            g.sparse[i].numbytes.copy_from_slice(&octal12(len as u64));
        }
        g.realsize.copy_from_slice(&octal12(real));
    }
    t.raw(&mut h, &stored);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn h11_h12_sparse_files_are_written_with_holes_and_bounded() {
    let fx = Fx::new();
    let mut t = Tar::new();
    let mut hello = b"hello\n".to_vec();
    hello.resize(512, 0);
    let mut world = b"world\n".to_vec();
    world.resize(512, 0);
    sparse_entry(
        &mut t,
        b"sparse.txt",
        0x3000,
        &[(0x1000, &hello), (0x2000, &world)],
    );
    apply(&fx.root, &t.finish()).unwrap();
    let data = std::fs::read(fx.p("sparse.txt")).unwrap();
    assert_eq!(data.len(), 0x3000);
    assert_eq!(&data[0x1000..0x1006], b"hello\n");
    assert_eq!(&data[0x2000..0x2006], b"world\n");
    assert!(data[..0x1000].iter().all(|&b| b == 0));
    // H12: 12.6 GB apparent in a tiny tar is over the sparse limit.
    let mut t = Tar::new();
    sparse_entry(
        &mut t,
        b"huge",
        12_626_929_280,
        &[(12_626_929_280 - 512, &hello)],
    );
    let err = apply(&fx.root, &t.finish()).unwrap_err();
    assert!(
        matches!(entry_error(&err), EntryError::Invalid(_)),
        "{err:?}"
    );
    assert!(!fx.exists("huge"));
}

#[test]
fn h13_h17_sizes_that_overflow_or_run_past_the_end_are_errors() {
    let fx = Fx::any_user();
    let mut t = Tar::new();
    let mut h = t.header(b"overflow", EntryType::Regular, b"", 0, 0o644);
    h.as_gnu_mut().unwrap().size = [
        0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    t.raw(&mut h, b"");
    let err = apply(&fx.root, &t.finish()).unwrap_err();
    assert!(
        matches!(err.kind, LayerError::Stream(_) | LayerError::Entry { .. }),
        "{err:?}"
    );
    let mut t = Tar::new();
    let mut h = t.header(b"short", EntryType::Regular, b"", 4096, 0o644);
    t.raw(&mut h, b"only a little");
    let bytes = t.unterminated();
    let err = apply(&fx.root, &bytes).unwrap_err();
    assert!(matches!(err.kind, LayerError::Stream(_)), "{err:?}");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn h16_missing_end_blocks_and_lone_zero_blocks_are_read() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.file("first", b"1");
    let mut bytes = t.unterminated();
    bytes.extend([0u8; 512]);
    let mut t2 = Tar::new();
    t2.file("second", b"2");
    bytes.extend(t2.unterminated());
    apply(&fx.root, &bytes).unwrap();
    assert_eq!(fx.read("first"), "1");
    assert_eq!(fx.read("second"), "2");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn h18_trailing_bytes_are_covered_by_the_diff_id() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.file("f", b"x");
    let mut bytes = t.finish();
    bytes.extend([0u8; 8192]);
    // The helper computes the diff id over all bytes; a reader stopping at the end blocks
    // would hash fewer and fail.
    apply(&fx.root, &bytes).unwrap();
    // Non-zero garbage after the end is not silently ignored.
    let mut bad = t.finish();
    bad.extend(b"garbage that is not a tar header".repeat(20));
    bad.resize(bad.len().div_ceil(512) * 512, 1);
    assert!(apply(&fx.root, &bad).is_err());
}

#[test]
fn h19_nul_in_a_pax_path_is_refused() {
    let fx = Fx::any_user();
    let mut t = Tar::new();
    t.pax(&[("path", b"evil\0name")]);
    t.file("x", b"");
    let err = apply(&fx.root, &t.finish()).unwrap_err();
    assert!(
        matches!(entry_error(&err), EntryError::Invalid(_)),
        "{err:?}"
    );
    assert!(!fx.exists("evil") && !fx.exists("x"));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn h20_duplicate_paths_last_one_wins() {
    let fx = Fx::new();
    let mut t = Tar::new();
    t.file("dup", b"first")
        .file("dup", b"second")
        .dir("dd/")
        .dir("dd/");
    apply(&fx.root, &t.finish()).unwrap();
    assert_eq!(fx.read("dup"), "second");
}

// ---------------------------------------------------------------- the same, in snapshot format

#[test]
fn hostile_layers_stay_inside_in_the_overlay_snapshot_format_too() {
    let mut tars: Vec<Tar> = Vec::new();
    let mut t = Tar::new();
    t.file("../victim/dotdot", b"1")
        .file("/../file2", b"2")
        .symlink("..", "/etc/");
    tars.push(t);
    let mut t = Tar::new();
    t.dir("foo/")
        .symlink("foo", "/")
        .file("foo/tmp/breakout-snap", b"x")
        .dir("foo")
        .file("foo/x", b"");
    tars.push(t);
    let mut t = Tar::new();
    t.dir("inner/")
        .symlink("inner/go_up", "..")
        .symlink("inner/go_up/escape", "../victim")
        .file("inner/go_up/escape/newfile", b"n")
        .file("inner/go_up/escape/.wh.hello", b"")
        .file("inner/go_up/escape/.wh..wh..opq", b"");
    tars.push(t);
    let mut t = Tar::new();
    t.symlink("loophole-victim", "../victim")
        .hardlink("hardlink", "loophole-victim/hello")
        .file("loophole-victim/file", b"x")
        .symlink("dir", "../outside-dir")
        .dir_mode("dir", 0o777);
    tars.push(t);
    for (i, t) in tars.into_iter().enumerate() {
        let fx = Fx::any_user();
        let _ = apply_with(&fx.root, &t.finish(), LayerFormat::OverlaySnapshot);
        assert!(!Path::new("/tmp/breakout-snap").exists());
        fx.assert_outside_untouched();
        assert_eq!(
            std::fs::read_to_string(fx.tmp.path().join("victim/hello")).unwrap(),
            "victim",
            "set {i}"
        );
    }
}
