//! End-to-end: the environment a job's containers get (`KBC_BRANCHID` always,
//! `KBC_CONFIGVERSION` from a stored configuration, `-e` for the rest, never a `KBC_*` name)
//! and Keboola's debug mode (the data folder stored as zips at each stage, no output mapping,
//! no state). A busybox component built here. Needs root and `scripts/test-env up`.

use std::process::Command;

use dockless_staging::storage::FileQuery;
use dockless_staging::{SqliteStorage, Storage};
use serde_json::{Value, json};

use crate::support::{self, json_of, text};

/// Prints its environment (the runner's and `MY_*`), writes a table and a state.
const COMPONENT: &str = "env | grep -e '^KBC_' -e '^MY_' | sort\n\
                         mkdir -p /data/out/tables\n\
                         printf 'id\\n1\\n' > /data/out/tables/t.csv\n\
                         echo '{\"n\": 1}' > /data/out/state.json\n";

const SECRET: &str = "hush-77";

fn component(root: &support::Root) -> String {
    support::busybox_component(root, COMPONENT, "localhost/env-dump:1")
}

/// A configuration in the Storage API's form, version 4.
fn stored() -> String {
    json!({
        "id": "cfg-7",
        "version": 4,
        "configuration": {"parameters": {"#secret": SECRET}},
    })
    .to_string()
}

fn job(root: &support::Root, image: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec![
        "run",
        image,
        "--config",
        "-",
        "--json",
        "--component-id",
        "env-dump",
        "--default-bucket",
        "in.c-env",
    ];
    args.extend_from_slice(extra);
    let out = root.dockless_with(&args, &[], &stored());
    dockless_testkit::assert_clean(root.path(), &["jobs-v1", "rootfs-v1"]);
    (out.status.code(), json_of(&out))
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_job_gets_keboolas_variables_and_its_own_but_no_kbc_override() {
    let root = support::Root::new("jobs need root here");
    let image = component(&root);
    let (code, result) = job(&root, &image, &["-e", "MY_VAR=from-e", "--run-id", "555"]);
    assert_eq!(code, Some(0), "{result:#}");
    let env = result["stdout_tail"].as_str().unwrap();
    for line in [
        "KBC_BRANCHID=default",
        "KBC_COMPONENTID=env-dump",
        "KBC_COMPONENT_RUN_MODE=run",
        "KBC_CONFIGID=cfg-7",
        "KBC_CONFIGVERSION=4",
        "KBC_DATADIR=/data/",
        "KBC_RUNID=555",
        "MY_VAR=from-e",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in:\n{env}");
    }
    assert!(!env.contains("KBC_TOKEN"), "{env}");
    // A branch and a version given by flags.
    let (_, result) = job(
        &root,
        &image,
        &["--branch-id", "123", "--config-version", "9"],
    );
    let env = result["stdout_tail"].as_str().unwrap();
    assert!(env.lines().any(|l| l == "KBC_BRANCHID=123"), "{env}");
    assert!(env.lines().any(|l| l == "KBC_CONFIGVERSION=9"), "{env}");
    // The runner's names are its own.
    let (code, result) = job(&root, &image, &["-e", "KBC_RUNID=mine"]);
    assert_eq!(code, Some(1), "{result:#}");
    assert!(
        result["message"].as_str().unwrap().contains("KBC_"),
        "{result:#}"
    );
    assert_eq!(result["containers"], json!([]));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn debug_mode_stores_each_stage_and_maps_no_output() {
    let root = support::Root::new("jobs need root here");
    let image = component(&root);
    let (code, result) = job(&root, &image, &["--debug", "--run-id", "777"]);
    assert_eq!(code, Some(0), "{result:#}");
    assert!(
        result["stdout_tail"]
            .as_str()
            .unwrap()
            .contains("KBC_COMPONENT_RUN_MODE=debug"),
        "{result:#}"
    );
    // No output mapping and no state, only the archives.
    assert_eq!(result["tables"], json!([]), "{result:#}");
    assert_eq!(result["state_stored"], false);
    let ids: Vec<i64> = result["debug_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{result:#}");
    let storage = SqliteStorage::open(&root.path().join("storage.db")).unwrap();
    assert!(storage.tables().unwrap().is_empty());
    let files = storage
        .files(&FileQuery {
            include_tags: vec!["debug".into()],
            ..FileQuery::default()
        })
        .unwrap();
    let mut named: Vec<(String, Vec<String>, bool)> = files
        .iter()
        .map(|f| (f.name.clone(), f.tags.clone(), f.is_permanent))
        .collect();
    named.sort();
    let tags: Vec<String> = ["debug", "env-dump", "jobId:777", "rowId:"]
        .map(String::from)
        .into();
    let mut sorted_tags = tags.clone();
    sorted_tags.sort();
    assert_eq!(
        named,
        [
            ("stage_0.zip".to_string(), sorted_tags.clone(), false),
            ("stage_output.zip".to_string(), sorted_tags, false),
        ]
    );
    // What each archive holds: the folder at that stage, the secret redacted.
    let listing = |id: i64| -> Value {
        let zip = root.path().join(format!("{id}.zip"));
        let out = root.dockless_with(
            &[
                "storage",
                "download",
                &id.to_string(),
                "-o",
                zip.to_str().unwrap(),
            ],
            &[],
            "",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let script = "import json, sys, zipfile\n\
                      z = zipfile.ZipFile(sys.argv[1])\n\
                      print(json.dumps({n: z.read(n).decode() for n in z.namelist() if not n.endswith('/')}))";
        let out = Command::new("/usr/bin/python3")
            .args(["-c", script])
            .arg(&zip)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let by_name = |name: &str| files.iter().find(|f| f.name == name).unwrap().id;
    let before = listing(by_name("stage_0.zip"));
    let after = listing(by_name("stage_output.zip"));
    assert!(before.get("out/tables/t.csv").is_none(), "{before:#}");
    assert_eq!(after["out/tables/t.csv"], "id\n1\n", "{after:#}");
    for archive in [&before, &after] {
        let config = archive["config.json"].as_str().unwrap();
        assert!(
            !config.contains(SECRET) && config.contains("#secret"),
            "{config}"
        );
    }
    assert!(!result.to_string().contains(SECRET));
}
