//! The code layer: a commit's tree under `/home/`, as a tar that depends on the commit only.
//!
//! Entries are sorted by path, owned by 0:0, all with the commit's time; files get 0644 or
//! 0755 from git's mode, directories 0755, symlinks their target verbatim. Submodules are left
//! out (their code is another repository's) and reported; `.git` never exists in a tree read
//! from git's objects. A path that could leave `/home/` or read as an OCI whiteout is refused.
//! The image's working directory is created too when it lies outside `/home/` (as a
//! Dockerfile `WORKDIR` would), so a run without a `/data` mount can still start in it.

use std::io::{self, Write};

use crate::error::CodeLayerError;
use crate::git::Fetched;

/// Where the code goes in the image.
pub const CODE_DIR: &str = "home";

/// Longest symlink target accepted (Linux's PATH_MAX).
const MAX_LINK_TARGET: u64 = 4096;

/// What [`write_code_layer`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeLayerReport {
    /// Regular files and symlinks written.
    pub files: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
    /// Submodule paths left out.
    pub skipped_submodules: Vec<String>,
}

/// Writes the tree of `fetched` as a tar stream into `out` (and finishes the tar), every entry
/// with mtime `mtime`, preceded by the directories of `workdir` that the base lacks
/// (`in_base("data")` says whether the base image has that path), when it is outside
/// `/home/`: as a Dockerfile `WORKDIR`, never replacing the base's own (a `/tmp` keeps 1777).
pub fn write_code_layer(
    fetched: &Fetched,
    mtime: u64,
    workdir: &str,
    in_base: &dyn Fn(&str) -> bool,
    out: impl Write,
) -> Result<CodeLayerReport, CodeLayerError> {
    let git = |path: &str| {
        let path = path.to_owned();
        move |source| CodeLayerError::Git { path, source }
    };
    let tree = fetched.tree().map_err(git(""))?;
    let mut blobs = fetched.blobs().map_err(git(""))?;
    let mut tar = tar::Builder::new(out);
    let mut report = CodeLayerReport::default();
    let workdir = workdir.trim_matches('/');
    if !workdir.is_empty() && workdir.split('/').next() != Some(CODE_DIR) {
        check_path(workdir.as_bytes(), workdir)?;
        let mut dir = String::new();
        for part in workdir.split('/') {
            dir.push_str(part);
            if !in_base(&dir) {
                append(&mut tar, &format!("{dir}/"), directory(mtime), io::empty())?;
            }
            dir.push('/');
        }
    }
    let root = format!("{CODE_DIR}/");
    append(&mut tar, &root, directory(mtime), io::empty())?;
    for entry in &tree {
        let shown = String::from_utf8_lossy(&entry.path).into_owned();
        check_path(&entry.path, &shown)?;
        let name = [CODE_DIR.as_bytes(), b"/", &entry.path].concat();
        let name = String::from_utf8(name).map_err(|_| CodeLayerError::BadPath {
            path: shown.clone(),
            why: "not UTF-8",
        })?;
        match entry.mode {
            0o040000 => append(&mut tar, &format!("{name}/"), directory(mtime), io::empty())?,
            0o100644 | 0o100664 | 0o100755 => {
                let mode = if entry.mode & 0o100 != 0 {
                    0o755
                } else {
                    0o644
                };
                let (size, body) = blobs.open(&entry.oid).map_err(git(&shown))?;
                let mut h = header(tar::EntryType::Regular, mode, mtime);
                h.set_size(size);
                append(&mut tar, &name, h, body)?;
                report.files += 1;
                report.content_bytes += size;
            }
            0o120000 => {
                let (size, mut body) = blobs.open(&entry.oid).map_err(git(&shown))?;
                if size > MAX_LINK_TARGET {
                    return Err(CodeLayerError::BadPath {
                        path: shown,
                        why: "symlink target longer than 4096 bytes",
                    });
                }
                let mut target = Vec::with_capacity(size as usize);
                io::copy(&mut body, &mut target).map_err(write_err(&shown))?;
                let target = String::from_utf8(target).map_err(|_| CodeLayerError::BadPath {
                    path: shown.clone(),
                    why: "symlink target not UTF-8",
                })?;
                let mut h = header(tar::EntryType::Symlink, 0o777, mtime);
                tar.append_link(&mut h, &name, &target)
                    .map_err(write_err(&shown))?;
                report.files += 1;
            }
            0o160000 => report.skipped_submodules.push(shown),
            _ => {
                return Err(CodeLayerError::BadPath {
                    path: shown,
                    why: "unknown git mode",
                });
            }
        }
    }
    tar.into_inner()
        .and_then(|mut out| out.flush())
        .map_err(write_err("end of archive"))?;
    Ok(report)
}

/// Refuses empty, `.`, `..`, `.git` and `.wh.*` components (a hostile tree can hold any of
/// them; git itself refuses them on checkout).
fn check_path(path: &[u8], shown: &str) -> Result<(), CodeLayerError> {
    let bad = |why| CodeLayerError::BadPath {
        path: shown.to_owned(),
        why,
    };
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." | b".." => return Err(bad("empty, `.` or `..` component")),
            b".git" => return Err(bad("a `.git` component")),
            p if p.starts_with(b".wh.") => return Err(bad("an OCI whiteout name (`.wh.`)")),
            _ => {}
        }
    }
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

fn directory(mtime: u64) -> tar::Header {
    header(tar::EntryType::Directory, 0o755, mtime)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    mut h: tar::Header,
    body: impl io::Read,
) -> Result<(), CodeLayerError> {
    tar.append_data(&mut h, name, body).map_err(write_err(name))
}

