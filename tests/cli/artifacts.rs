//! End-to-end: Keboola's artifacts and usage metrics in real jobs: a component (built here
//! from a git repository on the test registry's busybox) that reports the artifacts it was
//! given, leaves new ones and writes `out/usage.json`; a hostile archive in Storage. Needs root
//! and `scripts/test-env up`.

use std::path::Path;
use std::process::Command;

use dockless_staging::storage::FileQuery;
use dockless_staging::{SqliteStorage, Storage};
use serde_json::{Value, json};

use crate::support::{self, text};

/// The component: prints every artifact file it was given (path and content), leaves
/// `note.txt` (its run id) as this run's artifact, a usage metric and a result document;
/// `mode` in the parameters makes it misbehave.
const COMPONENT: &str = r#"#!/bin/sh
set -eu
cd /data
mode=$(sed -n 's/.*"mode": *"\([^"]*\)".*/\1/p' config.json)
find artifacts/in -type f | sort | while read -r f; do echo "given $f: $(cat "$f")"; done
echo "run $KBC_RUNID" > artifacts/out/current/note.txt
echo '[{"metric": "rows", "value": 3}]' > out/usage.json
echo '{"processed": 3}' > out/result.json
case "$mode" in
bad-usage) echo 'not a list' > out/usage.json ;;
link) ln -s /etc/passwd artifacts/out/current/passwd ;;
esac
"#;

struct Root(support::Root);

impl std::ops::Deref for Root {
    type Target = support::Root;

    fn deref(&self) -> &support::Root {
        &self.0
    }
}

impl Root {
    fn new() -> Root {
        Root(support::Root::new("jobs need root here"))
    }

    /// The component built from a fresh repository in this root.
    fn component(&self) -> String {
        support::busybox_component(self, COMPONENT, "localhost/artifacts-demo:1")
    }

    /// A job of `image` as run `run_id`, configuration `cfg`; the exit code and the result.
    fn job(
        &self,
        image: &str,
        run_id: &str,
        config: &Value,
        extra: &[&str],
    ) -> (Option<i32>, Value) {
        self.job_env(image, run_id, config, extra, &[])
    }

    /// [`Root::job`] with extra environment variables for dockless.
    fn job_env(
        &self,
        image: &str,
        run_id: &str,
        config: &Value,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (Option<i32>, Value) {
        let mut args = vec![
            "run",
            image,
            "--config",
            "-",
            "--json",
            "--component-id",
            "art",
            "--run-id",
            run_id,
        ];
        args.extend_from_slice(extra);
        let out = self.dockless_with(&args, env, &config.to_string());
        let result = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("no JSON ({e}): {}{}", text(&out.stdout), text(&out.stderr))
        });
        dockless_testkit::assert_clean(self.path(), &["jobs-v1", "rootfs-v1"]);
        (out.status.code(), result)
    }

    fn artifact_files(&self) -> Vec<(i64, Vec<String>)> {
        let storage = SqliteStorage::open(&self.path().join("storage.db")).unwrap();
        let query = FileQuery {
            include_tags: vec!["artifact".into()],
            ..FileQuery::default()
        };
        let mut files: Vec<_> = storage
            .files(&query)
            .unwrap()
            .into_iter()
            .map(|f| (f.id, f.tags))
            .collect();
        files.sort();
        files
    }
}

fn runs(filter: Value) -> Value {
    json!({"parameters": {}, "artifacts": {"runs": {"enabled": true, "filter": filter}}})
}

