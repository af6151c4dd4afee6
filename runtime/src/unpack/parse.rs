//! The parser: tar entries -> [`Spec`]s, with the limits applied before anything is written.

use std::io::Read;

use tar::EntryType;

use super::Limits;
use super::error::EntryError;
use super::names::{Special, classify, clean};
use super::spec::{Kind, Meta, Spec};
use crate::overlay::xattr_carried;

/// Converts one tar entry; `Ok(None)` for entries that create nothing (a PAX global header,
/// or a name that denotes the root itself, reported through `root_entry`).
pub(crate) fn spec_of<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    limits: &Limits,
    dropped_xattrs: &mut u64,
    root_entry: &mut bool,
) -> Result<Option<Spec>, EntryError> {
    let entry_type = entry.header().entry_type();
    if entry_type.is_pax_global_extensions() {
        return Ok(None);
    }
    let raw = entry.path_bytes().into_owned();
    let raw_name = String::from_utf8_lossy(&raw).into_owned();

    let mut xattrs = Vec::new();
    let mut pax_mtime = None;
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(EntryError::io("read pax extensions"))?
    {
        for ext in exts {
            let ext = ext.map_err(EntryError::io("read pax extensions"))?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if !xattr_carried(name) {
                    *dropped_xattrs += 1;
                    continue;
                }
                if name.len() > 255 || ext.value_bytes().len() > limits.max_xattr_value {
                    return Err(EntryError::Invalid(format!(
                        "extended attribute {:?} is over the size limit",
                        String::from_utf8_lossy(name)
                    )));
                }
                if name.contains(&0) {
                    return Err(EntryError::Invalid(
                        "extended attribute name contains NUL".into(),
                    ));
                }
                xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                if xattrs.len() > limits.max_xattrs_per_entry {
                    return Err(EntryError::Invalid(
                        "too many extended attributes on one entry".into(),
                    ));
                }
            } else if key == b"mtime" {
                pax_mtime = parse_pax_time(ext.value_bytes());
            }
        }
    }

    if limits.refuse_escapes && climbs(&raw, 0) {
        return Err(EntryError::Invalid(format!(
            "the name {raw_name:?} leaves the archive's folder"
        )));
    }
    let Some(path) = clean(&raw)? else {
        *root_entry = true;
        return Ok(None);
    };

    let header = entry.header();
    let special = classify(&path)?;
    if limits.refuse_escapes && special != Special::None {
        return Err(EntryError::Invalid(format!(
            "{raw_name:?} is a whiteout: only image layers may carry one"
        )));
    }
    let (path, kind) = match special {
        Special::Opaque(dir) => (dir, Kind::Opaque),
        Special::Whiteout(victim) => (victim, Kind::Whiteout),
        Special::None => {
            let kind = match entry_type {
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    // Old (v7) archives mark directories only by a trailing slash.
                    if raw.ends_with(b"/") && entry_type == EntryType::Regular {
                        Kind::Dir
                    } else {
                        let size = entry.size();
                        let sparse = entry_type == EntryType::GNUSparse;
                        let max = if sparse {
                            limits.max_sparse_size
                        } else {
                            limits.max_file_size
                        };
                        if size > max {
                            return Err(EntryError::Invalid(format!(
                                "file size {size} is over the limit of {max} bytes"
                            )));
                        }
                        Kind::File { size, sparse }
                    }
                }
                EntryType::Directory => Kind::Dir,
                EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| EntryError::Invalid("symlink without a target".into()))?
                        .into_owned();
                    if target.is_empty()
                        || target.contains(&0)
                        || target.len() > super::names::MAX_PATH
                    {
                        return Err(EntryError::Invalid("invalid symlink target".into()));
                    }
                    // The link's own folder is where a relative target starts.
                    let depth = path.iter().filter(|&&b| b == b'/').count();
                    if limits.refuse_escapes && climbs(&target, depth) {
                        return Err(EntryError::Invalid(format!(
                            "the symbolic link {raw_name:?} -> {:?} points out of the archive's \
                             folder",
                            String::from_utf8_lossy(&target)
                        )));
                    }
                    Kind::Symlink(target)
                }
                EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| EntryError::Invalid("hardlink without a target".into()))?;
                    if limits.refuse_escapes && climbs(&target, 0) {
                        return Err(EntryError::Invalid(format!(
                            "the hard link {raw_name:?} names a file out of the archive's folder"
                        )));
                    }
                    match clean(&target)? {
                        Some(t) => Kind::Hardlink(t),
                        None => {
                            return Err(EntryError::Invalid(
                                "hardlink to the root directory".into(),
                            ));
                        }
                    }
                }
                EntryType::Char | EntryType::Block => {
                    let major = header
                        .device_major()
                        .map_err(EntryError::io("read device major"))?
                        .ok_or_else(|| EntryError::Invalid("device without numbers".into()))?;
                    let minor = header
                        .device_minor()
                        .map_err(EntryError::io("read device minor"))?
                        .ok_or_else(|| EntryError::Invalid("device without numbers".into()))?;
                    if entry_type == EntryType::Char {
                        Kind::Char(major, minor)
                    } else {
                        Kind::Block(major, minor)
                    }
                }
                EntryType::Fifo => Kind::Fifo,
                other => {
                    return Err(EntryError::Invalid(format!(
                        "unsupported entry type {:?}",
                        other.as_byte() as char
                    )));
                }
            };
            (path, kind)
        }
    };

    let mode = header.mode().map_err(EntryError::io("read mode"))? & 0o7777;
    let uid = id(header.uid().map_err(EntryError::io("read uid"))?, "uid")?;
    let gid = id(header.gid().map_err(EntryError::io("read gid"))?, "gid")?;
    let (uid, gid) = match limits.id_shift {
        None => (uid, gid),
        Some(shift) => {
            let host = |id: u32| {
                (id < shift.count)
                    .then(|| shift.base.checked_add(id))
                    .flatten()
            };
            match (host(uid), host(gid)) {
                (Some(u), Some(g)) => (u, g),
                _ => return Err(EntryError::UnmappedOwner { uid, gid }),
            }
        }
    };
    let mtime = match pax_mtime {
        Some(t) => t,
        None => {
            let secs = header.mtime().map_err(EntryError::io("read mtime"))?;
            (
                i64::try_from(secs)
                    .map_err(|_| EntryError::Invalid("mtime out of range".into()))?,
                0,
            )
        }
    };
    Ok(Some(Spec {
        raw_name,
        path,
        kind,
        meta: Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        },
    }))
}

