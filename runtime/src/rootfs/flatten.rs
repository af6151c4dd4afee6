//! The fallback rootfs: the image's snapshots replayed, bottom to top, into one directory with
//! the flattened-format applier (whiteouts delete, opaque directories drop lower content).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, openat};
use rustix::io::Errno;

use crate::overlay::{is_opaque, root_is_opaque, xattr_carried};
use crate::unpack::spec::{Kind, Meta, Op, Spec};
use crate::unpack::tree::{list_dir, lstat_at, open_child_dir, open_dir, os};
use crate::unpack::{Applier, EntryError, LayerError, LayerFormat, UnpackError};

const CHUNK: usize = 256 * 1024;

/// Copies `snapshots` (base first) into the empty directory `target`.
pub(crate) fn flatten_into(snapshots: &[PathBuf], target: &Path) -> Result<(), UnpackError> {
    // A snapshot with an opaque root hides everything below it.
    let start = snapshots
        .iter()
        .rposition(|s| root_is_opaque(s))
        .unwrap_or(0);
    for snap in &snapshots[start..] {
        let label = snap.display().to_string();
        let wrap = |kind| UnpackError {
            layer: label.clone(),
            kind,
        };
        let mut applier = Applier::new(target, LayerFormat::Flattened).map_err(|source| {
            wrap(LayerError::OpenTarget {
                path: target.to_path_buf(),
                source,
            })
        })?;
        let src = open_dir(snap).map_err(|source| {
            wrap(LayerError::OpenTarget {
                path: snap.clone(),
                source,
            })
        })?;
        let mut links = HashMap::new();
        replay(src.as_fd(), &[], &mut applier, &mut links, &HashSet::new()).map_err(wrap)?;
        applier.finish().map_err(wrap)?;
    }
    Ok(())
}

fn entry_err<'a>(path: &'a [u8], op: &'static str) -> impl FnOnce(Errno) -> LayerError + 'a {
    move |e| LayerError::Entry {
        entry: String::from_utf8_lossy(path).into_owned(),
        source: EntryError::Io {
            op,
            source: e.into(),
        },
    }
}

/// Emits the entries of one snapshot directory (recursively) to the applier. Directories in
/// `implied` are not emitted themselves (only their content), so the applier resolves them as
/// implied parents again.
pub(crate) fn replay(
    dir: BorrowedFd<'_>,
    rel: &[u8],
    applier: &mut Applier,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    implied: &HashSet<Vec<u8>>,
) -> Result<(), LayerError> {
    let names = list_dir(dir).map_err(entry_err(rel, "list directory"))?;
    for name in names {
        let path = crate::unpack::apply_join(rel, &name);
        let Some(st) = lstat_at(dir, &name).map_err(entry_err(&path, "stat"))? else {
            continue;
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        let mut meta = Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            xattrs: Vec::new(),
        };
        let spec = |kind, meta| {
            Op::Entry(Box::new(Spec {
                raw_name: String::from_utf8_lossy(&path).into_owned(),
                path: path.clone(),
                kind,
                meta,
            }))
        };
        match ft {
            FileType::CharacterDevice if st.st_rdev == 0 => {
                applier.apply(spec(Kind::Whiteout, meta))?;
            }
            FileType::Directory => {
                let child =
                    open_child_dir(dir, &name).map_err(entry_err(&path, "open directory"))?;
                meta.xattrs = carried_xattrs(child.as_fd());
                let opaque = is_opaque(child.as_fd());
                if !implied.contains(&path) {
                    applier.apply(spec(Kind::Dir, meta.clone()))?;
                }
                if opaque {
                    applier.apply(spec(Kind::Opaque, meta))?;
                }
                replay(child.as_fd(), &path, applier, links, implied)?;
            }
            FileType::RegularFile => {
                if st.st_nlink > 1 {
                    if let Some(first) = links.get(&(st.st_dev, st.st_ino)) {
                        applier.apply(spec(Kind::Hardlink(first.clone()), meta))?;
                        continue;
                    }
                    links.insert((st.st_dev, st.st_ino), path.clone());
                }
                let fd = openat(
                    dir,
                    os(&name),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(entry_err(&path, "open file"))?;
                meta.xattrs = carried_xattrs(fd.as_fd());
                applier.apply(spec(
                    Kind::File {
                        size: st.st_size as u64,
                        sparse: false,
                    },
                    meta,
                ))?;
                let mut file = std::fs::File::from(fd);
                loop {
                    let mut buf = Vec::with_capacity(CHUNK);
                    (&mut file)
                        .take(CHUNK as u64)
                        .read_to_end(&mut buf)
                        .map_err(|e| LayerError::Entry {
                            entry: String::from_utf8_lossy(&path).into_owned(),
                            source: EntryError::Io {
                                op: "read file",
                                source: e,
                            },
                        })?;
                    if buf.is_empty() {
                        break;
                    }
                    applier.apply(Op::Data(buf))?;
                }
                applier.apply(Op::End)?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, os(&name), Vec::new())
                    .map_err(entry_err(&path, "read symlink"))?;
                applier.apply(spec(Kind::Symlink(target.into_bytes()), meta))?;
            }
            FileType::CharacterDevice => {
                let (ma, mi) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                applier.apply(spec(Kind::Char(ma, mi), meta))?;
            }
            FileType::BlockDevice => {
                let (ma, mi) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                applier.apply(spec(Kind::Block(ma, mi), meta))?;
            }
            FileType::Fifo => applier.apply(spec(Kind::Fifo, meta))?,
            // Sockets and unknown types cannot come from a layer.
            _ => {}
        }
    }
    Ok(())
}

/// The carried extended attributes of a snapshot entry ([`xattr_carried`]: the unpacker only
/// ever wrote those, plus overlay's own `user.overlay.*` and `trusted.*`, which must not be
/// copied).
fn carried_xattrs(fd: BorrowedFd<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::flistxattr(fd, &mut names) else {
        return out;
    };
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !xattr_carried(name) {
            continue;
        }
        let mut value = vec![0u8; 64 * 1024];
        if let Ok(len) = rustix::fs::fgetxattr(fd, os(name), &mut value) {
            value.truncate(len);
            out.push((name.to_vec(), value));
        }
    }
    out
}
