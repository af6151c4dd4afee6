//! The walk over an upper directory that writes the layer tar.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat, openat, readlinkat};

use super::super::error::DiffError;
use super::xattrs::Xattrs;
use crate::overlay::{METACOPY_XATTR, REDIRECT_XATTR};
use crate::unpack::Limits;
use crate::unpack::tree::{list_dir, lstat_at, open_child_dir, os};

/// Directory levels a layer written by [`write_upper_as_layer`] may have by default: far more
/// than any image tree, and few enough descriptors to hold one per level.
const DEFAULT_MAX_DEPTH: usize = 256;

/// How [`write_upper_as_layer`] writes entries.
#[derive(Clone, Debug)]
pub struct DiffOptions {
    /// Every entry gets this mtime instead of its own (reproducible layers).
    pub fixed_mtime: Option<u64>,
    /// Paths (relative, e.g. `etc/resolv.conf`) the runtime creates as mount points: left out
    /// when they are an empty file or an empty directory without an overlay mark, so a run's
    /// plumbing does not become part of the image.
    pub mount_points: Vec<PathBuf>,
    /// The bounds the unpacker will apply to this layer (`max_layer_bytes`, `max_entries`,
    /// `max_file_size`, `max_xattrs_per_entry` and `max_xattr_value` are checked while
    /// writing).
    pub limits: Limits,
    /// Path components an entry may have below the upper directory (default 256).
    pub max_depth: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            fixed_mtime: None,
            mount_points: Vec::new(),
            limits: Limits::default(),
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
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
    .map_err(DiffError::read("open", upper))?;
    let mut walk = Walk {
        tar: tar::Builder::new(Counted {
            inner: out,
            written: 0,
            limit: options.limits.max_layer_bytes,
            over: false,
        }),
        options,
        report: DiffReport::default(),
        links: HashMap::new(),
    };
    walk.run(root)?;
    let end = Path::new("end of archive");
    let finished = walk.tar.finish();
    finished.map_err(|e| walk.write_failed(end, e))?;
    walk.tar
        .into_inner()
        .and_then(|mut out| out.inner.flush())
        .map_err(DiffError::write(end))?;
    Ok(walk.report)
}

/// One directory being written: its open descriptor and the names still to write.
struct Frame {
    fd: OwnedFd,
    rel: PathBuf,
    depth: usize,
    names: std::vec::IntoIter<Vec<u8>>,
}

impl Frame {
    fn new(fd: OwnedFd, rel: PathBuf, depth: usize) -> Result<Frame, DiffError> {
        let mut names = list_dir(fd.as_fd()).map_err(DiffError::read("list", &rel))?;
        names.sort();
        Ok(Frame {
            fd,
            rel,
            depth,
            names: names.into_iter(),
        })
    }
}

/// The output, counted so the layer stays within `max_layer_bytes`.
struct Counted<W> {
    inner: W,
    written: u64,
    limit: u64,
    /// Set when a write was refused for the limit (the tar error then says why).
    over: bool,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written.saturating_add(buf.len() as u64) > self.limit {
            self.over = true;
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "layer size limit reached",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Walk<'o, W: Write> {
    tar: tar::Builder<Counted<W>>,
    options: &'o DiffOptions,
    report: DiffReport,
    /// (dev, ino) of files with several links -> the first path written.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Walk<'_, W> {
    /// Writes everything below `root`, sorted by name, each directory before its children,
    /// holding one open directory per level (never recursing).
    fn run(&mut self, root: OwnedFd) -> Result<(), DiffError> {
        let mut stack = vec![Frame::new(root, PathBuf::new(), 0)?];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.next() else {
                stack.pop();
                continue;
            };
            let path = frame.rel.join(OsStr::from_bytes(&name));
            let depth = frame.depth + 1;
            if depth > self.options.max_depth {
                return Err(DiffError::TooDeep {
                    path,
                    max: self.options.max_depth,
                });
            }
            if let Some(child) = self.entry(frame.fd.as_fd(), &frame.rel, &name, &path)? {
                stack.push(Frame::new(child, path, depth)?);
            }
        }
        Ok(())
    }

