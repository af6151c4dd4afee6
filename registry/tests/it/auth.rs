//! Basic and token authentication against the real auth registries.

use std::path::PathBuf;

use dockless_registry::{AuthFiles, Store};
use dockless_testkit::test_env;

use crate::{assert_verified, pull_with, settings};

fn auth_file(dir: &std::path::Path, registry: &str, user: &str, password: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    path
}

async fn check_registry(registry: &str, user: &str, password: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let image = format!("{registry}/busybox:latest");

    let err = pull_with(settings(), &store, &image, "linux/amd64")
        .await
        .unwrap_err();
    assert!(err.is_auth(), "no credentials: {err}");

    let mut s = settings();
    s.auth_files = AuthFiles {
        files: vec![auth_file(dir.path(), registry, user, "wrong-password")],
    };
    let err = pull_with(s, &store, &image, "linux/amd64")
        .await
        .unwrap_err();
    assert!(err.is_auth(), "wrong password: {err}");
    assert!(err.to_string().contains("unauthorized"), "{err}");
    assert!(
        !err.to_string().contains("wrong-password"),
        "the secret never appears: {err}"
    );

    let mut s = settings();
    s.auth_files = AuthFiles {
        files: vec![auth_file(dir.path(), registry, user, password)],
    };
    let record = pull_with(s, &store, &image, "linux/amd64").await.unwrap();
    assert_verified(&store, &record);
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn basic_auth_from_a_docker_config_file() {
    let env = test_env();
    check_registry(&env.auth_registry, &env.user, &env.password).await;
}

#[tokio::test]
#[ignore = "needs root and scripts/test-env"]
async fn token_auth_from_a_docker_config_file() {
    let env = test_env();
    check_registry(&env.token_registry, &env.user, &env.password).await;
}
