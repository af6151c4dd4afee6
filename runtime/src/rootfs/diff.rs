//! A run's overlay upper directory -> an OCI layer tar: what a build command changed.
//!
//! The upper directory holds exactly the changes of the run, in overlay's format: a whiteout
//! is a 0/0 character device, an opaque directory carries `trusted.overlay.opaque=y` (or
//! `user.overlay.opaque=y` when mounted with `userxattr`, rootless). They become the OCI forms
//! `.wh.<name>` and `.wh..wh..opq`. The tree was written by an untrusted container, so it is
//! read with `*at` calls that never follow a symlink, and the output is deterministic: entries
//! sorted by name, directories before their children, hard links as links to the first path.
//! Overlay features whose upper entries do not stand on their own (metacopy: metadata without
//! data; redirect_dir: a renamed directory pointing at its lower origin) are refused.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat, fgetxattr, flistxattr, openat, readlinkat};
use rustix::io::Errno;

use super::mount::{RootfsKind, RunRootfs};
use crate::unpack::tree::{list_dir, lstat_at, open_child_dir, os};

/// Why an upper directory could not become a layer.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The run got a flattened copy: there is no upper directory holding only its changes.
    #[error("build commands need an overlay root filesystem; this run got a copy ({reason})")]
    NoOverlay {
        /// Why overlay was not used.
        reason: String,
    },
    /// Reading the upper directory failed.
    #[error("cannot {op} {}", path.display())]
    Read {
        /// What we tried.
        op: &'static str,
        /// The entry, relative to the upper directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An overlay feature whose upper entries depend on the lower layers.
    #[error("{} uses overlay {feature}, which a layer cannot express", path.display())]
    Unsupported {
        /// The entry, relative to the upper directory.
        path: PathBuf,
        /// The feature (xattr) found.
        feature: &'static str,
    },
    /// A name the OCI layer format reserves for whiteouts (`.wh.*`): written as it is, it
    /// would delete or hide files when the layer is applied.
    #[error("{} has a name reserved for OCI whiteouts", path.display())]
    ReservedName {
        /// The entry, relative to the upper directory.
        path: PathBuf,
    },
    /// A file changed size while it was read.
    #[error("{} changed while it was read", path.display())]
    Changed {
        /// The entry, relative to the upper directory.
        path: PathBuf,
    },
    /// Writing the tar stream failed.
    #[error("cannot write the layer entry {}", path.display())]
    Write {
        /// The entry being written.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// How [`write_upper_as_layer`] writes entries.
#[derive(Clone, Debug, Default)]
pub struct DiffOptions {
    /// Every entry gets this mtime instead of its own (reproducible layers).
    pub fixed_mtime: Option<u64>,
    /// Paths (relative, e.g. `etc/resolv.conf`) the runtime creates as mount points: left out
    /// when they are an empty file or an empty directory, so a run's plumbing does not become
    /// part of the image.
    pub mount_points: Vec<PathBuf>,
}

/// What [`write_upper_as_layer`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Entries written, whiteouts and opaque markers included.
    pub entries: u64,
    /// `.wh.<name>` entries.
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries.
    pub opaque_dirs: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
}

impl RunRootfs {
    /// The overlay upper directory of this run: its changes, readable after the container
    /// ended and before the rootfs is released.
    pub fn upper_dir(&self) -> Result<PathBuf, DiffError> {
        match self.kind() {
            RootfsKind::Overlay => Ok(self.run_dir().join("upper")),
            RootfsKind::Copy { reason } => Err(DiffError::NoOverlay {
                reason: reason.clone(),
            }),
        }
    }
}

const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
const METACOPY_XATTRS: [&str; 2] = ["trusted.overlay.metacopy", "user.overlay.metacopy"];
const REDIRECT_XATTRS: [&str; 2] = ["trusted.overlay.redirect", "user.overlay.redirect"];

/// Writes the changes in `upper` as an uncompressed OCI layer tar into `out` (and ends the
/// archive).
pub fn write_upper_as_layer(
    upper: &Path,
    options: &DiffOptions,
    out: impl Write,
) -> Result<DiffReport, DiffError> {
    let root = openat(
        rustix::fs::CWD,
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(read_err("open", upper))?;
    let mut walk = Walk {
        tar: tar::Builder::new(out),
        options,
        report: DiffReport::default(),
        links: HashMap::new(),
    };
    walk.dir(root.as_fd(), Path::new(""))?;
    walk.tar
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|source| DiffError::Write {
            path: PathBuf::from("end of archive"),
            source,
        })?;
    Ok(walk.report)
}

struct Walk<'o, W: Write> {
    tar: tar::Builder<W>,
    options: &'o DiffOptions,
    report: DiffReport,
    /// (dev, ino) of files with several links -> the first path written.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Walk<'_, W> {
    /// Writes the children of `dir` (at `rel`), sorted by name, recursing into directories.
    fn dir(&mut self, dir: BorrowedFd<'_>, rel: &Path) -> Result<(), DiffError> {
        let mut names = list_dir(dir).map_err(read_err("list", rel))?;
        names.sort();
        for name in names {
            let path = rel.join(OsStr::from_bytes(&name));
            if name.starts_with(b".wh.") {
                return Err(DiffError::ReservedName { path });
            }
            let Some(st) = lstat_at(dir, &name).map_err(read_err("stat", &path))? else {
                continue; // cannot happen in a stopped run; nothing to write if it did
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let child = open_child_dir(dir, &name).map_err(read_err("open", &path))?;
                    let xattrs = Xattrs::read(child.as_fd(), &path)?;
                    if xattrs.has_any(&REDIRECT_XATTRS) {
                        return Err(DiffError::Unsupported {
                            path,
                            feature: "redirect_dir",
                        });
                    }
                    if self.is_empty_mount_point(&path)
                        && list_dir(child.as_fd()).is_ok_and(|c| c.is_empty())
                    {
                        continue;
                    }
                    let mut h = self.header(&st, tar::EntryType::Directory);
                    self.append(
                        &mut h,
                        &dir_name(&path),
                        &xattrs.carried,
                        io::empty(),
                        &path,
                    )?;
                    if xattrs.is_opaque() {
                        let marker = path.join(".wh..wh..opq");
                        let mut h = self.header(&st, tar::EntryType::Regular);
                        h.set_mode(0o644);
                        self.append(&mut h, &marker, &[], io::empty(), &marker)?;
                        self.report.opaque_dirs += 1;
                    }
                    self.dir(child.as_fd(), &path)?;
                }
                FileType::CharacterDevice if st.st_rdev == 0 => {
                    let mut whiteout = name.clone();
                    whiteout.splice(0..0, b".wh.".iter().copied());
                    let wh_path = rel.join(OsStr::from_bytes(&whiteout));
                    let mut h = self.header(&st, tar::EntryType::Regular);
                    h.set_mode(0o644);
                    self.append(&mut h, &wh_path, &[], io::empty(), &wh_path)?;
                    self.report.whiteouts += 1;
                }
                FileType::RegularFile => self.file(dir, &name, &st, &path)?,
                FileType::Symlink => {
                    let target = readlinkat(dir, os(&name), Vec::new())
                        .map_err(read_err("read link", &path))?;
                    let mut h = self.header(&st, tar::EntryType::Symlink);
                    self.tar
                        .append_link(&mut h, &path, OsStr::from_bytes(target.as_bytes()))
                        .map_err(write_err(&path))?;
                    self.report.entries += 1;
                }
                FileType::Fifo => {
                    let mut h = self.header(&st, tar::EntryType::Fifo);
                    self.append(&mut h, &path, &[], io::empty(), &path)?;
                }
                kind @ (FileType::CharacterDevice | FileType::BlockDevice) => {
                    let entry = if kind == FileType::CharacterDevice {
                        tar::EntryType::Char
                    } else {
                        tar::EntryType::Block
                    };
                    let mut h = self.header(&st, entry);
                    let rdev = st.st_rdev;
                    h.set_device_major(rustix::fs::major(rdev))
                        .and_then(|()| h.set_device_minor(rustix::fs::minor(rdev)))
                        .map_err(write_err(&path))?;
                    self.append(&mut h, &path, &[], io::empty(), &path)?;
                }
                // Sockets (and anything unknown) have no layer form: their users are gone.
                _ => {}
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &Stat,
        path: &Path,
    ) -> Result<(), DiffError> {
        if st.st_size == 0 && self.is_empty_mount_point(path) {
            return Ok(());
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = self.header(st, tar::EntryType::Link);
                self.tar
                    .append_link(&mut h, path, &first)
                    .map_err(write_err(path))?;
                self.report.entries += 1;
                return Ok(());
            }
            self.links.insert(key, path.to_path_buf());
        }
        let fd: OwnedFd = openat(
            dir,
            os(name),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(read_err("open", path))?;
        // The file opened must be the one listed (nothing should move in a stopped run).
        let opened = rustix::fs::fstat(&fd).map_err(read_err("stat", path))?;
        if (opened.st_dev, opened.st_ino, opened.st_size) != (st.st_dev, st.st_ino, st.st_size) {
            return Err(DiffError::Changed {
                path: path.to_path_buf(),
            });
        }
        let xattrs = Xattrs::read(fd.as_fd(), path)?;
        if xattrs.has_any(&METACOPY_XATTRS) {
            return Err(DiffError::Unsupported {
                path: path.to_path_buf(),
                feature: "metacopy",
            });
        }
        let size = st.st_size as u64;
        let mut h = self.header(st, tar::EntryType::Regular);
        h.set_size(size);
        let body = Exact {
            file: std::fs::File::from(fd),
            left: size,
            path,
        };
        let carried = xattrs.carried.clone();
        self.append(&mut h, path, &carried, body, path)?;
        self.report.content_bytes += size;
        Ok(())
    }

    fn is_empty_mount_point(&self, path: &Path) -> bool {
        self.options.mount_points.iter().any(|m| m == path)
    }

    fn header(&self, st: &Stat, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid.into());
        h.set_gid(st.st_gid.into());
        h.set_mtime(
            self.options
                .fixed_mtime
                .unwrap_or(st.st_mtime.max(0) as u64),
        );
        h.set_size(0);
        h
    }

    fn append(
        &mut self,
        h: &mut tar::Header,
        name: &Path,
        xattrs: &[(String, Vec<u8>)],
        body: impl Read,
        shown: &Path,
    ) -> Result<(), DiffError> {
        if !xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(write_err(shown))?;
        }
        self.tar
            .append_data(h, name, body)
            .map_err(write_err(shown))?;
        self.report.entries += 1;
        Ok(())
    }
}

