//! What a build command behind a proxy needs from the host, handed over at run time and never
//! stored in the image or the build cache's key: the host's proxy variables (podman's
//! `--http-proxy`, on by default) for commands that have a network, and the CA bundle of a
//! TLS-intercepting proxy, bound read-only on the command's `/tmp` (a tmpfs, so the file is
//! not in the layer made from the command's upper dir).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use dockless_runtime::bundle::{NetworkMode, ReadOnlyFile, RunSpec};

/// The variables podman passes from the host into a build when asked (both cases: tools
/// differ in which they read).
pub const PROXY_VARIABLES: [&str; 8] = [
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
];

/// Where a build command finds `--ca-file`.
pub const CA_DESTINATION: &str = "/tmp/.dockless-build-ca.pem";

/// The variables that point OpenSSL, Python's requests and pip at the CA bundle.
pub const CA_VARIABLES: [&str; 3] = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"];

/// A `--ca-file` checked and made absolute (the runtime binds absolute paths only).
pub fn ca_file(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = path
        .canonicalize()
        .with_context(|| format!("--ca-file {}", path.display()))?;
    anyhow::ensure!(
        absolute.is_file(),
        "--ca-file {}: not a file (a PEM bundle of the proxy's CA certificates)",
        path.display()
    );
    Ok(absolute)
}

/// Adds to a build command's `spec` what the options ask for: the host's proxy variables
/// when `pass_proxy` and the command has a network, and the CA bundle.
pub fn apply(spec: &mut RunSpec, pass_proxy: bool, ca_file: Option<&Path>) {
    if pass_proxy && spec.network != NetworkMode::None {
        for name in PROXY_VARIABLES {
            if let Some(value) = std::env::var_os(name) {
                spec.env.push(format!("{name}={}", value.to_string_lossy()));
            }
        }
    }
    if let Some(ca) = ca_file {
        spec.read_only_files.push(ReadOnlyFile {
            source: ca.to_path_buf(),
            destination: CA_DESTINATION.to_string(),
        });
        for name in CA_VARIABLES {
            spec.env.push(format!("{name}={CA_DESTINATION}"));
        }
    }
}
