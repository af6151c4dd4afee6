//! Coordinates of the test environment, from `scripts/test-env env` variables or defaults.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where the test registries and fixtures are.
#[derive(Clone, Debug)]
pub struct TestEnv {
    /// The plain registry, `127.0.0.1:5000`.
    pub registry: String,
    /// The Basic-auth registry.
    pub auth_registry: String,
    /// The token-auth registry.
    pub token_registry: String,
    /// User accepted by both auth registries.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The OCI layout the test images were built in.
    pub oci_layout: PathBuf,
    /// A `docker save`-style archive of busybox.
    pub docker_archive: PathBuf,
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// The test environment; panics with the command to run when the registry does not answer,
/// so a missing prerequisite fails the test instead of skipping it.
pub fn test_env() -> TestEnv {
    let env = TestEnv {
        registry: var("DOCKLESS_TEST_REGISTRY", "127.0.0.1:5000"),
        auth_registry: var("DOCKLESS_TEST_AUTH_REGISTRY", "127.0.0.1:5001"),
        token_registry: var("DOCKLESS_TEST_TOKEN_REGISTRY", "127.0.0.1:5002"),
        user: var("DOCKLESS_TEST_USER", "dockless"),
        password: var("DOCKLESS_TEST_PASSWORD", "dockless-pass"),
        oci_layout: var("DOCKLESS_TEST_OCI_LAYOUT", "/var/cache/dockless-test/oci").into(),
        docker_archive: var(
            "DOCKLESS_TEST_ARCHIVE",
            "/var/cache/dockless-test/busybox-docker-archive.tar",
        )
        .into(),
    };
    for addr in [&env.registry, &env.auth_registry, &env.token_registry] {
        let sock = addr
            .parse()
            .unwrap_or_else(|_| panic!("bad registry address {addr}"));
        if TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_err() {
            panic!("test registry {addr} does not answer: run `scripts/test-env up` first");
        }
    }
    env
}