/// The extended attributes of one entry: overlay's own, and those a layer carries
/// (`user.*` but overlay's, `security.capability`), sorted by name.
struct Xattrs {
    overlay: Vec<(String, Vec<u8>)>,
    carried: Vec<(String, Vec<u8>)>,
}

impl Xattrs {
    fn read(fd: BorrowedFd<'_>, path: &Path) -> Result<Xattrs, DiffError> {
        let mut names = vec![0u8; 4096];
        let len = loop {
            match flistxattr(fd, &mut names[..]) {
                Ok(n) => break n,
                Err(Errno::RANGE) if names.len() < (1 << 20) => names.resize(names.len() * 4, 0),
                Err(Errno::NOTSUP) => break 0,
                Err(e) => return Err(read_err("list xattrs of", path)(e)),
            }
        };
        let mut list: Vec<String> = names[..len]
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        list.sort();
        let mut out = Xattrs {
            overlay: Vec::new(),
            carried: Vec::new(),
        };
        for name in list {
            let is_overlay =
                name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
            let carried =
                !is_overlay && (name.starts_with("user.") || name == "security.capability");
            if !is_overlay && !carried {
                continue;
            }
            let mut value = vec![0u8; 256];
            let n = loop {
                match fgetxattr(fd, name.as_str(), &mut value[..]) {
                    Ok(n) => break n,
                    Err(Errno::RANGE) if value.len() < (1 << 17) => {
                        value.resize(value.len() * 4, 0)
                    }
                    Err(e) => return Err(read_err("read xattrs of", path)(e)),
                }
            };
            value.truncate(n);
            if is_overlay {
                out.overlay.push((name, value));
            } else {
                out.carried.push((name, value));
            }
        }
        Ok(out)
    }

