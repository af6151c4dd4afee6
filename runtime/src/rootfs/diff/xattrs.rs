//! The extended attributes of one upper-directory entry, read once and sorted into overlay's
//! marks (which the walk interprets) and the attributes the layer carries.

use std::os::fd::BorrowedFd;
use std::path::Path;

use rustix::fs::{fgetxattr, flistxattr};
use rustix::io::Errno;

use super::super::error::DiffError;
use crate::overlay::{MARKS, OPAQUE_XATTR, marks_opaque, xattr_carried};
use crate::unpack::Limits;

/// The extended attributes of one entry: overlay's own marks (exact names), and those a layer
/// carries (`user.*` but any `user.overlay.*`, `security.capability`), sorted by name. Any
/// other name (`trusted.*`, escaped `user.overlay.overlay.*`, other overlay bookkeeping such
/// as `user.overlay.origin`) is dropped.
pub(super) struct Xattrs {
    /// Overlay's marks ([`MARKS`]), by exact name.
    pub(super) overlay: Vec<(String, Vec<u8>)>,
    /// What the layer carries ([`xattr_carried`]).
    pub(super) carried: Vec<(String, Vec<u8>)>,
}

impl Xattrs {
    /// Reads the attributes of `fd` (the entry `path`), within `limits`.
    pub(super) fn read(
        fd: BorrowedFd<'_>,
        path: &Path,
        limits: &Limits,
    ) -> Result<Xattrs, DiffError> {
        let mut names = vec![0u8; 4096];
        let len = loop {
            match flistxattr(fd, &mut names[..]) {
                Ok(n) => break n,
                Err(Errno::RANGE) if names.len() < (1 << 20) => names.resize(names.len() * 4, 0),
                Err(Errno::NOTSUP) => break 0,
                Err(e) => return Err(DiffError::read("list xattrs of", path)(e)),
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
            let is_overlay = MARKS.contains(&name.as_str());
            let carried = xattr_carried(name.as_bytes());
            if !is_overlay && !carried {
                continue;
            }
            if carried && out.carried.len() >= limits.max_xattrs_per_entry {
                return Err(DiffError::limit(
                    path,
                    "max_xattrs_per_entry",
                    limits.max_xattrs_per_entry as u64,
                ));
            }
            let mut value = vec![0u8; 256];
            let n = loop {
                match fgetxattr(fd, name.as_str(), &mut value[..]) {
                    Ok(n) => break n,
                    Err(Errno::RANGE) if value.len() < (1 << 17) => {
                        value.resize(value.len() * 4, 0)
                    }
                    Err(e) => return Err(DiffError::read("read xattrs of", path)(e)),
                }
            };
            value.truncate(n);
            if is_overlay {
                out.overlay.push((name, value));
            } else {
                if value.len() > limits.max_xattr_value {
                    return Err(DiffError::limit(
                        path,
                        "max_xattr_value",
                        limits.max_xattr_value as u64,
                    ));
                }
                out.carried.push((name, value));
            }
        }
        Ok(out)
    }

    /// Whether the overlay mark `mark` is set.
    pub(super) fn has(&self, mark: &str) -> bool {
        self.overlay.iter().any(|(n, _)| n == mark)
    }

    /// Whether the entry carries the opaque mark.
    pub(super) fn is_opaque(&self) -> bool {
        self.overlay
            .iter()
            .any(|(n, v)| n == OPAQUE_XATTR && marks_opaque(v))
    }
}
