//! End-to-end: `dockless build` from a real git repository (made here with the git CLI) on the
//! test registry's busybox, real build containers, the image run as a Keboola job. Needs root
//! and `scripts/test-env up`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dockless_testkit::test_env;
use serde_json::{Value, json};

use crate::support::{self, git, text};

const ORDERS: &str = "id,customer,amount\n1,alice,10.00\n2,bob,5.50\n3,alice,20.00\n4,carol,7.25\n";

/// A password that must never show anywhere.
const SECRET: &str = "git-S3cret-77";

/// A command whose layer does not depend on the code: the same for every commit.
const TOOL_COMMAND: &str = "mkdir -p /opt/tools && echo tool > /opt/tools/marker";

fn base_image() -> String {
    format!("{}/busybox:latest", test_env().registry)
}

/// A repository with the demo component as `main.sh`, tagged `v1`; `v2` adds a line that
/// names its version.
fn component_repo(dir: &Path) {
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-component/component.sh"),
    )
    .unwrap();
    std::fs::write(dir.join("main.sh"), &script).unwrap();
    std::fs::write(dir.join("lib/VERSION"), "v1\n").unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "v1"]);
    git(dir, &["tag", "v1"]);
    let v2 = script.replacen("set -eu\n", "set -eu\necho \"code version: v2\" >&2\n", 1);
    std::fs::write(dir.join("main.sh"), v2).unwrap();
    std::fs::write(dir.join("lib/VERSION"), "v2\n").unwrap();
    git(dir, &["commit", "-qam", "v2"]);
    git(dir, &["tag", "v2"]);
}

/// One test's dockless root, with the build tests' helpers.
struct Root(support::Root);

impl std::ops::Deref for Root {
    type Target = support::Root;

    fn deref(&self) -> &support::Root {
        &self.0
    }
}

impl Root {
    fn new() -> Root {
        Root(support::Root::new(
            "dockless build runs containers and needs root here",
        ))
    }

    fn dockless_env(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
        self.dockless_with(args, env, stdin)
    }

    fn dockless(&self, args: &[&str]) -> Output {
        self.dockless_with(args, &[], "")
    }