    fn has_any(&self, names: &[&str]) -> bool {
        self.overlay
            .iter()
            .any(|(n, _)| names.contains(&n.as_str()))
    }

    fn is_opaque(&self) -> bool {
        self.overlay
            .iter()
            .any(|(n, v)| OPAQUE_XATTRS.contains(&n.as_str()) && v.as_slice() == b"y")
    }
}

/// Exactly `left` bytes of a file, or an error: the tar header already promised the size.
struct Exact<'p> {
    file: std::fs::File,
    left: u64,
    path: &'p Path,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(DiffError::Changed {
                path: self.path.to_path_buf(),
            }));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn dir_name(path: &Path) -> PathBuf {
    let mut bytes = path.as_os_str().as_bytes().to_vec();
    bytes.push(b'/');
    PathBuf::from(OsStr::from_bytes(&bytes))
}

fn read_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> DiffError + 'a {
    move |e| DiffError::Read {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> DiffError + '_ {
    move |source| DiffError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::{Compression, LayerBlob, LayerFormat, Limits, unpack_layer};
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, symlink};

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

        super::super::mount::mount_overlay(std::slice::from_ref(&lower), &upper, &work, &merged)
            .unwrap();
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
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("a/.wh.sneaky"), "");
        let err =
            write_upper_as_layer(tmp.path(), &DiffOptions::default(), io::sink()).unwrap_err();
        assert!(matches!(err, DiffError::ReservedName { .. }), "{err}");

        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("bin/tool"), "");
        rustix::fs::setxattr(
            tmp.path().join("bin/tool"),
            "trusted.overlay.metacopy",
            b"",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let err =
            write_upper_as_layer(tmp.path(), &DiffOptions::default(), io::sink()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bin/tool uses overlay metacopy, which a layer cannot express"
        );
    }

    #[test]
    fn user_xattr_opaque_marks_and_whiteout_devices_convert() {
        require_root();
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
}
