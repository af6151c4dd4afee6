//! Resolves an image's `User` against the rootfs' own /etc/passwd and /etc/group.
//!
//! The rootfs comes from an untrusted image: both files are opened with `openat2` and
//! `RESOLVE_IN_ROOT`, so a symlinked `/etc/passwd` resolves inside the rootfs, never on the host.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};

use super::BundleError;

/// Largest passwd/group file we read; real ones are a few KiB.
const MAX_DB_BYTES: u64 = 4 << 20;

/// The numeric identity a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups: the primary group, then /etc/group memberships.
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd, used for a default `HOME`.
    pub home: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) inside `rootfs`.
/// A numeric uid missing from /etc/passwd runs with gid 0, as Docker does; a name that is
/// missing is an error.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, BundleError> {
    let spec = spec.trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = parse_passwd(&read_in_root(rootfs, "etc/passwd")?);
    let groups = parse_group(&read_in_root(rootfs, "etc/group")?);

    let (uid, mut gid, name, home) = if user_part.is_empty() {
        let root = passwd.iter().find(|e| e.uid == 0);
        (
            0,
            0,
            root.map(|e| e.name.clone()),
            root.map(|e| e.home.clone()),
        )
    } else if let Ok(uid) = user_part.parse::<u32>() {
        match passwd.iter().find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name.clone()), Some(e.home.clone())),
            None => (uid, 0, None, None),
        }
    } else {
        let e = passwd.iter().find(|e| e.name == user_part).ok_or_else(|| {
            BundleError::UnknownUser {
                user: user_part.to_owned(),
                rootfs: rootfs.to_owned(),
            }
        })?;
        (e.uid, e.gid, Some(e.name.clone()), Some(e.home.clone()))
    };

    if let Some(group) = group_part.filter(|g| !g.is_empty()) {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|g| g.name == group)
                    .ok_or_else(|| BundleError::UnknownGroup {
                        group: group.to_owned(),
                        rootfs: rootfs.to_owned(),
                    })?
                    .gid
            }
        };
    }

    // Like initgroups(3): the primary group first, then every group listing the user.
    let mut additional_gids = vec![gid];
    if let Some(name) = &name {
        for g in &groups {
            if g.members.iter().any(|m| m == name) && !additional_gids.contains(&g.gid) {
                additional_gids.push(g.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: home.filter(|h| h.starts_with('/')),
    })
}

/// Reads `rel` (relative to the rootfs) resolving every symlink as if `rootfs` were `/`.
/// A missing file reads as empty: minimal images often have no /etc/group.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<String, BundleError> {
    let io_err = |source| BundleError::ReadInRootfs {
        path: rootfs.join(rel),
        source,
    };
    let root = File::open(rootfs).map_err(io_err)?;
    let opened = openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    );
    let file = match opened {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Ok(String::new()),
        Err(e) => return Err(io_err(e.into())),
    };
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(BundleError::NotARegularFile {
            path: rootfs.join(rel),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_DB_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_DB_BYTES {
        return Err(BundleError::TooLarge {
            path: rootfs.join(rel),
            limit: MAX_DB_BYTES,
        });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("etc/group"), group).unwrap();
        dir
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\nstaff:x:50:alice,bob\nwheel:x:10:alice\n";

    #[test]
    fn names_and_numbers_resolve_with_supplementary_groups() {
        let r = rootfs(PASSWD, GROUP);
        let u = resolve_user(r.path(), "alice").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![1000, 50, 10]);
        assert_eq!(u.home.as_deref(), Some("/home/alice"));
        let u = resolve_user(r.path(), "1000:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(u.additional_gids, vec![50, 10]);
        let u = resolve_user(r.path(), "4242").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert_eq!(u.additional_gids, vec![0]);
        let u = resolve_user(r.path(), "").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.home.as_deref(), Some("/root"));
    }

    #[test]
    fn unknown_names_are_errors() {
        let r = rootfs(PASSWD, GROUP);
        assert!(matches!(
            resolve_user(r.path(), "mallory"),
            Err(BundleError::UnknownUser { .. })
        ));
        assert!(matches!(
            resolve_user(r.path(), "alice:nogroup"),
            Err(BundleError::UnknownGroup { .. })
        ));
    }

    #[test]
    fn absolute_symlink_resolves_inside_the_rootfs() {
        // /etc/passwd -> /etc/passwd.real must mean <rootfs>/etc/passwd.real, and a link to
        // the host's /etc/shadow-like file must not be read from the host.
        let r = rootfs("", GROUP);
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::fs::write(
            r.path().join("etc/passwd.real"),
            "bob:x:77:77::/b:/bin/sh\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd.real", r.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve_user(r.path(), "bob").unwrap().uid, 77);

        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/passwd", r.path().join("etc/passwd"))
            .unwrap();
        // Resolves to <rootfs>/etc/passwd itself (a loop back to the link) or nothing: never
        // the host's root entry.
        let res = resolve_user(r.path(), "root");
        assert!(res.is_err(), "host /etc/passwd must not be read: {res:?}");
    }
}
