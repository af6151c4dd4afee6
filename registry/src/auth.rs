//! Registry credentials, read where docker and podman keep them.
//!
//! Order: `REGISTRY_AUTH_FILE` (podman's variable), `$XDG_RUNTIME_DIR/containers/auth.json`
//! (`/run/containers/<uid>/auth.json` without `XDG_RUNTIME_DIR`, as podman), then
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. In each file, as docker reads it: a
//! `credHelpers` entry for the registry, else `credsStore`, names a credential helper to ask
//! (see the `cred_helper` module); when there is none, or it has no credentials, the `auths` map
//! is used, keyed by host, sometimes with a scheme and path (`https://index.docker.io/v1/`);
//! entries carry `auth` (base64 `user:password`) or `username` + `password`.
//!
//! [`login_file`], [`store_login`] and [`remove_login`] write the file `dockless login` and
//! `logout` keep, as podman does: one `auths` entry changed, everything else kept.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::reference::{DOCKER_HUB, DOCKER_HUB_ENDPOINT};

/// A user name and password (or access token) for one registry, or an identity token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name, safe to show (`<token>` for an identity token, as docker writes it).
    pub username: String,
    password: String,
    identity: bool,
}

/// The user name docker gives an identity token.
const IDENTITY_TOKEN_USER: &str = "<token>";

impl Credentials {
    /// Wraps a user name and secret; the secret never appears in `Debug`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
            identity: false,
        }
    }

    /// An identity token (docker's `identitytoken`, an OAuth2 refresh token of the registry's
    /// token server): exchanged for an access token with `grant_type=refresh_token`.
    pub fn identity_token(token: impl Into<String>) -> Credentials {
        Credentials {
            username: IDENTITY_TOKEN_USER.to_string(),
            password: token.into(),
            identity: true,
        }
    }

    /// Whether this is an identity token rather than a user name and password.
    pub fn is_identity_token(&self) -> bool {
        self.identity
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
        // Podman's default file, also where `dockless login` writes without REGISTRY_AUTH_FILE.
        files.push(login_file_in(var("XDG_RUNTIME_DIR")));
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

/// The file `dockless login` writes and `logout` edits, as podman chooses it:
/// `REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`, else
/// `/run/containers/<uid>/auth.json`.
pub fn login_file() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("REGISTRY_AUTH_FILE").unwrap_or_else(|| login_file_in(var("XDG_RUNTIME_DIR")))
}

fn login_file_in(runtime_dir: Option<PathBuf>) -> PathBuf {
    match runtime_dir {
        Some(run) => run.join("containers/auth.json"),
        None => PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            rustix::process::geteuid().as_raw()
        )),
    }
}

/// Stores `credentials` for `registry` in `file` as podman does (`auths.<registry>.auth`,
/// base64 `user:password`), keeping every other entry and key; the file is replaced
/// atomically, `0600`, its folder created `0700`.
pub fn store_login(file: &Path, registry: &str, credentials: &Credentials) -> Result<()> {
    let mut doc = read_for_update(file)?;
    let auths = auths_of(file, &mut doc)?;
    let wanted = canonical_host(registry);
    auths.retain(|key, _| canonical_host(key) != wanted);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        credentials.username,
        credentials.password()
    ));
    auths.insert(registry.to_string(), serde_json::json!({ "auth": auth }));
    write_auth_file(file, &doc)
}

/// Removes `registry`'s entries from `file`'s `auths`, keeping everything else; `false` when
/// there was none (podman's "not logged in").
pub fn remove_login(file: &Path, registry: &str) -> Result<bool> {
    if !file.exists() {
        return Ok(false);
    }
    let mut doc = read_for_update(file)?;
    let auths = auths_of(file, &mut doc)?;
    let wanted = canonical_host(registry);
    let before = auths.len();
    auths.retain(|key, _| canonical_host(key) != wanted);
    if auths.len() == before {
        return Ok(false);
    }
    write_auth_file(file, &doc)?;
    Ok(true)
}

fn read_for_update(file: &Path) -> Result<serde_json::Value> {
    match std::fs::read_to_string(file) {
        Ok(text) if text.trim().is_empty() => Ok(serde_json::json!({})),
        Ok(text) => serde_json::from_str(&text).map_err(|source| Error::AuthFileSyntax {
            path: file.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(source) => Err(Error::AuthFileRead {
            path: file.to_path_buf(),
            source,
        }),
    }
}

fn auths_of<'a>(
    file: &Path,
    doc: &'a mut serde_json::Value,
) -> Result<&'a mut serde_json::Map<String, serde_json::Value>> {
    let bad = |reason: &str| Error::AuthFile {
        path: file.to_path_buf(),
        reason: reason.to_string(),
    };
    let root = doc
        .as_object_mut()
        .ok_or_else(|| bad("not a JSON object"))?;
    root.entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| bad("auths is not an object"))
}

fn write_auth_file(file: &Path, doc: &serde_json::Value) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let fail = |source| Error::AuthFileWrite {
        path: file.to_path_buf(),
        source,
    };
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    let mut text = serde_json::to_string_pretty(doc).unwrap_or_default();
    text.push('\n');
    tmp.write_all(text.as_bytes()).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(file).map_err(|e| fail(e.error))?;
    Ok(())
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
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
    // Docker asks a helper first: the registry's own (`credHelpers`), else the default store.
    let helper = file
        .cred_helpers
        .iter()
        .find(|(key, _)| canonical_host(key) == wanted)
        .map(|(_, name)| name)
        .or(file.creds_store.as_ref().filter(|s| !s.is_empty()));
    if let Some(name) = helper {
        let server = if wanted == DOCKER_HUB {
            DOCKER_HUB_SERVER_URL
        } else {
            registry
        };
        if let Some(c) = crate::cred_helper::get(path, name, server)? {
            return Ok(Some(c));
        }
    }
    for (key, entry) in &file.auths {
        if canonical_host(key) != wanted {
            continue;
        }
        // Docker's rule: an identity token, when there is one, is what the registry gets.
        if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::identity_token(token)));
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

/// The server URL docker gives credential helpers for Docker Hub.
const DOCKER_HUB_SERVER_URL: &str = "https://index.docker.io/v1/";

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
    fn login_entries_are_written_and_removed_keeping_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("containers/auth.json");
        let alice = Credentials::new("alice", "pw:1");
        store_login(&file, "127.0.0.1:5001", &alice).unwrap();
        std::fs::write(
            &file,
            std::fs::read_to_string(&file).unwrap().replacen(
                '{',
                r#"{"credHelpers": {"x.example": "ecr"},"#,
                1,
            ),
        )
        .unwrap();
        store_login(&file, "docker.io", &Credentials::new("bob", "b")).unwrap();
        // A second login replaces the entry, whatever form its key had.
        store_login(
            &file,
            "https://index.docker.io/v1/",
            &Credentials::new("carol", "c"),
        )
        .unwrap();
        let files = AuthFiles {
            files: vec![file.clone()],
        };
        assert_eq!(files.lookup("127.0.0.1:5001").unwrap(), Some(alice));
        assert_eq!(
            files.lookup("docker.io").unwrap().unwrap().username,
            "carol"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(doc["auths"].as_object().unwrap().len(), 2, "{doc}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(remove_login(&file, "docker.io").unwrap());
        assert!(!remove_login(&file, "docker.io").unwrap());
        assert!(!remove_login(&dir.path().join("none.json"), "docker.io").unwrap());
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(doc["credHelpers"]["x.example"], "ecr");
        assert!(doc["auths"]["127.0.0.1:5001"]["auth"].is_string());
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = Credentials::new("u", "topsecret");
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