fn stdout(result: &Value) -> &str {
    result["stdout_tail"].as_str().unwrap()
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn artifacts_of_one_run_reach_the_next_with_limit_and_date_filters() {
    let root = Root::new();
    let image = root.component();
    let cfg = ["--config-id", "cfg"];
    let (code, first) = root.job(&image, "101", &json!({"parameters": {}}), &cfg);
    assert_eq!(code, Some(0), "{first:#}");
    assert_eq!(first["artifacts"]["downloaded"], json!([]));
    let stored = first["artifacts"]["stored"].as_array().unwrap().clone();
    assert_eq!(stored.len(), 1, "{first:#}");
    assert_eq!(first["usage"], json!([{"metric": "rows", "value": 3}]));
    assert_eq!(first["component_result"], json!({"processed": 3}));
    let files = root.artifact_files();
    assert_eq!(
        files[0].1,
        [
            "artifact",
            "branchId-default",
            "componentId-art",
            "configId-cfg",
            "jobId-101"
        ]
    );
    // The next run asks for its configuration's earlier runs.
    let (code, second) = root.job(&image, "102", &runs(json!({})), &cfg);
    assert_eq!(code, Some(0), "{second:#}");
    assert_eq!(second["artifacts"]["downloaded"], json!(stored));
    assert!(
        stdout(&second).contains("given artifacts/in/runs/jobId-101/note.txt: run 101"),
        "{second:#}"
    );
    // limit 1: only the newest; a date in the future: none; all of them otherwise.
    let (_, third) = root.job(&image, "103", &runs(json!({"limit": 1})), &cfg);
    assert!(
        stdout(&third).contains("jobId-102/note.txt: run 102"),
        "{third:#}"
    );
    assert!(!stdout(&third).contains("jobId-101"), "{third:#}");
    let (_, none) = root.job(
        &image,
        "104",
        &runs(json!({"date_since": "2999-01-01"})),
        &cfg,
    );
    assert_eq!(none["artifacts"]["downloaded"], json!([]), "{none:#}");
    let (_, all) = root.job(&image, "105", &runs(json!({"date_since": "-1 day"})), &cfg);
    assert_eq!(
        all["artifacts"]["downloaded"].as_array().unwrap().len(),
        4,
        "{all:#}"
    );
    // Another configuration sees none of them; without a configuration id nothing is kept.
    let (_, other) = root.job(&image, "106", &runs(json!({})), &["--config-id", "other"]);
    assert_eq!(other["artifacts"]["downloaded"], json!([]), "{other:#}");
    let before = root.artifact_files().len();
    let (code, unnamed) = root.job(&image, "107", &runs(json!({})), &[]);
    assert_eq!(code, Some(0));
    assert_eq!(unnamed["artifacts"]["stored"], json!([]));
    assert!(
        unnamed["warnings"]
            .to_string()
            .contains("Ignoring artifacts, configuration Id is not set"),
        "{unnamed:#}"
    );
    assert_eq!(
        root.artifact_files().len(),
        before,
        "nothing stored without a configuration"
    );
    // A bad filter is the user's error, before anything runs.
    let (code, bad) = root.job(&image, "108", &runs(json!({"limit": "five"})), &cfg);
    assert_eq!(code, Some(1), "{bad:#}");
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("artifacts.runs.filter.limit"),
        "{bad:#}"
    );
    assert_eq!(bad["containers"], json!([]));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn hostile_artifacts_and_bad_usage_store_nothing() {
    let root = Root::new();
    let image = root.component();
    let cfg = ["--config-id", "cfg"];
    // An archive someone stored with the artifact tags: an entry climbing out and one through
    // a link out of the target.
    // Archives someone stored with the artifact tags, each for a configuration of its own:
    // an entry climbing out, a link pointing out (and a file written through it), a whiteout,
    // and bytes that are no archive at all.
    let hostile = [
        (
            "climb",
            "[('ok.txt', b'fine', None), ('../../../../tmp/dockless-artifact-escape', b'owned', None)]",
            "\"../../../../tmp/dockless-artifact-escape\" leaves the archive's folder",
        ),
        (
            "link",
            "[('escape', None, '/tmp'), ('escape/pwned', b'owned', None)]",
            "symbolic link \"escape\" -> \"/tmp\" points out of the archive's folder",
        ),
        ("whiteout", "[('.wh.ok.txt', b'', None)]", "is a whiteout"),
    ];
    let script = r#"
import io, sys, tarfile, ast
with tarfile.open(sys.argv[1], "w:gz") as t:
    for name, data, link in ast.literal_eval(sys.argv[2]):
        info = tarfile.TarInfo(name)
        if link:
            info.type = tarfile.SYMTYPE
            info.linkname = link
            t.addfile(info)
        else:
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
"#;
    let store = |config: &str, file: &Path| {
        let mut upload = vec!["storage", "upload", file.to_str().unwrap()];
        let config_tag = format!("configId-{config}");
        for tag in [
            "artifact",
            "branchId-default",
            "componentId-art",
            &config_tag,
            "jobId-666",
        ] {
            upload.extend(["--tag", tag]);
        }
        let out = root.dockless_with(&upload, &[], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let refused = |config: &str, says: &str| {
        let before = root.artifact_files();
        let (code, result) = root.job(&image, "201", &runs(json!({})), &["--config-id", config]);
        assert_eq!(code, Some(2), "{config}: an application error: {result:#}");
        let message = result["message"].as_str().unwrap();
        assert!(message.contains("cannot unpack artifact file"), "{message}");
        assert!(message.contains(says), "{config}: {message}");
        assert_eq!(result["containers"], json!([]), "nothing ran");
        assert_eq!(root.artifact_files(), before, "nothing stored");
    };
    for (config, entries, says) in hostile {
        let archive = root.path().join(format!("{config}.tar.gz"));
        let out = Command::new("/usr/bin/python3")
            .args(["-c", script])
            .arg(&archive)
            .arg(entries)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        store(config, &archive);
        refused(config, says);
    }
    assert!(
        !Path::new("/tmp/pwned").exists() && !Path::new("/tmp/dockless-artifact-escape").exists()
    );
    let junk = root.path().join("junk.tar.gz");
    std::fs::write(&junk, b"\x1f\x8b this is no gzip stream").unwrap();
    store("junk", &junk);
    refused("junk", "artifact file");
    let before = root.artifact_files();

    // A component that leaves a link among its artifacts: the artifact is refused (never
    // followed) with Keboola's warning, the job's data and state are stored all the same.
    let (code, result) = root.job(
        &image,
        "203",
        &json!({"parameters": {"mode": "link"}}),
        &cfg,
    );
    assert_eq!(code, Some(0), "{result:#}");
    let warnings = result["warnings"].to_string();
    assert!(
        warnings.contains("Error uploading artifacts") && warnings.contains("refusing symlink"),
        "{result:#}"
    );
    assert_eq!(root.artifact_files(), before);
    assert_eq!(result["state_stored"], true);
    // A usage file that is not a list: Keboola's application error; nothing stored.
    let (code, result) = root.job(
        &image,
        "204",
        &json!({"parameters": {"mode": "bad-usage"}}),
        &cfg,
    );
    assert_eq!(code, Some(2), "{result:#}");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("invalid usage file out/usage.json"),
        "{result:#}"
    );
    assert_eq!(root.artifact_files(), before);
    assert_eq!(result["state_stored"], false);
    // An artifact over the cap (lowered here from Keboola's 1 GiB): Keboola's warning, in
    // its words; the artifact is not stored, the job is.
    let (code, result) = root.job_env(
        &image,
        "205",
        &json!({"parameters": {}}),
        &cfg,
        &[("DOCKLESS_MAX_ARTIFACT_BYTES", "64")],
    );
    assert_eq!(code, Some(0), "{result:#}");
    assert!(
        result["warnings"]
            .to_string()
            .contains("Artifact exceeds maximum allowed size of 64.00 B"),
        "{result:#}"
    );
    assert_eq!(root.artifact_files(), before);
    assert_eq!(result["state_stored"], true);
}
