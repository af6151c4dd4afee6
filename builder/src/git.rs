//! The repository through the git CLI: resolve a ref to a commit, fetch that one commit into a
//! private bare repository, list its tree and stream its blobs.
//!
//! Nothing is checked out: the code layer is written from git's objects, so host umask, file
//! times or a symlink in the worktree can never change or leak into the layer. Credentials go
//! to git through a credential helper that reads them from the child's environment, never
//! through the command line or the URL; every message git prints is scrubbed of them.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::error::GitError;
use crate::spec::Secret;

/// git asks this helper for credentials; it prints the ones of this process's environment and
/// nothing when there are none (git then fails instead of prompting). It is configured for
/// the repository's own scheme, host and port only (`credential.<url>.helper`): a redirect to
/// another host gets nothing.
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get || exit 0; \
test -n \"${DOCKLESS_GIT_USERNAME-}\" || exit 0; \
printf 'username=%s\\npassword=%s\\n' \"$DOCKLESS_GIT_USERNAME\" \"${DOCKLESS_GIT_PASSWORD-}\"; }; f";

const REDACTED: &str = "[redacted]";

/// A repository as git should reach it, with the credentials to use.
pub struct Remote {
    /// What git gets: the URL, or the local path made absolute.
    location: String,
    username: Option<String>,
    password: Option<Secret>,
    /// Strings that must never be shown: the password, raw and percent-encoded, and any
    /// password embedded in the URL.
    secrets: Vec<String>,
}

/// One commit fetched into a private bare repository (removed when dropped).
#[derive(Debug)]
pub struct Fetched {
    dir: tempfile::TempDir,
    commit: String,
}

/// One entry of the commit's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Git's mode: 0o40000 tree, 0o100644 / 0o100755 file, 0o120000 symlink, 0o160000 submodule.
    pub mode: u32,
    /// The object id.
    pub oid: String,
    /// The path in the repository (bytes, as git stores it).
    pub path: Vec<u8>,
}

impl Remote {
    /// `repository` is an URL (`https://`, `ssh://`, `file://`, scp-like `git@host:path`) or a
    /// local path, which is made absolute against the current directory.
    pub fn new(
        repository: &str,
        username: Option<String>,
        password: Option<Secret>,
    ) -> Result<Remote, GitError> {
        let location = if looks_remote(repository) {
            repository.to_owned()
        } else {
            std::path::absolute(repository)
                .map_err(|source| GitError::Io {
                    op: "resolve the repository path",
                    path: PathBuf::from(repository),
                    source,
                })?
                .to_string_lossy()
                .into_owned()
        };
        let mut secrets = Vec::new();
        if let Some(p) = password
            .as_ref()
            .map(Secret::expose)
            .filter(|p| !p.is_empty())
        {
            secrets.push(p.to_owned());
            let encoded = percent_encode(p);
            if encoded != p {
                secrets.push(encoded);
            }
        }
        let embedded = url_password(&location).map(str::to_owned);
        if embedded.is_none() && is_http(&location) && url_userinfo(&location).is_some() {
            // A token given as the user name (`https://<token>@host/...`) is a credential
            // too: it would be on git's command line and in every message.
            let userinfo = url_userinfo(&location).unwrap_or_default().to_owned();
            return Err(GitError::PasswordInUrl {
                repository: location.replace(&format!("{userinfo}@"), "[redacted]@"),
            });
        }
        let remote = Remote {
            location,
            username,
            password,
            secrets: secrets.into_iter().chain(embedded.clone()).collect(),
        };
        if embedded.is_some() {
            // It would be on git's command line, visible to every user of the host.
            return Err(GitError::PasswordInUrl {
                repository: remote.display(),
            });
        }
        if remote.password.is_some() && !is_http(&remote.location) {
            return Err(GitError::PasswordNotHttp {
                repository: remote.display(),
            });
        }
        if remote.password.is_some() && !is_https_or_loopback(&remote.location) {
            return Err(GitError::PasswordInClear {
                repository: remote.display(),
            });
        }
        Ok(remote)
    }

    /// The repository as messages show it: any password in the URL removed.
    pub fn display(&self) -> String {
        self.redact(&self.location)
    }