fn write_err(path: &str) -> impl FnOnce(io::Error) -> CodeLayerError + '_ {
    move |source| CodeLayerError::Write {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::Remote;
    use crate::testing::git;
    use std::path::Path;

    /// A repository with a subdirectory, an executable, a symlink and a file whose mode and
    /// time in the worktree differ from what git records.
    fn repo(dir: &Path) -> String {
        std::fs::create_dir_all(dir.join("src/lib")).unwrap();
        std::fs::write(dir.join("main.sh"), "echo hi\n").unwrap();
        std::fs::write(dir.join("src/lib/util.sh"), "x=1\n").unwrap();
        std::fs::write(dir.join("src/a-b"), "dash sorts before slash\n").unwrap();
        std::os::unix::fs::symlink("../main.sh", dir.join("src/link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("main.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        git(dir, &["init", "-q"]);
        git(dir, &["add", "."]);
        git(dir, &["commit", "-qm", "one"]);
        std::fs::set_permissions(
            dir.join("src/lib/util.sh"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        git(dir, &["rev-parse", "HEAD"]).trim().to_owned()
    }

    fn layer(repo: &Path, scratch: &Path) -> (Vec<u8>, CodeLayerReport) {
        let remote = Remote::new(repo.to_str().unwrap(), None, None).unwrap();
        let commit = remote.resolve("HEAD").unwrap();
        let fetched = remote.fetch(&commit, scratch).unwrap();
        assert_eq!(fetched.commit_time().unwrap(), 1_700_000_000);
        let mut out = Vec::new();
        let report =
            write_code_layer(&fetched, 1_700_000_000, "/data/", &|_| false, &mut out).unwrap();
        (out, report)
    }

    #[test]
    fn same_commit_same_bytes_sorted_normalised_and_without_git() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let commit = repo(&src);
        let (s1, s2) = (tmp.path().join("s1"), tmp.path().join("s2"));
        std::fs::create_dir_all(&s1).unwrap();
        std::fs::create_dir_all(&s2).unwrap();
        let (a, report) = layer(&src, &s1);
        // A clone elsewhere with other worktree times gives the very same bytes.
        let clone = tmp.path().join("clone");
        git(tmp.path(), &["clone", "-q", src.to_str().unwrap(), "clone"]);
        std::fs::write(clone.join("untracked"), "not in the commit").unwrap();
        let (b, _) = layer(&clone, &s2);
        assert_eq!(a, b);
        assert_eq!(git(&clone, &["rev-parse", "HEAD"]).trim(), commit);
        assert_eq!(report.files, 4);

        let mut archive = tar::Archive::new(&a[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mode = h.mode().unwrap();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            seen.push((path, mode, link));
        }
        let expect = |p: &str, m: u32, l: Option<&str>| (p.to_owned(), m, l.map(str::to_owned));
        assert_eq!(
            seen,
            [
                expect("data/", 0o755, None),
                expect("home/", 0o755, None),
                expect("home/main.sh", 0o755, None),
                expect("home/src/", 0o755, None),
                expect("home/src/a-b", 0o644, None),
                expect("home/src/lib/", 0o755, None),
                expect("home/src/lib/util.sh", 0o644, None),
                expect("home/src/link", 0o777, Some("../main.sh")),
            ]
        );

        // A working dir the base already has is not written again (its mode and owner stay
        // the base's, e.g. /tmp's 1777); only the missing components are.
        let remote = Remote::new(src.to_str().unwrap(), None, None).unwrap();
        let fetched = remote.fetch(&commit, &s1).unwrap();
        let mut out = Vec::new();
        write_code_layer(&fetched, 1, "/tmp/work/", &|p| p == "tmp", &mut out).unwrap();
        let names: Vec<String> = tar::Archive::new(&out[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .take(2)
            .collect();
        assert_eq!(names, ["tmp/work/", "home/"]);
    }

    /// Issue 18: an empty blob (`.gitkeep`, `__init__.py`) used to leave cat-file's newline
    /// unread, so the next header read as "" and the build stopped.
    #[test]
    fn empty_files_files_without_final_newline_and_large_files_in_one_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("pkg")).unwrap();
        let large: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let files: [(&str, &[u8]); 6] = [
            ("a", b""),
            ("b", b"x"),
            ("pkg/__init__.py", b""),
            ("pkg/.gitkeep", b""),
            ("pkg/large.bin", &large),
            ("z", b"last line without newline"),
        ];
        for (name, body) in files {
            std::fs::write(src.join(name), body).unwrap();
        }
        git(&src, &["init", "-q"]);
        git(&src, &["add", "."]);
        git(&src, &["commit", "-qm", "one"]);
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let (out, report) = layer(&src, &scratch);
        assert_eq!(report.files, 6);
        let mut got = std::collections::BTreeMap::new();
        for e in tar::Archive::new(&out[..]).entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type().is_file() {
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                got.insert(path, body);
            }
        }
        for (name, body) in files {
            assert_eq!(
                got.get(&format!("home/{name}")).map(Vec::as_slice),
                Some(body),
                "{name}"
            );
        }
    }

    #[test]
    fn whiteout_and_dot_names_are_refused() {
        for bad in [".wh.x", "a/../b", "a//b", ".git/config"] {
            assert!(check_path(bad.as_bytes(), bad).is_err(), "{bad}");
        }
        check_path(b"a/.whx/b.wh.", "ok").unwrap();
    }
}
