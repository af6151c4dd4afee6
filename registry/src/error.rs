//! Errors of the registry crate.
//!
//! Each variant names the image, the registry and what failed, so the binary can print the
//! chain as it is. Credentials never reach `Display` or `Debug`.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while resolving, pulling, loading or storing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The reference does not follow docker's grammar.
    #[error("invalid image reference {reference:?}")]
    InvalidReference {
        /// The text as given.
        reference: String,
        /// What is wrong with it.
        #[source]
        source: ReferenceError,
    },

    /// A `--platform` value is not `os/arch[/variant]`.
    #[error("invalid platform {0:?}: expected os/arch[/variant]")]
    InvalidPlatform(String),

    /// The registry has no such repository, tag or digest.
    #[error("{image}: not found on {registry}")]
    NotFound {
        /// The image as the user named it.
        image: String,
        /// The registry host that answered.
        registry: String,
    },

    /// The registry refused our credentials (or demanded some we do not have).
    #[error("{image}: unauthorized on {registry}: {reason}")]
    Unauthorized {
        /// The image as the user named it.
        image: String,
        /// The registry host that answered.
        registry: String,
        /// What the registry or token server said, or which credentials were missing.
        reason: String,
        /// The token client's error, when the token exchange itself failed.
        #[source]
        source: Option<Box<oci_client::errors::OciDistributionError>>,
    },

    /// The registry kept answering 429 after every retry.
    #[error("{image}: rate limited by {registry}{}", reset_hint(.retry_after))]
    RateLimited {
        /// The image as the user named it.
        image: String,
        /// The registry host that answered.
        registry: String,
        /// When the registry said to come back, if it said.
        retry_after: Option<Duration>,
    },

    /// The registry answered with a status we cannot use, after all retries.
    #[error("{image}: {registry} answered {status} for {what}{}", body_hint(.body))]
    Status {
        /// The image as the user named it.
        image: String,
        /// The registry host that answered.
        registry: String,
        /// What we asked for (manifest or blob with digest).
        what: String,
        /// HTTP status code.
        status: u16,
        /// The start of the response body, for the registry's own error envelope.
        body: String,
    },

    /// The registry could not be reached or the connection failed, after all retries.
    #[error("{image}: cannot reach {registry} ({attempts} attempts)")]
    Unreachable {
        /// The image as the user named it.
        image: String,
        /// The registry host.
        registry: String,
        /// How many times we tried.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: reqwest::Error,
    },

    /// Content did not hash to the digest it was fetched by.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which blob or manifest.
        what: String,
        /// The digest we asked for.
        expected: String,
        /// The digest of what we received.
        actual: String,
    },

    /// The registry sent more bytes than the descriptor announced.
    #[error("{what}: larger than its descriptor size {expected} bytes")]
    TooLarge {
        /// Which blob.
        what: String,
        /// Size from the descriptor.
        expected: u64,
    },

    /// The registry sent fewer bytes than the descriptor announced, after all retries.
    #[error("{what}: short content: {received} of {expected} bytes")]
    Truncated {
        /// Which blob.
        what: String,
        /// Size from the descriptor.
        expected: u64,
        /// What arrived.
        received: u64,
    },

    /// A manifest names more layers than [`crate::Limits::max_layers`].
    #[error(
        "{image}: the manifest names {count} layers, more than the cap of {max} \
         (docker's limit; raise it with {})",
        crate::limits::MAX_LAYERS_VAR
    )]
    TooManyLayers {
        /// The image as the user named it.
        image: String,
        /// Layers in the manifest.
        count: usize,
        /// The cap.
        max: usize,
    },

    /// A layer descriptor declares more than [`crate::Limits::max_layer_bytes`].
    #[error(
        "{image}: layer {blob} declares {}, more than the per-layer cap of {} \
         (raise it with {})",
        crate::limits::bytes(*.size), crate::limits::bytes(*.max), crate::limits::MAX_LAYER_BYTES_VAR
    )]
    LayerTooLarge {
        /// The image as the user named it.
        image: String,
        /// The layer's digest.
        blob: String,
        /// Its declared size.
        size: u64,
        /// The cap.
        max: u64,
    },

    /// The layers of an image declare more than [`crate::Limits::max_image_bytes`] in all.
    #[error(
        "{image}: its layers declare {} in all, more than the per-image cap of {} \
         (raise it with {})",
        crate::limits::bytes(*.size), crate::limits::bytes(*.max), crate::limits::MAX_IMAGE_BYTES_VAR
    )]
    ImageTooLarge {
        /// The image as the user named it.
        image: String,
        /// Sum of the declared layer sizes.
        size: u64,
        /// The cap.
        max: u64,
    },

    /// Downloading would leave less than [`crate::Limits::free_space_reserve`] free.
    #[error(
        "{what}: not enough free space in {}: {} needed, {} available, {} kept free \
         (free some space, run `dockless gc`, or lower {})",
        path.display(), crate::limits::bytes(*.needed), crate::limits::bytes(*.available),
        crate::limits::bytes(*.reserve), crate::limits::FREE_SPACE_RESERVE_VAR
    )]
    NoSpace {
        /// The image (before a pull) or the blob (during its download).
        what: String,
        /// The store directory whose file system is full.
        path: PathBuf,
        /// Bytes still to download.
        needed: u64,
        /// Bytes available when it was checked.
        available: u64,
        /// The reserve kept free.
        reserve: u64,
    },

    /// A transfer stayed below [`crate::limits::Stall`]'s minimum rate, after all retries.
    #[error(
        "{what}: the download stalled: {received} bytes in {} s, under the minimum of {min_rate} \
         bytes/s ({attempts} attempts; the rule is set by {} and {})",
        window.as_secs_f64(), crate::limits::STALL_MIN_RATE_VAR, crate::limits::STALL_WINDOW_MS_VAR
    )]
    Stalled {
        /// Which blob.
        what: String,
        /// Bytes received in the last window.
        received: u64,
        /// The window.
        window: Duration,
        /// Minimum rate in bytes per second.
        min_rate: u64,
        /// How many times we tried.
        attempts: u32,
    },

    /// The reader of a download gave up (an unpack error), so the download stopped.
    #[error("{what}: download stopped: {reason}")]
    Aborted {
        /// Which blob.
        what: String,
        /// Why the reader gave up.
        reason: String,
    },

    /// A limit given in the environment is not a number of the expected kind.
    #[error("{var}={value:?}: {expected}")]
    InvalidLimit {
        /// The variable.
        var: &'static str,
        /// Its value as given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },

    /// A manifest, index or config we cannot or will not use.
    #[error("{image}: {reason}")]
    Manifest {
        /// The image as the user named it.
        image: String,
        /// What is wrong.
        reason: String,
    },

    /// A manifest, index or config that is not the JSON its kind must be.
    #[error("{image}: {what}")]
    ManifestJson {
        /// The image as the user named it.
        image: String,
        /// Which document, and how it failed ("malformed index").
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A digest string that is not `sha256:<64 hex>`.
    #[error("unsupported or malformed digest {0:?} (only sha256 is supported)")]
    InvalidDigest(String),

    /// An index has no manifest for the requested platform.
    #[error("{image}: no manifest for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        /// The image as the user named it.
        image: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },

    /// The image is not in the local store.
    #[error("image {0} is not in the local store")]
    ImageNotStored(String),

    /// A `docker save` archive or OCI layout we cannot import.
    #[error("{path}: {reason}")]
    Archive {
        /// The archive or layout.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A `docker save` archive that is not a readable tar (or gzipped tar).
    #[error("{path}: unreadable tar")]
    ArchiveTar {
        /// The archive.
        path: PathBuf,
        /// The tar reader's error.
        #[source]
        source: std::io::Error,
    },

    /// The `manifest.json` of an archive or the `index.json` of a layout is not valid.
    #[error("{path}: {file}")]
    ArchiveJson {
        /// The archive or layout.
        path: PathBuf,
        /// `manifest.json` or `index.json`.
        file: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A docker or containers auth file holds an entry we cannot use.
    #[error("credentials file {path}: {reason}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A credential helper named by an auth file (`credsStore`, `credHelpers`) failed.
    #[error("credentials file {path}: credential helper docker-credential-{helper}: {reason}")]
    CredentialHelper {
        /// The file that names the helper.
        path: PathBuf,
        /// The helper's name (`docker-credential-<name>`).
        helper: String,
        /// What went wrong (never the secret).
        reason: String,
    },

    /// Writing an auth file (`dockless login` / `logout`) failed.
    #[error("cannot write credentials file {path}")]
    AuthFileWrite {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A docker or containers auth file exists but cannot be read.
    #[error("credentials file {path}")]
    AuthFileRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A docker or containers auth file is not JSON of the expected shape.
    #[error("credentials file {path}")]
    AuthFileSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// Building the HTTP client failed (bad proxy or TLS settings).
    #[error("cannot set up the HTTP client")]
    HttpClient(#[source] reqwest::Error),

    /// A filesystem operation on the store failed.
    #[error("{op} {path}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// JSON we wrote ourselves (the image index) is unreadable.
    #[error("{path}: corrupt store metadata")]
    StoreCorrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// Why an image reference was refused: the source of [`Error::InvalidReference`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// It breaks docker's grammar, as oci-client's parser reports it.
    #[error(transparent)]
    Grammar(oci_client::ParseError),
    /// It pins a digest of another algorithm than sha256.
    #[error("only sha256 digests are supported")]
    UnsupportedDigest,
}

fn reset_hint(after: &Option<Duration>) -> String {
    match after {
        Some(d) => format!(" (retry after {} s)", d.as_secs()),
        None => String::new(),
    }
}

fn body_hint(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl Error {
    /// True when a later attempt may succeed without changing anything: transport errors,
    /// 5xx and 429. The pipeline uses it to tell "registry unreachable" (an application
    /// error) from "image not found" (a user error).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::RateLimited { .. }
            | Error::Truncated { .. }
            | Error::Stalled { .. } => true,
            Error::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// True when the image or one of its parts does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. } | Error::ImageNotStored(_))
    }

    /// True when credentials were missing or refused.
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Unauthorized { .. })
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary carries these errors in `anyhow` chains, across threads.
    #[test]
    fn errors_are_send_sync_and_keep_their_causes() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Error>();
        let err = crate::ImageRef::parse("busybox:not a tag").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid image reference"),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    }
}
