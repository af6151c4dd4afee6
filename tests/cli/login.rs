//! End-to-end: `dockless login` / `logout` writing podman's auth file, and docker's credential
//! helpers (`credHelpers`, `credsStore`) used by pulls, against the test registry with Basic
//! auth. Every credential location is a temporary one of the test: the host's own files are
//! never read or written.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use dockless_testkit::test_env;
use serde_json::{Value, json};

use crate::support::{Root, text};

/// A test's own credential places: `home` (HOME), `run` (XDG_RUNTIME_DIR), `docker`
/// (DOCKER_CONFIG) and `bin` (first on PATH, for helpers).
struct Places {
    dir: tempfile::TempDir,
}

impl Places {
    fn new() -> Places {
        let places = Places {
            dir: tempfile::tempdir().unwrap(),
        };
        for sub in ["home", "run", "docker", "bin"] {
            std::fs::create_dir_all(places.path(sub)).unwrap();
        }
        places
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn env(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env = vec![
            ("HOME".to_string(), self.path("home").display().to_string()),
            (
                "XDG_RUNTIME_DIR".to_string(),
                self.path("run").display().to_string(),
            ),
            (
                "DOCKER_CONFIG".to_string(),
                self.path("docker").display().to_string(),
            ),
            ("REGISTRY_AUTH_FILE".to_string(), String::new()),
            ("PATH".to_string(), path),
        ];
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.clone()));
        }
        env
    }

    fn dockless(
        &self,
        root: &Root,
        args: &[&str],
        extra: &[(&str, String)],
        stdin: &str,
    ) -> Output {
        let env = self.env(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        root.dockless_with(args, &env, stdin)
    }

    /// A `docker-credential-NAME` on PATH that answers for `registry` with the test user and
    /// `password`, says "credentials not found" for anything else, and logs each server URL.
    fn helper(&self, name: &str, registry: &str, password: &str) -> PathBuf {
        let log = self.path(&format!("{name}.log"));
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r server\necho \"$server\" >>'{log}'\n\
             if [ \"$server\" = '{registry}' ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}\\n' \"$server\"\n\
             else\n  echo 'credentials not found in native keychain'\n  exit 1\nfi\n",
            log = log.display(),
            user = test_env().user,
        );
        let path = self.path("bin").join(format!("docker-credential-{name}"));
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        log
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn image() -> String {
    format!("{}/busybox:latest", test_env().auth_registry)
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn login_writes_podmans_auth_file_keeping_other_entries_and_logout_removes_it() {
    let env = test_env();
    let places = Places::new();
    let file = places.path("auth/auth.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let other = json!({"auths": {"other.example:5000": {"auth": "dTpw"}},
                       "credHelpers": {"ecr.example": "ecr-login"}});
    std::fs::write(&file, other.to_string()).unwrap();
    let auth_file = [("REGISTRY_AUTH_FILE", file.display().to_string())];
    let root = Root::new("login and pull need root here");
    let registry = env.auth_registry.as_str();

    // A wrong password is refused by the registry: nothing stored.
    let out = places.dockless(
        &root,
        &["login", "-u", &env.user, "--password-stdin", registry],
        &auth_file,
        "wrong-password\n",
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid username or password"), "{stderr}");
    assert!(!stderr.contains("wrong-password"), "{stderr}");
    assert_eq!(read_json(&file), other);

    // Without credentials the pull is refused.
    let image = image();
    let pull = ["pull", image.as_str()];
    let refused = places.dockless(&root, &pull, &auth_file, "");
    assert!(!refused.status.success());

    let out = places.dockless(
        &root,
        &["login", "-u", &env.user, "--password-stdin", registry],
        &auth_file,
        &format!("{}\n", env.password),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Login Succeeded"));
    let written = read_json(&file);
    assert_eq!(
        written["auths"]["other.example:5000"],
        other["auths"]["other.example:5000"]
    );
    assert_eq!(written["credHelpers"], other["credHelpers"]);
    use base64::Engine as _;
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", env.user, env.password));
    assert_eq!(written["auths"][registry]["auth"], expected.as_str());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let out = places.dockless(&root, &pull, &auth_file, "");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = places.dockless(&root, &["logout", registry], &auth_file, "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = read_json(&file);
    assert_eq!(after["auths"], other["auths"]);
    assert_eq!(after["credHelpers"], other["credHelpers"]);
    let out = places.dockless(&root, &["logout", registry], &auth_file, "");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("not logged into"),
        "{}",
        text(&out.stderr)
    );

    // Without REGISTRY_AUTH_FILE: podman's default, $XDG_RUNTIME_DIR/containers/auth.json.
    let out = places.dockless(
        &root,
        &["login", "-u", &env.user, "--password-stdin", registry],
        &[],
        &env.password,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let default = places.path("run/containers/auth.json");
    assert!(read_json(&default)["auths"][registry]["auth"].is_string());
    let fresh = Root::new("pull needs root here");
    let out = places.dockless(&fresh, &pull, &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A registry with a token server: the credentials are checked with the token server.
    let token = env.token_registry.as_str();
    for (password, ok) in [("wrong-password", false), (env.password.as_str(), true)] {
        let out = places.dockless(
            &root,
            &["login", "-u", &env.user, "--password-stdin", token],
            &[],
            password,
        );
        assert_eq!(out.status.success(), ok, "{}", text(&out.stderr));
    }
    let stored = read_json(&default);
    assert!(stored["auths"][token]["auth"].is_string(), "{stored}");
    assert!(stored["auths"][registry]["auth"].is_string(), "{stored}");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn credential_helpers_of_dockers_config_are_run_for_pulls() {
    let env = test_env();
    let registry = env.auth_registry.as_str();
    let places = Places::new();
    let config = places.path("docker/config.json");
    let pull = ["pull", "-q"];

    // credHelpers: the registry's own helper.
    let log = places.helper("dltest", registry, &env.password);
    std::fs::write(
        &config,
        json!({"auths": {}, "credHelpers": {registry: "dltest"}}).to_string(),
    )
    .unwrap();
    let root = Root::new("pull needs root here");
    let image = image();
    let out = places.dockless(&root, &[pull[0], pull[1], &image], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), registry);

    // credsStore: the default helper for every registry.
    std::fs::write(&config, json!({"credsStore": "dltest"}).to_string()).unwrap();
    let root = Root::new("pull needs root here");
    let out = places.dockless(&root, &[pull[0], pull[1], &image], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A helper without credentials for the registry: the file's auths are used, here none.
    places.helper("other", "elsewhere.example", &env.password);
    std::fs::write(&config, json!({"credsStore": "other"}).to_string()).unwrap();
    let root = Root::new("pull needs root here");
    let out = places.dockless(&root, &[pull[0], pull[1], &image], &[], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );
    use base64::Engine as _;
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", env.user, env.password));
    std::fs::write(
        &config,
        json!({"credsStore": "other", "auths": {registry: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let out = places.dockless(&root, &[pull[0], pull[1], &image], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A helper that is not installed: an error naming it and the file.
    std::fs::write(
        &config,
        json!({"credHelpers": {registry: "nope"}}).to_string(),
    )
    .unwrap();
    let root = Root::new("pull needs root here");
    let out = places.dockless(&root, &[pull[0], pull[1], &image], &[], "");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("docker-credential-nope") && stderr.contains("config.json"),
        "{stderr}"
    );
}

/// The identity (refresh) token the test token server honours: `refresh-` and the first 32
/// hex digits of sha256("user:password").
fn identity_token() -> String {
    use sha2::Digest as _;
    let env = test_env();
    let digest = sha2::Sha256::digest(format!("{}:{}", env.user, env.password).as_bytes());
    format!("refresh-{}", &hex::encode(digest)[..32])
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn an_identity_token_is_exchanged_for_an_access_token() {
    let env = test_env();
    let registry = env.token_registry.as_str();
    let image = format!("{registry}/busybox:latest");
    let places = Places::new();
    let config = places.path("docker/config.json");
    // docker's `identitytoken` in config.json (what `docker login` keeps for OAuth2 registries).
    std::fs::write(
        &config,
        json!({"auths": {registry: {"auth": "", "identitytoken": identity_token()}}}).to_string(),
    )
    .unwrap();
    let root = Root::new("pull needs root here");
    let out = places.dockless(&root, &["pull", "-q", &image], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A token the server does not know: refused, with the server's reason.
    std::fs::write(
        &config,
        json!({"auths": {registry: {"identitytoken": "refresh-wrong"}}}).to_string(),
    )
    .unwrap();
    let root = Root::new("pull needs root here");
    let out = places.dockless(&root, &["pull", "-q", &image], &[], "");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("refused the identity token") && stderr.contains("invalid refresh token"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("refresh-wrong"),
        "the token is never shown: {stderr}"
    );
    // A credential helper that answers with an identity token (`Username: <token>`).
    let log = places.path("idhelper.log");
    let script = format!(
        "#!/bin/sh\nread -r server\necho \"$server\" >>'{log}'\n\
         printf '{{\"ServerURL\":\"%s\",\"Username\":\"<token>\",\"Secret\":\"{token}\"}}\\n' \"$server\"\n",
        log = log.display(),
        token = identity_token(),
    );
    let helper = places.path("bin").join("docker-credential-idhelper");
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        &config,
        json!({"credHelpers": {registry: "idhelper"}}).to_string(),
    )
    .unwrap();
    let root = Root::new("pull needs root here");
    let out = places.dockless(&root, &["pull", "-q", &image], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), registry);
}