    /// Replaces every credential in `text`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), REDACTED);
        }
        out
    }

    /// Whether `reference` is a full commit id, which [`Remote::resolve`] takes without asking
    /// the remote (a cache hit on it must still be checked with a fetch).
    pub fn is_pinned_id(&self, reference: &str) -> bool {
        is_full_commit_id(reference)
    }

    /// Resolves `reference` to a commit id: a full 40-hex id is taken as it is (the fetch
    /// checks it); otherwise a tag, then a branch, then a full ref name, as the remote
    /// advertises them now (annotated tags peeled to their commit, whichever way they are
    /// named), so a moved tag or branch is seen at once.
    pub fn resolve(&self, reference: &str) -> Result<String, GitError> {
        if is_full_commit_id(reference) {
            return Ok(reference.to_ascii_lowercase());
        }
        let out = self
            .git(None)
            .args(["ls-remote", "--", &self.location])
            .output()
            .map_err(GitError::Spawn)?;
        if !out.status.success() {
            return Err(GitError::Unreachable {
                repository: self.display(),
                detail: self.detail(&out.stderr),
            });
        }
        let listing = String::from_utf8_lossy(&out.stdout);
        let refs: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
        let wanted = [
            format!("refs/tags/{reference}^{{}}"),
            format!("refs/tags/{reference}"),
            format!("refs/heads/{reference}"),
            format!("{reference}^{{}}"),
            reference.to_owned(),
        ];
        for name in &wanted {
            if let Some((id, _)) = refs.iter().find(|(_, r)| r == name) {
                if !is_full_commit_id(id) {
                    return Err(GitError::Output {
                        command: "ls-remote",
                        detail: format!("{id:?} is not a commit id"),
                    });
                }
                return Ok(id.to_ascii_lowercase());
            }
        }
        Err(GitError::NoSuchRef {
            repository: self.display(),
            reference: reference.to_owned(),
        })
    }

    /// Fetches `commit` alone (depth 1) into a new bare repository below `scratch`.
    pub fn fetch(&self, commit: &str, scratch: &Path) -> Result<Fetched, GitError> {
        let dir = tempfile::Builder::new()
            .prefix("git-")
            .tempdir_in(scratch)
            .map_err(|source| GitError::Io {
                op: "create a temp directory in",
                path: scratch.to_path_buf(),
                source,
            })?;
        let mut fetched = Fetched {
            dir,
            commit: commit.to_owned(),
        };
        fetched.local("init", &["init", "--quiet", "--bare"])?;
        let out = self
            .git(Some(fetched.dir.path()))
            // fsck: a malformed tree (duplicate names, a path that is both a link and a
            // directory) is refused before it can become a layer.
            .args(["-c", "transfer.fsckObjects=true"])
            .args(["fetch", "--quiet", "--depth", "1", "--no-tags", "--"])
            .args([&self.location, commit])
            .output()
            .map_err(GitError::Spawn)?;
        if !out.status.success() {
            return Err(GitError::Fetch {
                repository: self.display(),
                commit: commit.to_owned(),
                detail: self.detail(&out.stderr),
            });
        }
        // A tag object's id (given pinned) names its commit from here on.
        let peeled = fetched.local(
            "rev-parse",
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{commit}^{{commit}}"),
            ],
        )?;
        fetched.commit = String::from_utf8_lossy(&peeled).trim().to_owned();
        Ok(fetched)
    }

    /// A git command with credentials in its environment only, prompts off and every
    /// configured helper replaced by ours.
    fn git(&self, dir: Option<&Path>) -> Command {
        let mut cmd = base_git(dir);
        cmd.args(["-c", "credential.helper="]);
        if let Some(scope) = credential_scope(&self.location) {
            cmd.arg("-c")
                .arg(format!("credential.{scope}.helper={CREDENTIAL_HELPER}"));
        }
        cmd.args([
            "-c",
            "http.lowSpeedLimit=1000",
            "-c",
            "http.lowSpeedTime=60",
        ]);
        match (&self.username, &self.password) {
            (Some(user), password) => {
                cmd.env("DOCKLESS_GIT_USERNAME", user).env(
                    "DOCKLESS_GIT_PASSWORD",
                    password.as_ref().map_or("", Secret::expose),
                );
            }
            (None, _) => {
                cmd.env_remove("DOCKLESS_GIT_USERNAME")
                    .env_remove("DOCKLESS_GIT_PASSWORD");
            }
        }
        if !is_http(&self.location) && looks_remote(&self.location) && !user_chose_ssh() {
            // Fail instead of asking for a host key or a passphrase on a terminal (unless the
            // user chose an ssh command, e.g. with a deploy key: theirs is kept).
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        cmd
    }

    fn detail(&self, stderr: &[u8]) -> String {
        self.redact(String::from_utf8_lossy(stderr).trim())
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("location", &self.display())
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

impl Fetched {
    /// The fetched commit id.
    pub fn commit(&self) -> &str {
        &self.commit
    }

    /// The committer time (Unix seconds): the mtime of every file in the code layer.
    pub fn commit_time(&self) -> Result<i64, GitError> {
        let out = self.local("show", &["show", "-s", "--format=%ct", &self.commit])?;
        let text = String::from_utf8_lossy(&out);
        text.trim().parse().map_err(|_| GitError::Output {
            command: "show",
            detail: format!("{:?} is not a time", text.trim()),
        })
    }

    /// Every entry of the commit's tree, directories included, in byte order of the path.
    pub fn tree(&self) -> Result<Vec<TreeEntry>, GitError> {
        let out = self.local(
            "ls-tree",
            &["ls-tree", "-r", "-t", "-z", "--full-tree", &self.commit],
        )?;
        let mut entries = Vec::new();
        for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            entries.push(parse_tree_record(record)?);
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// A reader of blobs by id (`git cat-file --batch`, one process for all of them).
    pub fn blobs(&self) -> Result<BlobReader, GitError> {
        let mut child = base_git(Some(self.dir.path()))
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(GitError::Spawn)?;
        let input = child.stdin.take().expect("stdin is piped");
        let output = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(BlobReader {
            child,
            input: Some(input),
            output,
            unread: 0,
        })
    }

    fn local(&self, command: &'static str, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let out = base_git(Some(self.dir.path()))
            .args(args)
            .output()
            .map_err(GitError::Spawn)?;
        if !out.status.success() {
            return Err(GitError::Local {
                command,
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(out.stdout)
    }
}

/// Streams blobs out of one `git cat-file --batch` process.
pub struct BlobReader {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
    /// Bytes of the previous answer not read yet: the rest of its body and the newline
    /// cat-file puts after every body (an empty blob's included), skipped by the next `open`.
    unread: u64,
}

impl BlobReader {
    /// Asks for blob `oid`; returns its size and a reader of exactly that many bytes (whatever
    /// of it is left unread is skipped by the next call).
    pub fn open(&mut self, oid: &str) -> Result<(u64, impl Read + '_), GitError> {
        let io = |source| GitError::Io {
            op: "talk to git cat-file for",
            path: PathBuf::from(oid),
            source,
        };
        if self.unread > 0 {
            let want = std::mem::take(&mut self.unread);
            let skipped = std::io::copy(&mut (&mut self.output).take(want), &mut std::io::sink())
                .map_err(io)?;
            if skipped != want {
                return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
        let input = self.input.as_mut().expect("open before drop");
        writeln!(input, "{oid}").map_err(io)?;
        input.flush().map_err(io)?;
        let mut header = String::new();
        self.output.read_line(&mut header).map_err(io)?;
        let mut fields = header.split_whitespace();
        let (Some(_), Some("blob"), Some(size)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(GitError::Output {
                command: "cat-file",
                detail: format!("{:?} for blob {oid}", header.trim()),
            });
        };
        let size: u64 = size.parse().map_err(|_| GitError::Output {
            command: "cat-file",
            detail: format!("size {size:?} for blob {oid}"),
        })?;
        self.unread = size + 1;
        Ok((
            size,
            BlobBody {
                inner: &mut self.output,
                unread: &mut self.unread,
            },
        ))
    }
}

impl Drop for BlobReader {
    fn drop(&mut self) {
        drop(self.input.take()); // EOF: cat-file exits
        let _ = self.child.wait();
    }
}

/// The body of one blob; the newline cat-file puts after it stays in [`BlobReader::unread`].
struct BlobBody<'a> {
    inner: &'a mut BufReader<ChildStdout>,
    /// Body bytes left plus the trailing newline.
    unread: &'a mut u64,
}

impl Read for BlobBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.unread.saturating_sub(1);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        *self.unread -= n as u64;
        Ok(n)
    }
}

/// A git command that reads no user or system configuration that could change what we get
/// (hooks, `insteadOf` rewrites stay the user's own: only transports are pinned).
fn base_git(dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    cmd.args(["-c", "protocol.ext.allow=never"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .stdin(Stdio::null());
    cmd
}

fn parse_tree_record(record: &[u8]) -> Result<TreeEntry, GitError> {
    let bad = || GitError::Output {
        command: "ls-tree",
        detail: format!("{:?}", String::from_utf8_lossy(record)),
    };
    let tab = record.iter().position(|b| *b == b'\t').ok_or_else(bad)?;
    let meta = std::str::from_utf8(&record[..tab]).map_err(|_| bad())?;
    let mut fields = meta.split(' ');
    let (Some(mode), Some(_kind), Some(oid)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(bad());
    };
    Ok(TreeEntry {
        mode: u32::from_str_radix(mode, 8).map_err(|_| bad())?,
        oid: oid.to_owned(),
        path: record[tab + 1..].to_vec(),
    })
}

/// A full sha1 commit id (40 hex); sha256 repositories (64 hex) as well.
fn is_full_commit_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `repository` is an URL (`scheme://...` or scp-like `[user@]host:path`, a colon
/// before any slash) rather than a local path.
pub fn looks_remote(repository: &str) -> bool {
    if repository.contains("://") {
        return true;
    }
    match (repository.find(':'), repository.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Whether git talks HTTP(S) to `location`, the only transport our credential helper serves.
fn is_http(location: &str) -> bool {
    let lower = location.to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// Whether the user set an ssh command for git (environment or `core.sshCommand`).
fn user_chose_ssh() -> bool {
    std::env::var_os("GIT_SSH_COMMAND").is_some()
        || std::env::var_os("GIT_SSH").is_some()
        || Command::new("git")
            .args(["config", "--get", "core.sshCommand"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
}

/// `scheme://host[:port]` of an http(s) URL: where the credential helper may answer.
fn credential_scope(url: &str) -> Option<String> {
    if !is_http(url) {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(format!("{}://{host}", scheme.to_ascii_lowercase()))
}

/// Whether a password may travel to `url`: over https, or plain http to this host only.
fn is_https_or_loopback(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return true;
    }
    let Some(scope) = credential_scope(&lower) else {
        return false;
    };
    let host = scope.trim_start_matches("http://");
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']').map(|(h, _)| h))
        .unwrap_or_else(|| host.rsplit_once(':').map_or(host, |(h, _)| h));
    // An address, not a name that merely starts like one (`127.0.0.1.nip.io`).
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The user information of `scheme://userinfo@host/...`, if any.
fn url_userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    authority
        .rsplit_once('@')
        .map(|(u, _)| u)
        .filter(|u| !u.is_empty())
}

/// The password of `scheme://user:password@host/...`, if the URL carries one.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::git;

    #[test]
    fn annotated_tags_resolve_to_their_commit_however_named() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("r");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
        git(&repo, &["tag", "-a", "-m", "release", "v3"]);
        let commit = git(&repo, &["rev-parse", "HEAD"]);
        let tag_object = git(&repo, &["rev-parse", "v3"]);
        assert_ne!(commit, tag_object);
        let remote = Remote::new(repo.to_str().unwrap(), None, None).unwrap();
        assert_eq!(remote.resolve("v3").unwrap(), commit);
        assert_eq!(remote.resolve("refs/tags/v3").unwrap(), commit);
        // A tag object's id given as it is: the fetch names its commit.
        let scratch = tmp.path().join("s");
        std::fs::create_dir(&scratch).unwrap();
        let fetched = remote
            .fetch(&remote.resolve(&tag_object).unwrap(), &scratch)
            .unwrap();
        assert_eq!(fetched.commit(), commit);
        assert_eq!(fetched.commit_time().unwrap(), 1_700_000_000);
    }

    #[test]
    fn credentials_in_urls_and_in_clear_are_refused() {
        let token = Remote::new("https://ghp_secret@github.com/a/b.git", None, None).unwrap_err();
        assert!(matches!(token, GitError::PasswordInUrl { .. }), "{token}");
        assert!(!token.to_string().contains("ghp_secret"), "{token}");
        // ssh's user name is no secret.
        assert!(Remote::new("git@github.com:a/b.git", None, None).is_ok());
        let password = || Some(Secret::new("p4ss"));
        let clear = Remote::new("http://example.com/a.git", Some("u".into()), password());
        assert!(matches!(clear, Err(GitError::PasswordInClear { .. })));
        assert!(Remote::new("http://127.0.0.1:8080/a.git", Some("u".into()), password()).is_ok());
        for sneaky in [
            "http://127.0.0.1.nip.io/a.git",
            "http://127.evil.example/a.git",
        ] {
            let r = Remote::new(sneaky, Some("u".into()), password());
            assert!(
                matches!(r, Err(GitError::PasswordInClear { .. })),
                "{sneaky}"
            );
        }
        assert!(Remote::new("https://example.com/a.git", Some("u".into()), password()).is_ok());
        assert_eq!(
            credential_scope("HTTPS://user@Example.com:8443/a/b.git?x").as_deref(),
            Some("https://Example.com:8443")
        );
        assert_eq!(credential_scope("git@host:a.git"), None);
    }

    #[test]
    fn urls_and_paths() {
        assert!(looks_remote("https://github.com/a/b.git"));
        assert!(looks_remote("git@github.com:a/b.git"));
        assert!(!looks_remote("/srv/repo"));
        assert!(!looks_remote("repos/a:b"));
        assert_eq!(url_password("https://u:p%40ss@h/x"), Some("p%40ss"));
        assert_eq!(url_password("https://u@h/x"), None);
        assert!(is_full_commit_id(&"a".repeat(40)));
        assert!(!is_full_commit_id("v1.0"));
    }

    #[test]
    fn refs_resolve_to_commits_tags_first_and_peeled() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let one = git(&repo, &["rev-parse", "HEAD"]);
        git(&repo, &["tag", "-a", "-m", "annotated", "release"]);
        git(&repo, &["branch", "same"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let two = git(&repo, &["rev-parse", "HEAD"]);
        git(&repo, &["tag", "same"]); // a tag and a branch of one name: the tag wins
        let remote = Remote::new(repo.to_str().unwrap(), None, None).unwrap();
        assert_eq!(
            remote.resolve("release").unwrap(),
            one,
            "the commit, not the tag object"
        );
        assert_eq!(remote.resolve("main").unwrap(), two);
        assert_eq!(remote.resolve("same").unwrap(), two);
        assert_eq!(remote.resolve("refs/heads/same").unwrap(), one);
        assert_eq!(remote.resolve(&one.to_uppercase()).unwrap(), one);
        assert!(matches!(
            remote.resolve("nope"),
            Err(GitError::NoSuchRef { .. })
        ));
        // A commit that is not a tip is fetched by its id.
        let fetched = remote.fetch(&one, tmp.path()).unwrap();
        assert_eq!(fetched.commit(), one);
        assert!(fetched.tree().unwrap().is_empty());
        let err = remote.fetch(&"1".repeat(40), tmp.path()).unwrap_err();
        assert!(matches!(err, GitError::Fetch { .. }), "{err}");
    }

    #[test]
    fn credentials_are_scrubbed_from_display_and_messages() {
        for not_http in [
            "git@example.com:team/x.git",
            "ssh://example.com/x.git",
            "/srv/x",
        ] {
            let err =
                Remote::new(not_http, Some("me".into()), Some(Secret::new("pw"))).unwrap_err();
            assert!(matches!(err, GitError::PasswordNotHttp { .. }), "{err}");
        }
        let err = Remote::new("https://me:inurl@example.com/x.git", None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "repository https://me:[redacted]@example.com/x.git: give credentials as username and #password, not in the URL"
        );
        let r = Remote::new(
            "https://example.com/x.git",
            Some("me".into()),
            Some(Secret::new("p@ss w")),
        )
        .unwrap();
        assert_eq!(
            r.redact("auth p@ss w failed for p%40ss%20w"),
            "auth [redacted] failed for [redacted]"
        );
        assert!(!format!("{r:?}").contains("p@ss"));
    }
}