    /// `dockless build --json` with the base image and `args`; asserts success.
    fn build(&self, repo: &Path, reference: &str, args: &[&str]) -> Value {
        let out = self.try_build(repo, reference, args, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "build failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}): {}", text(&out.stdout)))
    }

    fn try_build(
        &self,
        repo: &Path,
        reference: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let base = base_image();
        let mut all = vec![
            "build",
            "--json",
            "--base",
            &base,
            "--repo",
            repo.to_str().unwrap(),
            "--ref",
            reference,
        ];
        all.extend_from_slice(args);
        self.dockless_env(&all, env, "")
    }

    fn images(&self) -> Value {
        let index = self.path().join("store/images-v1.json");
        serde_json::from_slice(&std::fs::read(index).unwrap_or_else(|_| b"{}".to_vec())).unwrap()
    }

    fn blobs(&self) -> BTreeSet<PathBuf> {
        files_below(&self.path().join("store/blobs"))
    }

    fn snapshots(&self) -> BTreeSet<PathBuf> {
        std::fs::read_dir(self.path().join("snapshots-v2"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// The entries of a stored layer blob (gzip tar), in order.
    fn layer_entries(&self, digest: &str) -> Vec<String> {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let blob = std::fs::File::open(self.path().join("store/blobs/sha256").join(hex)).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn rows(&self, table: &str) -> Vec<String> {
        let out = self.dockless(&["storage", "export", table]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().map(str::to_string).collect()
    }

    fn assert_clean(&self) {
        dockless_testkit::assert_clean(
            self.path(),
            &[
                "rootfs-v1",
                "run/containers-v1/runs",
                "run/containers-v1/containers",
                "jobs-v1",
                "builds-v1/tmp",
                "store/ingest",
            ],
        );
    }
}

fn files_below(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_below(&p));
        } else {
            out.insert(p);
        }
    }
    out
}

fn layers(built: &Value) -> Vec<String> {
    built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn build_run_cache_hit_and_a_new_tag_rebuilding_only_the_code_layer() {
    let root = Root::new();
    let repo = root.path().join("repo");
    component_repo(&repo);
    let flags = [
        "--entrypoint",
        "sh /home/main.sh",
        "--command",
        TOOL_COMMAND,
    ];

    let v1 = root.build(&repo, "v1", &flags);
    assert_eq!(v1["cached"], false);
    let name = v1["name"].as_str().unwrap().to_owned();
    let commit = v1["commit"].as_str().unwrap();
    assert!(
        name.starts_with(&format!("localhost/build/repo:{}-", &commit[..12])),
        "{name}"
    );
    assert_eq!(commit, git(&repo, &["rev-parse", "v1"]).trim());
    assert_eq!(layers(&v1).len(), 2, "code layer + one command layer");
    assert_eq!(root.images()[&name]["digest"], v1["digest"]);
    let config_hex = root.images()[&name]["config"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let config: Value = serde_json::from_slice(
        &std::fs::read(root.path().join("store/blobs/sha256").join(config_hex)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["sh", "/home/main.sh"])
    );
    assert_eq!(config["config"]["WorkingDir"], "/data/");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        commit
    );
    assert!(
        config["config"]["Env"][0]
            .as_str()
            .unwrap()
            .starts_with("PATH=")
    );
    assert_eq!(
        config["created"], "2023-11-14T22:13:20Z",
        "the commit's time"
    );
    let code = root.layer_entries(&layers(&v1)[0]);
    assert!(code.contains(&"home/main.sh".to_owned()), "{code:?}");
    assert!(!code.iter().any(|e| e.contains(".git")), "{code:?}");
    assert_eq!(
        root.layer_entries(&layers(&v1)[1]),
        ["opt/", "opt/tools/", "opt/tools/marker"]
    );

    // The image runs as a Keboola job: input mapping in, tables out.
    let csv = root.path().join("orders.csv");
    std::fs::write(&csv, ORDERS).unwrap();
    let out = root.dockless(&[
        "storage",
        "import",
        csv.to_str().unwrap(),
        "in.c-demo.orders",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = json!({
        "storage": {"input": {"tables": [{"source": "in.c-demo.orders", "destination": "orders.csv"}]}},
        "parameters": {"vat_rate": 0.5},
    });
    let out = root.dockless_env(
        &[
            "run",
            &name,
            "--config",
            "-",
            "--json",
            "--component-id",
            "demo",
        ],
        &[],
        &config.to_string(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows = root.rows("out.c-demo.orders_enriched");
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(
        rows.iter().any(|r| r.contains("\"30.00\"")),
        "alice's 20.00 with 50 % VAT: {rows:?}"
    );

    // The same tag again: a cache hit, nothing new stored or unpacked.
    let (blobs, snapshots) = (root.blobs(), root.snapshots());
    let again = root.build(&repo, "v1", &flags);
    assert_eq!(again["cached"], true);
    assert_eq!(again["digest"], v1["digest"]);
    assert_eq!(root.blobs(), blobs, "a cache hit stores no blob");
    assert_eq!(root.snapshots(), snapshots, "a cache hit unpacks nothing");

    // A new tag: a new code layer; the command layer (independent of the code) is the same.
    let v2 = root.build(&repo, "v2", &flags);
    assert_eq!(v2["cached"], false);
    assert_ne!(v2["digest"], v1["digest"]);
    assert_ne!(layers(&v2)[0], layers(&v1)[0]);
    assert_eq!(layers(&v2)[1], layers(&v1)[1]);

    // A moved tag is resolved again: v1 now names v2's commit, so it is v2's image.
    git(&repo, &["tag", "-f", "v1", "v2"]);
    let moved = root.build(&repo, "v1", &flags);
    assert_eq!(moved["commit"], v2["commit"]);
    assert_eq!(moved["digest"], v2["digest"]);
    assert_eq!(moved["cached"], true);

    // A job file naming a build instead of an image: built (a cache hit here) and run.
    let job = json!({
        "build": {
            "base": base_image(),
            "repository": "repo",
            "ref": "main",
            "entrypoint": ["sh", "/home/main.sh"],
            "commands": [TOOL_COMMAND],
        },
        "configuration": config,
        "component_id": "demo",
    });
    let job_path = root.path().join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let out = root.dockless(&["run", "--job", job_path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["class"], "success");
    assert_eq!(result["digest"], v2["digest"], "{result}");
    assert!(
        text(&out.stderr).contains("code version: v2"),
        "{}",
        text(&out.stderr)
    );
    // Without a component id the job takes it from the built image's name (the repository),
    // never from the digest the build is run by.
    let mut unnamed = job.clone();
    unnamed.as_object_mut().unwrap().remove("component_id");
    std::fs::write(&job_path, unnamed.to_string()).unwrap();
    let out = root.dockless(&["run", "--job", job_path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["component_id"], "repo", "{result}");
    root.assert_clean();
}

/// What the container sees of the changed paths, one line per entry.
const LISTING: &str = "cd /home && find . | sort && cat keep.txt dir/fresh && \
     (ls /bin/vi 2>&1 || true) && ls -d /etc/opaque-me/* 2>&1";

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_command_layer_carries_additions_changes_and_whiteouts() {
    let root = Root::new();
    let repo = root.path().join("repo");
    std::fs::create_dir_all(repo.join("dir/sub")).unwrap();
    std::fs::write(repo.join("keep.txt"), "kept\n").unwrap();
    std::fs::write(repo.join("gone.txt"), "bye\n").unwrap();
    std::fs::write(repo.join("dir/old"), "old\n").unwrap();
    std::fs::write(repo.join("dir/sub/deep"), "deep\n").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "tree"]);
    let command = format!(
        "echo added > /home/added && echo changed >> /home/keep.txt && rm /home/gone.txt \
         && rm -rf /home/dir && mkdir /home/dir && echo fresh > /home/dir/fresh \
         && rm /bin/vi && mkdir -p /etc/opaque-me && echo x > /etc/opaque-me/x \
         && echo BEGIN && {{ {LISTING}; }} && echo END"
    );
    let out = root.try_build(
        &repo,
        "HEAD",
        &[
            "--entrypoint",
            "/bin/sh -c",
            "--workdir",
            "/",
            "--command",
            &command,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = text(&out.stderr);
    let during = stderr
        .split_once("BEGIN\n")
        .and_then(|(_, rest)| rest.split_once("END\n"))
        .map(|(listing, _)| listing.to_owned())
        .unwrap_or_else(|| panic!("no listing in {stderr}"));

    let entries = root.layer_entries(&layers(&built)[1]);
    for wanted in [
        "home/added",
        "home/keep.txt",
        "home/.wh.gone.txt",
        "home/dir/",
        "home/dir/.wh..wh..opq",
        "home/dir/fresh",
        "bin/.wh.vi",
        "etc/opaque-me/x",
    ] {
        assert!(
            entries.iter().any(|e| e == wanted),
            "{wanted} not in {entries:?}"
        );
    }
    assert!(
        !entries
            .iter()
            .any(|e| e.contains("dir/old") || e.contains("sub")),
        "the replaced dir's old content is hidden by the opaque marker, not listed: {entries:?}"
    );

    // The built image shows the very tree the build command saw.
    let name = built["name"].as_str().unwrap();
    let out = root.dockless(&["run", name, "--", LISTING]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), during);
    assert!(
        during.contains("./added") && !during.contains("gone"),
        "{during}"
    );
    root.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn bad_ref_unreachable_repository_and_failing_command_leave_no_image() {
    let root = Root::new();
    let repo = root.path().join("repo");
    component_repo(&repo);
    let entry = ["--entrypoint", "sh /home/main.sh"];
    // The base is pulled once, so "no image" below means no built image.
    let out = root.dockless(&["pull", "-q", &base_image()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let images = root.images();

    let out = root.try_build(&repo, "v9", &entry, &[]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(err.contains("has no tag or branch \"v9\""), "{err}");
    assert!(err.contains(repo.to_str().unwrap()), "{err}");

    let missing = root.path().join("no-such-repo");
    let out = root.try_build(&missing, "v1", &entry, &[]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("repository {} is unreachable", missing.display())),
        "{err}"
    );

    let out = root.try_build(
        &repo,
        "v1",
        &[
            "--entrypoint",
            "sh /home/main.sh",
            "--command",
            "echo step one; echo it broke >&2; exit 3",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("build command 1 (\"echo step one; echo it broke >&2; exit 3\") exited with code 3; its output:\nit broke"),
        "{err}"
    );
    assert_eq!(root.images(), images, "no image was recorded");

    // The run limits apply: a command over its memory limit or past its timeout is killed
    // and fails the build.
    let out = root.try_build(
        &repo,
        "v1",
        &[
            "--entrypoint",
            "sh /home/main.sh",
            "--memory",
            "32m",
            "--command",
            "awk 'BEGIN { s = \"0123456789\"; while (1) s = s s }'",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("ran out of memory (limit 33554432 bytes)"),
        "{err}"
    );

    let out = root.try_build(
        &repo,
        "v1",
        &[
            "--entrypoint",
            "sh /home/main.sh",
            "--timeout",
            "1s",
            "--command",
            "sleep 30",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("build command 1 (\"sleep 30\") timed out after 1s"),
        "{err}"
    );
    assert_eq!(root.images(), images, "no image was recorded");
    assert!(
        std::fs::read_dir(root.path().join("builds-v1"))
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".json")),
        "no cache entry"
    );

    // A commit id that is not in the repository.
    let out = root.try_build(&repo, &"0".repeat(40), &entry, &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains(&format!("cannot fetch commit {}", "0".repeat(40))),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(root.images(), images);
    root.assert_clean();
}

/// git's smart HTTP server (`git http-backend`) behind Basic auth, on a free loopback port;
/// stopped when dropped.
struct GitHttpServer {
    child: std::process::Child,
    port: u16,
}

impl GitHttpServer {
    fn start(project_root: &Path, user: &str, password: &str) -> GitHttpServer {
        Self::start_with(project_root, user, password, &[])
    }

    /// With `extra` = [bind address, redirect base URL, auth log file] (see the script).
    fn start_with(
        project_root: &Path,
        user: &str,
        password: &str,
        extra: &[&str],
    ) -> GitHttpServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/git-http-server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([project_root.to_str().unwrap(), user, password])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is needed for the git HTTP test server");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the git HTTP test server did not start: {line:?}"));
        GitHttpServer { child, port }
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn credentials_never_show_in_output_or_image() {
    let root = Root::new();
    let repo = root.path().join("repo");
    component_repo(&repo);
    let served = root.path().join("served");
    std::fs::create_dir(&served).unwrap();
    git(
        &served,
        &[
            "clone",
            "-q",
            "--bare",
            repo.to_str().unwrap(),
            "component.git",
        ],
    );
    let server = GitHttpServer::start(&served, "builder", SECRET);
    let url = format!("http://127.0.0.1:{}/component.git", server.port);
    let password_file = root.path().join("password");
    std::fs::write(&password_file, format!("{SECRET}\n")).unwrap();
    let build_over_http = |reference: &str, auth: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["--entrypoint", "sh /home/main.sh"];
        args.extend_from_slice(auth);
        args.extend_from_slice(&["--command", "env > /home/build-env"]);
        root.try_build(Path::new(&url), reference, &args, env)
    };

    // Without credentials, and with a wrong password: refused by the server, a clear error
    // naming the repository, no prompt.
    let out = build_over_http("v1", &[], &[]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("repository {url} is unreachable"))
            && err.contains("terminal prompts disabled"),
        "{err}"
    );
    let out = build_over_http(
        "v1",
        &["--username", "builder"],
        &[("DOCKLESS_GIT_PASSWORD", "not-the-password")],
    );
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(err.contains("Authentication failed"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    // The right password from a file: resolved and fetched over HTTP with it.
    let built = build_over_http(
        "v1",
        &[
            "--username",
            "builder",
            "--password-file",
            password_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(built.status.code(), Some(0), "{}", text(&built.stderr));
    let result: Value = serde_json::from_slice(&built.stdout).unwrap();
    assert_eq!(result["cached"], false);
    assert_eq!(result["commit"], git(&repo, &["rev-parse", "v1"]).trim());

    // A password in the URL is refused without being shown.
    let with_password = format!(
        "http://builder:{SECRET}@127.0.0.1:{}/component.git",
        server.port
    );
    let out = root.try_build(Path::new(&with_password), "v1", &["--entrypoint", "x"], &[]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("give credentials as username and #password"),
        "{err}"
    );
    // So is a token given as the URL's user name (GitHub's `https://<token>@host` form).
    let with_token = format!("http://{SECRET}@127.0.0.1:{}/component.git", server.port);
    let token_out = root.try_build(Path::new(&with_token), "v1", &["--entrypoint", "x"], &[]);
    assert_eq!(token_out.status.code(), Some(125));
    let err = text(&token_out.stderr);
    assert!(
        err.contains("give credentials as username and #password"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");

    // A redirect to another host gets no credentials: the helper answers for the
    // repository's own scheme, host and port only.
    let log = root.path().join("auth.log");
    let elsewhere = GitHttpServer::start_with(
        &served,
        "builder",
        SECRET,
        &["127.0.0.2", "", log.to_str().unwrap()],
    );
    let redirector = GitHttpServer::start_with(
        &served,
        "builder",
        SECRET,
        &[
            "127.0.0.1",
            &format!("http://127.0.0.2:{}", elsewhere.port),
            "",
        ],
    );
    let redirected = root.try_build(
        Path::new(&format!(
            "http://127.0.0.1:{}/component.git",
            redirector.port
        )),
        "v1",
        &[
            "--entrypoint",
            "x",
            "--username",
            "builder",
            "--password-file",
            password_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        redirected.status.code(),
        Some(125),
        "{}",
        text(&redirected.stderr)
    );
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!seen.is_empty(), "the redirect was not followed at all");
    assert!(
        seen.lines().all(|l| l == "-"),
        "credentials reached the redirect target: {seen}"
    );

    // From a job file (`#password`), the other tag, built on demand and run.
    let job = json!({
        "build": {
            "base": base_image(), "repository": url, "ref": "v2",
            "username": "builder", "#password": SECRET,
            "entrypoint": "sh /home/main.sh",
        },
        "configuration": {"action": "test-connection"},
    });
    let job_path = root.path().join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let run = root.dockless(&["run", "--job", job_path.to_str().unwrap(), "--json"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("code version: v2"),
        "{}",
        text(&run.stderr)
    );

    for out in [&built, &run, &out, &token_out, &redirected] {
        assert!(!text(&out.stdout).contains(SECRET) && !text(&out.stderr).contains(SECRET));
    }
    let blobs = root.blobs();
    assert!(blobs.len() > 4, "{blobs:?}");
    for blob in blobs {
        let bytes = std::fs::read(&blob).unwrap();
        let mut plain = Vec::new();
        let content = if bytes.starts_with(&[0x1f, 0x8b]) {
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain)
                .unwrap();
            &plain
        } else {
            &bytes
        };
        assert!(
            !content
                .windows(SECRET.len())
                .any(|w| w == SECRET.as_bytes()),
            "{} holds the password",
            blob.display()
        );
    }
    root.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn the_same_commit_gives_the_same_layers_in_another_root() {
    let (a, b) = (Root::new(), Root::new());
    let repo = a.path().join("repo");
    component_repo(&repo);
    let flags = [
        "--entrypoint",
        "sh /home/main.sh",
        "--command",
        TOOL_COMMAND,
    ];
    let one = a.build(&repo, "v2", &flags);
    let two = b.build(&repo, "v2", &flags);
    assert_eq!(layers(&one), layers(&two));
    assert_eq!(one["digest"], two["digest"], "config and manifest too");
    assert_eq!(two["cached"], false);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn build_commands_get_no_network_unless_asked() {
    let root = Root::new();
    let repo = root.path().join("repo");
    component_repo(&repo);
    // /proc/net/dev: two header lines and one line per interface; only `lo` without network.
    let only_lo = "test \"$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')\" = lo";
    let args = |network: &'static str| {
        [
            "--entrypoint",
            "sh /home/main.sh",
            "--network",
            network,
            "--command",
            only_lo,
        ]
    };
    // What a killed build left is removed once a day old; a young one (a live fetch) stays.
    let scratch = root.path().join("builds-v1/tmp");
    for dir in ["git-killed", "git-live"] {
        std::fs::create_dir_all(scratch.join(dir).join("objects")).unwrap();
    }
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
    std::fs::File::open(scratch.join("git-killed"))
        .unwrap()
        .set_modified(day_ago)
        .unwrap();
    let out = root.try_build(&repo, "v1", &args("none"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!scratch.join("git-killed").exists());
    std::fs::remove_dir_all(scratch.join("git-live")).expect("a young fetch dir stays");
    let out = root.try_build(&repo, "v1", &args("host"), &[]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "the host has interfaces besides lo: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("exited with code 1"),
        "{}",
        text(&out.stderr)
    );
    root.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn concurrent_builds_of_one_definition_build_once() {
    let root = Root::new();
    let repo = root.path().join("repo");
    component_repo(&repo);
    let out = root.dockless(&["pull", "-q", &base_image()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (a, b) = std::thread::scope(|s| {
        let one = || {
            root.build(
                &repo,
                "v1",
                &["--entrypoint", "sh /home/main.sh", "--command", "sleep 1"],
            )
        };
        let a = s.spawn(one);
        let b = s.spawn(one);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a["digest"], b["digest"]);
    let cached: Vec<bool> = [&a, &b].iter().map(|r| r["cached"] == true).collect();
    assert!(
        cached.contains(&true) && cached.contains(&false),
        "one built, the other waited and hit the cache: {cached:?}"
    );
    root.assert_clean();
}

/// A forward HTTP proxy on loopback (python3's http.server): answers every request with
/// `via-proxy <the request target>` and logs the request lines to `log`. Returns its port.
fn start_proxy(log: &Path) -> (support::Spawned, u16) {
    let script = r#"
import http.server, sys
log = open(sys.argv[1], "a", buffering=1)
class Proxy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(self.requestline + "\n")
        body = ("via-proxy " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Proxy)
print(server.server_port, flush=True)
server.serve_forever()
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(log)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line.trim().parse().expect("the proxy's port");
    (support::Spawned::new(child), port)
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn build_commands_behind_a_proxy_get_its_variables_and_ca_but_the_image_keeps_neither() {
    let root = Root::new();
    let repo = root.path().join("repo");
    component_repo(&repo);
    let log = root.path().join("proxy.log");
    let (_proxy, port) = start_proxy(&log);
    let proxy = format!("http://127.0.0.1:{port}");
    let ca = root.path().join("proxy-ca.pem");
    let pem = "-----BEGIN CERTIFICATE-----\nTUlJQnRlc3Q=\n-----END CERTIFICATE-----\n";
    std::fs::write(&ca, pem).unwrap();
    let env = [
        ("http_proxy", proxy.as_str()),
        ("HTTPS_PROXY", "http://proxy.invalid:3128"),
        // The registry on loopback is reached directly (dockless itself honours the variables).
        ("NO_PROXY", "localhost,127.0.0.1"),
    ];
    // busybox wget goes through $http_proxy: the proxy answers for a host that does not exist.
    let fetch = "wget -q -O /home/fetched http://deps.example.invalid/pkg.tar \
                 && env | grep -i -e _proxy= -e _FILE= -e _BUNDLE= -e PIP_CERT= | sort > /home/env.txt \
                 && cat \"$SSL_CERT_FILE\" > /home/ca-seen.pem";
    let out = root.try_build(
        &repo,
        "v1",
        &[
            "--entrypoint",
            "/bin/sh -c",
            "--network",
            "host",
            "--ca-file",
            ca.to_str().unwrap(),
            "--command",
            fetch,
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    let image = built["name"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "GET http://deps.example.invalid/pkg.tar HTTP/1.1\n"
    );
    let cat = |path: &str| {
        let out = root.dockless(&["run", image, "--", &format!("cat {path}")]);
        assert_eq!(out.status.code(), Some(0), "{path}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(
        cat("/home/fetched"),
        "via-proxy http://deps.example.invalid/pkg.tar"
    );
    assert_eq!(
        cat("/home/env.txt"),
        format!(
            "HTTPS_PROXY=http://proxy.invalid:3128\nNO_PROXY=localhost,127.0.0.1\n\
             PIP_CERT=/tmp/.dockless-build-ca.pem\nREQUESTS_CA_BUNDLE=/tmp/.dockless-build-ca.pem\n\
             SSL_CERT_FILE=/tmp/.dockless-build-ca.pem\nhttp_proxy={proxy}\n"
        )
    );
    assert_eq!(cat("/home/ca-seen.pem"), pem);
    // Neither the variables nor the bundle are in the image: not in its config, not in a layer.
    let out = root.dockless(&["run", image, "--", "env"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let env_of_image = text(&out.stdout);
    assert!(
        !env_of_image.to_lowercase().contains("proxy") && !env_of_image.contains("SSL_CERT_FILE"),
        "{env_of_image}"
    );
    for layer in layers(&built) {
        let entries = root.layer_entries(&layer);
        assert!(
            !entries
                .iter()
                .any(|e| e.contains("dockless-build-ca") || e.starts_with("tmp/")),
            "{layer}: {entries:?}"
        );
    }
    // --http-proxy=false keeps the variables out; a command without a network never gets
    // them; the CA bundle is there either way.
    let show = "env | grep -i -c _proxy= > /home/n || true; test -s \"$SSL_CERT_FILE\"";
    for (network, flag) in [("host", "false"), ("none", "true")] {
        let out = root.try_build(
            &repo,
            "v1",
            &[
                "--entrypoint",
                "/bin/sh -c",
                "--network",
                network,
                "--http-proxy",
                flag,
                "--ca-file",
                ca.to_str().unwrap(),
                "--command",
                show,
            ],
            &env,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{network}: {}",
            text(&out.stderr)
        );
        let built: Value = serde_json::from_slice(&out.stdout).unwrap();
        let out = root.dockless(&["run", built["name"].as_str().unwrap(), "--", "cat /home/n"]);
        assert_eq!(
            text(&out.stdout),
            "0\n",
            "{network} --http-proxy {flag}: {}",
            text(&out.stderr)
        );
    }
    // A CA file that is not there: refused before anything runs.
    let out = root.try_build(
        &repo,
        "v1",
        &["--entrypoint", "sh", "--ca-file", "/nonexistent/ca.pem"],
        &[],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("--ca-file /nonexistent/ca.pem"),
        "{}",
        text(&out.stderr)
    );
    root.assert_clean();
}