/// Owner ids must fit Linux's 32-bit ids; `u32::MAX` is "unchanged" for chown, so it is refused.
/// Whether `path`, read from a folder `depth` levels below the root, is absolute or climbs
/// above the root with `..` (lexically, as a link would be followed).
fn climbs(path: &[u8], depth: usize) -> bool {
    if path.starts_with(b"/") {
        return true;
    }
    let mut depth = depth as isize;
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

fn id(raw: u64, what: &str) -> Result<u32, EntryError> {
    match u32::try_from(raw) {
        Ok(v) if v != u32::MAX => Ok(v),
        _ => Err(EntryError::Invalid(format!("{what} {raw} out of range"))),
    }
}

/// A PAX time `seconds[.fraction]`; `None` if malformed (the header's value is used instead).
fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = match text.split_once('.') {
        Some((s, f)) => (s, f),
        None => (text, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    if secs < 0 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    Some((secs, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_nanoseconds() {
        assert_eq!(
            parse_pax_time(b"1453146164.953123768"),
            Some((1453146164, 953123768))
        );
        assert_eq!(
            parse_pax_time(b"1453251915.24892486"),
            Some((1453251915, 248924860))
        );
        assert_eq!(parse_pax_time(b"1000000000"), Some((1000000000, 0)));
        assert_eq!(parse_pax_time(b"-5.1"), None);
        assert_eq!(parse_pax_time(b"abc"), None);
    }

    #[test]
    fn ids_must_fit_32_bits() {
        assert_eq!(id(4294967294, "uid").unwrap(), 4294967294);
        assert!(id(4294967295, "uid").is_err());
        assert!(id(1 << 40, "uid").is_err());
    }

    #[test]
    fn climbing_names_and_link_targets_are_recognised() {
        for (path, depth, out) in [
            (&b"a/b"[..], 0, false),
            (b"a/../b", 0, false),
            (b"../b", 0, true),
            (b"a/../../b", 0, true),
            (b"/etc", 0, true),
            (b"../sibling", 1, false),
            (b"../../x", 1, true),
            (b"./././x", 0, false),
        ] {
            assert_eq!(
                climbs(path, depth),
                out,
                "{}",
                String::from_utf8_lossy(path)
            );
        }
    }
}
