//! The id mapping of a rootless session: the user as 0, its subordinate ranges from 1 on.

use std::path::{Path, PathBuf};

use super::error::UsernsError;

/// One contiguous piece of a mapping, in `uid_map` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id on the host.
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

/// The uid and gid mappings of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    /// For `newuidmap`.
    pub uids: Vec<IdRange>,
    /// For `newgidmap`.
    pub gids: Vec<IdRange>,
}

impl IdMap {
    /// How many uids exist inside (image owners at or above this cannot be represented).
    pub fn uid_count(&self) -> u64 {
        self.uids.iter().map(|r| u64::from(r.count)).sum()
    }
}

/// Where the subordinate ranges are listed (configurable for tests of the parser only).
#[derive(Debug, Clone)]
pub struct SubIdFiles {
    /// Normally `/etc/subuid`.
    pub subuid: PathBuf,
    /// Normally `/etc/subgid`.
    pub subgid: PathBuf,
}

impl Default for SubIdFiles {
    fn default() -> Self {
        Self {
            subuid: PathBuf::from("/etc/subuid"),
            subgid: PathBuf::from("/etc/subgid"),
        }
    }
}

/// The mapping rootless podman uses: 0 is the calling user (and its primary group), 1..N its
/// subordinate ranges in file order.
pub fn current_user_map(files: &SubIdFiles) -> Result<IdMap, UsernsError> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    let uids = ranges_for(&files.subuid, name.as_deref(), uid, "uid")?;
    let gids = ranges_for(&files.subgid, name.as_deref(), uid, "gid")?;
    Ok(IdMap {
        uids: with_self(uid, uids),
        gids: with_self(gid, gids),
    })
}

/// The first subordinate range listed for `name` in both files, as one shift for uids and
/// gids (root's `--userns` maps a container's ids there). At most 65536 ids are used.
pub fn named_range(files: &SubIdFiles, name: &str) -> Result<crate::unpack::IdShift, UsernsError> {
    let uids = ranges_for(&files.subuid, Some(name), u32::MAX, "uid")?;
    let gids = ranges_for(&files.subgid, Some(name), u32::MAX, "gid")?;
    let (base, ucount) = uids[0];
    let (gbase, gcount) = gids[0];
    let count = ucount.min(gcount).min(65_536);
    // The last id must stay below 2^32-1 (the kernel's "no id").
    let fits = base.checked_add(count).is_some_and(|end| end < u32::MAX);
    if base != gbase || base == 0 || !fits {
        return Err(UsernsError::MismatchedRanges {
            name: name.to_owned(),
        });
    }
    Ok(crate::unpack::IdShift { base, count })
}

fn with_self(id: u32, subordinate: Vec<(u32, u32)>) -> Vec<IdRange> {
    let mut out = vec![IdRange {
        inside: 0,
        outside: id,
        count: 1,
    }];
    let mut next = 1u32;
    for (start, count) in subordinate {
        let Some(end) = next.checked_add(count) else {
            break;
        };
        out.push(IdRange {
            inside: next,
            outside: start,
            count,
        });
        next = end;
    }
    out
}

/// The ranges listed for `name` or `uid` in `path` (shadow-utils accepts either key).
fn ranges_for(
    path: &Path,
    name: Option<&str>,
    uid: u32,
    kind: &'static str,
) -> Result<Vec<(u32, u32)>, UsernsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(UsernsError::ReadSubIds {
                path: path.to_owned(),
                source,
            });
        }
    };
    let uid_text = uid.to_string();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || UsernsError::BadSubIdLine {
            path: path.to_owned(),
            line: i + 1,
        };
        // Another user's line is not ours to judge, malformed or not (as shadow-utils).
        let owner = line.split(':').next().unwrap_or_default();
        if Some(owner) != name && owner != uid_text {
            continue;
        }
        let mut fields = line.split(':').skip(1);
        let (Some(start), Some(count), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad());
        };
        let start: u32 = start.parse().map_err(|_| bad())?;
        let count: u32 = count.parse().map_err(|_| bad())?;
        if count > 0 {
            out.push((start, count));
        }
    }
    if out.is_empty() {
        return Err(UsernsError::NoSubordinateIds {
            user: name.map_or_else(|| uid_text.clone(), str::to_owned),
            uid,
            kind,
            file: path.to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn ranges_by_name_or_uid_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "subuid",
            "# comment\nother:1:5\nalice:100000:65536\n\n1001:300000:10\n",
        );
        let r = ranges_for(&p, Some("alice"), 1001, "uid").unwrap();
        assert_eq!(r, vec![(100_000, 65_536), (300_000, 10)]);
        let map = with_self(1001, r);
        assert_eq!(
            map,
            vec![
                IdRange {
                    inside: 0,
                    outside: 1001,
                    count: 1
                },
                IdRange {
                    inside: 1,
                    outside: 100_000,
                    count: 65_536
                },
                IdRange {
                    inside: 65_537,
                    outside: 300_000,
                    count: 10
                },
            ]
        );
    }

    #[test]
    fn a_user_without_ranges_is_told_what_to_add() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "subuid", "bob:100000:65536\n");
        let err = ranges_for(&p, Some("alice"), 1001, "uid").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"alice\"") && text.contains("usermod --add-subuids"),
            "{text}"
        );
        let missing = ranges_for(&dir.path().join("absent"), Some("alice"), 1001, "gid");
        assert!(matches!(
            missing,
            Err(UsernsError::NoSubordinateIds { kind: "gid", .. })
        ));
    }

    #[test]
    fn malformed_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "subgid", "alice:100000\n");
        let err = ranges_for(&p, Some("alice"), 1001, "gid").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
