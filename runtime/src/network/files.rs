//! The name-resolution files of a bridged container: its `/etc/resolv.conf` lists the host's
//! resolvers (reached through pasta like any other outside address), its `/etc/hosts` names
//! `localhost` and the container's hostname.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::NetworkError;

/// The host's resolver configuration.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where systemd-resolved lists its real upstream servers (its stub at 127.0.0.53 is on the
/// host's loopback, which a bridged container cannot reach).
const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

/// The directory beside `rootfs` that holds a bridged run's `resolv.conf` and `hosts`
/// (`<rootfs>.network`): inside the caller's per-run directory, so it is removed with it and
/// is reachable wherever the rootfs is (a `--userns` range passes the run directory).
pub fn files_dir(rootfs: &Path) -> PathBuf {
    let mut name = rootfs.file_name().unwrap_or_default().to_os_string();
    name.push(".network");
    rootfs.with_file_name(name)
}

/// The container's `resolv.conf` from the host's (`host`) and, when the host points at a
/// resolver on its own loopback (a local stub), the stub's upstreams (`upstreams`, in
/// resolv.conf form). Loopback resolvers are left out: the container's loopback is its own.
/// `search`, `domain` and `options` lines are kept.
pub fn resolv_conf_for_container(host: &str, upstreams: Option<&str>) -> String {
    let mut out = String::from("# written by dockless for --network bridge\n");
    let mut loopback = false;
    for line in host.lines().map(str::trim) {
        match nameserver(line) {
            Some(Some(addr)) if addr.is_loopback() => loopback = true,
            Some(Some(_)) => out.push_str(&format!("{line}\n")),
            Some(None) => {}
            None => {
                if ["search", "domain", "options"]
                    .iter()
                    .any(|k| line.split_whitespace().next() == Some(k))
                {
                    out.push_str(&format!("{line}\n"));
                }
            }
        }
    }
    if loopback && let Some(upstreams) = upstreams {
        for line in upstreams.lines().map(str::trim) {
            if let Some(Some(addr)) = nameserver(line)
                && !addr.is_loopback()
            {
                out.push_str(&format!("nameserver {addr}\n"));
            }
        }
    }
    out
}

/// The nameserver addresses of a resolv.conf.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| nameserver(l.trim()).flatten())
        .collect()
}

/// `Some(address)` for a `nameserver` line (`Some(None)` if its address does not parse, as
/// with an IPv6 zone), `None` for any other line.
fn nameserver(line: &str) -> Option<Option<IpAddr>> {
    let mut words = line.split_whitespace();
    (words.next() == Some("nameserver")).then(|| words.next().and_then(|a| a.parse().ok()))
}

/// Writes `resolv.conf` and `hosts` for a bridged run of `rootfs` into [`files_dir`] (0755
/// directory, 0644 files: the container's root may be an unprivileged `--userns` range) and
/// returns the directory.
pub fn write_files(rootfs: &Path, hostname: &str) -> Result<PathBuf, NetworkError> {
    let dir = files_dir(rootfs);
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| NetworkError::Files { path, source }
    };
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o755)
        .create(&dir)
        .map_err(err(&dir))?;
    let host = std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
    let upstreams = std::fs::read_to_string(RESOLVED_UPSTREAMS).ok();
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    for (name, text) in [
        (
            "resolv.conf",
            resolv_conf_for_container(&host, upstreams.as_deref()),
        ),
        ("hosts", hosts),
    ] {
        let path = dir.join(name);
        write_public(&path, text.as_bytes()).map_err(err(&path))?;
    }
    Ok(dir)
}

/// Creates `path` (which must not exist: never through a planted link) readable by all.
fn write_public(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    // Whatever the umask.
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_resolvers_are_kept_and_loopback_ones_dropped() {
        let host = "# comment\nnameserver 10.0.0.2\nnameserver 127.0.0.1\nnameserver ::1\n\
                    search example.com\noptions ndots:2\nsortlist 1.2.3.4\n";
        let out = resolv_conf_for_container(host, None);
        assert_eq!(
            out.lines().skip(1).collect::<Vec<_>>(),
            [
                "nameserver 10.0.0.2",
                "search example.com",
                "options ndots:2"
            ]
        );
    }

    #[test]
    fn a_local_stub_is_replaced_by_its_upstreams() {
        let host = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let upstreams = "# systemd\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n\
                         nameserver 127.0.0.1\n";
        let out = resolv_conf_for_container(host, Some(upstreams));
        assert_eq!(
            out.lines().skip(1).collect::<Vec<_>>(),
            [
                "options edns0 trust-ad",
                "search lan",
                "nameserver 192.0.2.53",
                "nameserver 2001:db8::53"
            ]
        );
        // Upstreams are only consulted for a host that uses a local stub.
        let direct = resolv_conf_for_container("nameserver 192.0.2.1\n", Some(upstreams));
        assert!(!direct.contains("192.0.2.53"));
    }

    #[test]
    fn files_sit_beside_the_rootfs() {
        assert_eq!(
            files_dir(Path::new("/x/run/rootfs")),
            Path::new("/x/run/rootfs.network")
        );
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let written = write_files(&rootfs, "box").unwrap();
        let hosts = std::fs::read_to_string(written.join("hosts")).unwrap();
        assert!(hosts.contains("127.0.1.1\tbox"));
        assert!(written.join("resolv.conf").is_file());
        // Never over an existing file (a link planted there would be followed).
        assert!(write_files(&rootfs, "box").is_err());
    }
}