    /// Writes one entry of `dir` (at `rel`); a directory to descend into is returned open.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        name: &[u8],
        path: &Path,
    ) -> Result<Option<OwnedFd>, DiffError> {
        if name.starts_with(b".wh.") {
            return Err(DiffError::ReservedName {
                path: path.to_path_buf(),
            });
        }
        let Some(st) = lstat_at(dir, name).map_err(DiffError::read("stat", path))? else {
            return Ok(None); // cannot happen in a stopped run; nothing to write if it did
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => return self.directory(dir, name, &st, path),
            FileType::CharacterDevice if st.st_rdev == 0 => {
                let mut whiteout = name.to_vec();
                whiteout.splice(0..0, b".wh.".iter().copied());
                let wh_path = rel.join(OsStr::from_bytes(&whiteout));
                let mut h = self.header(&st, tar::EntryType::Regular);
                h.set_mode(0o644);
                self.append(&mut h, &wh_path, &[], io::empty(), &wh_path)?;
                self.report.whiteouts += 1;
            }
            FileType::RegularFile => self.file(dir, name, &st, path)?,
            FileType::Symlink => {
                let target = readlinkat(dir, os(name), Vec::new())
                    .map_err(DiffError::read("read link", path))?;
                let mut h = self.header(&st, tar::EntryType::Symlink);
                self.append_link(&mut h, path, OsStr::from_bytes(target.as_bytes()))?;
            }
            FileType::Fifo => {
                let mut h = self.header(&st, tar::EntryType::Fifo);
                self.append(&mut h, path, &[], io::empty(), path)?;
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
                    .map_err(DiffError::write(path))?;
                self.append(&mut h, path, &[], io::empty(), path)?;
            }
            // Sockets (and anything unknown) have no layer form: their users are gone.
            _ => {}
        }
        Ok(None)
    }

    /// Writes a directory (and its opaque marker); returns it open unless it is a bare mount
    /// point left out.
    fn directory(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &Stat,
        path: &Path,
    ) -> Result<Option<OwnedFd>, DiffError> {
        let child = open_child_dir(dir, name).map_err(DiffError::read("open", path))?;
        let xattrs = Xattrs::read(child.as_fd(), path, &self.options.limits)?;
        if xattrs.has(REDIRECT_XATTR) {
            return Err(DiffError::Unsupported {
                path: path.to_path_buf(),
                feature: "redirect_dir",
            });
        }
        if self.is_mount_point(path)
            && xattrs.overlay.is_empty()
            && list_dir(child.as_fd()).is_ok_and(|c| c.is_empty())
        {
            return Ok(None);
        }
        let mut h = self.header(st, tar::EntryType::Directory);
        self.append(&mut h, &dir_name(path), &xattrs.carried, io::empty(), path)?;
        if xattrs.is_opaque() {
            let marker = path.join(".wh..wh..opq");
            let mut h = self.header(st, tar::EntryType::Regular);
            h.set_mode(0o644);
            self.append(&mut h, &marker, &[], io::empty(), &marker)?;
            self.report.opaque_dirs += 1;
        }
        Ok(Some(child))
    }

    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &Stat,
        path: &Path,
    ) -> Result<(), DiffError> {
        let size = st.st_size as u64;
        let limits = &self.options.limits;
        if size > limits.max_file_size {
            return Err(DiffError::limit(
                path,
                "max_file_size",
                limits.max_file_size,
            ));
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = self.header(st, tar::EntryType::Link);
                return self.append_link(&mut h, path, &first);
            }
        }
        // Refused before hours of reading; the counted output catches the headers' bytes.
        if self.tar.get_ref().written.saturating_add(size) > limits.max_layer_bytes {
            return Err(DiffError::limit(
                path,
                "max_layer_bytes",
                limits.max_layer_bytes,
            ));
        }
        let fd: OwnedFd = openat(
            dir,
            os(name),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(DiffError::read("open", path))?;
        // The file opened must be the one listed (nothing should move in a stopped run).
        let opened = rustix::fs::fstat(&fd).map_err(DiffError::read("stat", path))?;
        if (opened.st_dev, opened.st_ino, opened.st_size) != (st.st_dev, st.st_ino, st.st_size) {
            return Err(DiffError::Changed {
                path: path.to_path_buf(),
            });
        }
        let xattrs = Xattrs::read(fd.as_fd(), path, &self.options.limits)?;
        if xattrs.has(METACOPY_XATTR) {
            return Err(DiffError::Unsupported {
                path: path.to_path_buf(),
                feature: "metacopy",
            });
        }
        if size == 0 && xattrs.overlay.is_empty() && self.is_mount_point(path) {
            return Ok(());
        }
        if st.st_nlink > 1 {
            self.links
                .insert((st.st_dev, st.st_ino), path.to_path_buf());
        }
        let mut h = self.header(st, tar::EntryType::Regular);
        h.set_size(size);
        let body = Exact {
            file: std::fs::File::from(fd),
            left: size,
            path,
        };
        self.append(&mut h, path, &xattrs.carried, body, path)?;
        self.report.content_bytes += size;
        Ok(())
    }

    fn is_mount_point(&self, path: &Path) -> bool {
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

    /// Counts one more entry against `max_entries`.
    fn admit(&mut self, shown: &Path) -> Result<(), DiffError> {
        let max = self.options.limits.max_entries;
        if self.report.entries >= max {
            return Err(DiffError::limit(shown, "max_entries", max));
        }
        self.report.entries += 1;
        Ok(())
    }

    fn append(
        &mut self,
        h: &mut tar::Header,
        name: &Path,
        xattrs: &[(String, Vec<u8>)],
        body: impl Read,
        shown: &Path,
    ) -> Result<(), DiffError> {
        self.admit(shown)?;
        if !xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            let written = self
                .tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)));
            written.map_err(|e| self.write_failed(shown, e))?;
        }
        let written = self.tar.append_data(h, name, body);
        written.map_err(|e| self.write_failed(shown, e))
    }

    fn append_link(
        &mut self,
        h: &mut tar::Header,
        path: &Path,
        target: impl AsRef<Path>,
    ) -> Result<(), DiffError> {
        self.admit(path)?;
        let written = self.tar.append_link(h, path, target);
        written.map_err(|e| self.write_failed(path, e))
    }

    /// A failed write of `path`: the layer size limit if the output refused it for that.
    fn write_failed(&self, path: &Path, source: io::Error) -> DiffError {
        if self.tar.get_ref().over {
            let max = self.options.limits.max_layer_bytes;
            return DiffError::limit(path, "max_layer_bytes", max);
        }
        DiffError::Write {
            path: path.to_path_buf(),
            source,
        }
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
