//! Typed errors of the build crate, one enum per stage so the binary can tell them apart.

use std::path::PathBuf;

/// A build definition that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A field has a value git or the image would misread.
    #[error("build definition: {field}: {why}")]
    Invalid {
        /// The field's name as in the job file.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The entry point text is not shell words (an open quote) or empty.
    #[error("build definition: entrypoint {text:?} is not a command line")]
    Entrypoint {
        /// The text given.
        text: String,
    },
}

/// Resolving or fetching the repository failed. `repository` is always shown with any password
/// removed, and git's own output with every credential replaced.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The git program could not be started.
    #[error("cannot run git (is it installed?)")]
    Spawn(#[source] std::io::Error),
    /// `git ls-remote` failed: no such repository, no access, no network.
    #[error("repository {repository} is unreachable: {detail}")]
    Unreachable {
        /// The repository, credentials removed.
        repository: String,
        /// git's message, credentials removed.
        detail: String,
    },
    /// The ref is neither a tag, a branch, nor a full commit id of the repository.
    #[error(
        "repository {repository} has no tag or branch {reference:?} (a commit must be given as its full 40-hex id)"
    )]
    NoSuchRef {
        /// The repository, credentials removed.
        repository: String,
        /// The ref asked for.
        reference: String,
    },
    /// The commit could not be fetched (e.g. an id that is not in the repository).
    #[error("cannot fetch commit {commit} from {repository}: {detail}")]
    Fetch {
        /// The repository, credentials removed.
        repository: String,
        /// The commit id.
        commit: String,
        /// git's message, credentials removed.
        detail: String,
    },
    /// The URL carries a password, which would show on git's command line.
    #[error("repository {repository}: give credentials as username and #password, not in the URL")]
    PasswordInUrl {
        /// The repository, credentials removed.
        repository: String,
    },
    /// A password for a plain-http repository on another host: it would cross the network in
    /// clear text.
    #[error(
        "repository {repository}: a password is only sent over https (or plain http to this host)"
    )]
    PasswordInClear {
        /// The repository.
        repository: String,
    },
    /// A password for a repository git does not reach over HTTP(S) (ssh uses the host's
    /// keys; a local path needs none): it would be silently unused.
    #[error(
        "repository {repository}: #password is for http(s) repositories (ssh uses the host's keys)"
    )]
    PasswordNotHttp {
        /// The repository, credentials removed.
        repository: String,
    },
    /// A local git command on the fetched objects failed.
    #[error("git {command} failed: {detail}")]
    Local {
        /// The git subcommand.
        command: &'static str,
        /// git's message.
        detail: String,
    },
    /// git answered something we cannot parse.
    #[error("unexpected output from git {command}: {detail}")]
    Output {
        /// The git subcommand.
        command: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A temp directory or pipe could not be used.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What we tried.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The code layer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CodeLayerError {
    /// A tree entry whose path could escape `/home/` or turn into a whiteout.
    #[error("repository path {path:?} is not allowed in an image: {why}")]
    BadPath {
        /// The path as git stores it.
        path: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// Reading an object from git failed.
    #[error("cannot read {path:?} from git")]
    Git {
        /// The path of the entry being read.
        path: String,
        /// The git error.
        #[source]
        source: GitError,
    },
    /// Writing the tar stream failed.
    #[error("cannot write the code layer at {path:?}")]
    Write {
        /// The entry being written.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The new image's config or manifest could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The base image's config is not a JSON object with `rootfs.diff_ids`.
    #[error("the base image config is not usable: {why}")]
    BaseConfig {
        /// What is missing or wrong.
        why: String,
        /// The JSON parser's reason, when the config is not JSON at all.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A timestamp outside the calendar chrono supports.
    #[error("timestamp {0} is out of range")]
    Time(i64),
}

/// The build cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A directory, lock or entry of the cache could not be used.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What we tried.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An entry could not be serialised.
    #[error("cannot encode a build cache entry")]
    Encode(#[source] serde_json::Error),
}
