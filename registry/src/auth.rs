//! Registry credentials, read where docker and podman keep them.
//!
//! Order: `REGISTRY_AUTH_FILE` (podman's variable), `$XDG_RUNTIME_DIR/containers/auth.json`,
//! then `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. In each file the `auths` map
//! is keyed by host, sometimes with a scheme and path (`https://index.docker.io/v1/`); entries
//! carry `auth` (base64 `user:password`) or `username` + `password`. Credential helpers
//! (`credsStore`, `credHelpers`) are not run.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::reference::{DOCKER_HUB, DOCKER_HUB_ENDPOINT};

/// A user name and password (or access token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name, safe to show.
    pub username: String,
    password: String,
}

impl Credentials {
    /// Wraps a user name and secret; the secret never appears in `Debug`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The secret, for the one place that builds an Authorization header.
    pub(crate) fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"[hidden]")
            .finish()
    }
}

/// The credential files to search, resolved once from the environment.
#[derive(Clone, Debug, Default)]
pub struct AuthFiles {
    /// Files in search order; missing files are skipped.
    pub files: Vec<PathBuf>,
}

impl AuthFiles {
    /// The files docker and podman would read for this process's environment.
    pub fn from_env() -> AuthFiles {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut files = Vec::new();
        if let Some(f) = var("REGISTRY_AUTH_FILE") {
            files.push(f);
        }
        if let Some(run) = var("XDG_RUNTIME_DIR") {
            files.push(run.join("containers/auth.json"));
        }
        match (var("DOCKER_CONFIG"), var("HOME")) {
            (Some(dir), _) => files.push(dir.join("config.json")),
            (None, Some(home)) => files.push(home.join(".docker/config.json")),
            (None, None) => {}
        }
        AuthFiles { files }
    }

    /// Credentials for `registry` (as named in the reference), from the first file that has
    /// an entry for it. A present but unreadable file is an error, not "no credentials".
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>> {
        for file in &self.files {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::AuthFileRead {
                        path: file.clone(),
                        source: e,
                    });
                }
            };
            if let Some(c) = parse_auth_file(file, &text, registry)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

fn parse_auth_file(path: &Path, text: &str, registry: &str) -> Result<Option<Credentials>> {
    let bad = |reason: String| Error::AuthFile {
        path: path.to_path_buf(),
        reason,
    };
    let file: AuthFile = serde_json::from_str(text).map_err(|source| Error::AuthFileSyntax {
        path: path.to_path_buf(),
        source,
    })?;
    let wanted = canonical_host(registry);
    for (key, entry) in &file.auths {
        if canonical_host(key) != wanted {
            continue;
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad(format!("auths.{key}.auth is not base64")))?;
            let text = String::from_utf8(raw)
                .map_err(|_| bad(format!("auths.{key}.auth is not UTF-8")))?;
            let (user, pass) = text
                .split_once(':')
                .ok_or_else(|| bad(format!("auths.{key}.auth is not user:password")))?;
            return Ok(Some(Credentials::new(user, pass)));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials::new(u.clone(), p.clone())));
        }
    }
    Ok(None)
}

/// `https://index.docker.io/v1/`, `index.docker.io`, `registry-1.docker.io` and `docker.io`
/// all mean Docker Hub; other keys lose their scheme and path.
fn canonical_host(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | DOCKER_HUB_ENDPOINT | DOCKER_HUB => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
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
    fn reads_docker_and_podman_files() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with:colons");
        let docker = write(
            dir.path(),
            "config.json",
            &format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{b64}"}},
                "127.0.0.1:5001": {{"username": "bob", "password": "pw"}}}}}}"#
            ),
        );
        let podman = write(
            dir.path(),
            "auth.json",
            r#"{"auths": {"127.0.0.1:5001": {"auth": "Y2Fyb2w6eA=="}}}"#,
        );
        let files = AuthFiles {
            files: vec![dir.path().join("missing.json"), docker.clone()],
        };
        let hub = files.lookup("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password()),
            ("alice", "s3cret:with:colons")
        );
        assert_eq!(
            files.lookup("127.0.0.1:5001").unwrap().unwrap().username,
            "bob"
        );
        assert_eq!(files.lookup("127.0.0.1:5002").unwrap(), None);
        let files = AuthFiles {
            files: vec![podman, docker],
        };
        assert_eq!(
            files.lookup("127.0.0.1:5001").unwrap().unwrap().username,
            "carol",
            "first file wins"
        );
    }

    #[test]
    fn malformed_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "config.json",
            r#"{"auths": {"h": {"auth": "!!"}}}"#,
        );
        let err = AuthFiles {
            files: vec![f.clone()],
        }
        .lookup("h")
        .unwrap_err();
        assert!(err.to_string().contains(&f.display().to_string()), "{err}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = Credentials::new("u", "topsecret");
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
