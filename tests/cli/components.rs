//! End-to-end: component specifications in Keboola's form (`--components`, issue 14 item 4):
//! a job that names only a component id gets its image, memory, network, default bucket and
//! data type support from the specification, flags win, processors are found by id, and an
//! unknown id or a malformed file is refused before anything runs. Real containers with the
//! demo component and the demo processor, as in [`super::job`].

use std::path::{Path, PathBuf};

use dockless_staging::Storage as _;
use serde_json::{Value, json};

use super::job::{JOB_FLAGS, Job, ORDERS_1, Root, demo_config, demo_image, processor_image};
use crate::support::text;

/// `repository:tag` of a pushed test image as a specification's `definition`.
fn definition(image: &str) -> Value {
    let (uri, tag) = image.rsplit_once(':').unwrap();
    json!({"type": "dockerhub", "uri": uri, "tag": tag})
}

/// The Storage API index with the demo component, a copy component (the demo processor run
/// as a main component) and the demo processor as `demo.upper`.
fn index() -> Value {
    json!({
        "components": [
            {"id": "demo", "type": "application", "name": "Demo",
             "data": {"definition": definition(demo_image()), "memory": "32m",
                      "network": "none", "process_timeout": 600,
                      "synchronous_actions": ["test-connection"]}},
            {"id": "demo.copy", "type": "processor", "name": "Copy",
             "dataTypesConfiguration": {"dataTypesSupport": "hints"},
             "data": {"definition": definition(processor_image()), "memory": "64m",
                      "network": "no-internet", "default_bucket": true,
                      "default_bucket_stage": "out"}},
            {"id": "demo.lenient", "type": "application",
             "data": {"definition": definition(demo_image()), "network": "none",
                      "logging": {"type": "standard", "no_application_errors": true}}},
            {"id": "demo.bridged", "type": "processor",
             "data": {"definition": definition(processor_image())}},
            {"id": "demo.upper", "type": "processor",
             "data": {"definition": definition(processor_image()), "network": "none",
                      "memory": "48m"}}
        ],
        "services": []
    })
}

fn write(root: &Root, name: &str, doc: &Value) -> PathBuf {
    let path = root.path().join(name);
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

/// `dockless run --config - --json FLAGS` (no IMAGE unless the flags give one).
fn run(root: &Root, config: &Value, flags: &[&str]) -> Job {
    let mut args = vec!["run", "--config", "-", "--json"];
    args.extend_from_slice(flags);
    let out = root.dockless(&args, Some(&config.to_string()));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON result ({e}): stdout {} stderr {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    root.assert_clean();
    Job {
        code: out.status.code(),
        result,
        stderr: text(&out.stderr),
    }
}

fn interfaces_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.contains("demo processor: interfaces:"))
        .unwrap_or_else(|| panic!("no interfaces line in {stderr}"))
}

fn untouched(root: &Path) {
    assert!(!root.join("store").exists(), "nothing may be pulled");
    assert!(!root.join("storage.db").exists(), "Storage untouched");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_specification_gives_image_memory_network_default_bucket_and_flags_win() {
    let root = Root::new();
    let file = write(&root, "index.json", &index());
    let components = file.to_str().unwrap();
    // The component says `hints`; the configuration loads its untyped table as untyped.
    let bare = json!({"storage": {"output": {"data_type_support": "none"}},
                      "parameters": {"bare_table": "listing"}});

    // No IMAGE: the specification's; its default bucket, network and data type support.
    let flags = [
        "--components",
        components,
        "--component-id",
        "demo.copy",
        "--config-id",
        "cfg-1",
    ];
    let job = run(&root, &bare, &flags);
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    assert_eq!(job.result["image"], processor_image());
    assert_eq!(job.result["component_id"], "demo.copy");
    assert_eq!(
        job.result["tables"][0]["destination"],
        "out.c-demo-copy-cfg-1.listing"
    );
    assert_eq!(
        root.rows("out.c-demo-copy-cfg-1.listing"),
        ["\"component\"", "\"demo.copy\""]
    );
    assert_eq!(
        interfaces_line(&job.stderr),
        "demo processor: interfaces: lo ; data types: hints"
    );

    // Flags win: network, default bucket, data type support.
    let mut flags_win = flags.to_vec();
    flags_win.extend([
        "--network",
        "host",
        "--default-bucket",
        "out.c-mine",
        "--data-type-support",
        "none",
    ]);
    let job = run(&root, &bare, &flags_win);
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    assert_eq!(job.result["tables"][0]["destination"], "out.c-mine.listing");
    let line = interfaces_line(&job.stderr);
    assert_ne!(line, "demo processor: interfaces: lo ; data types: none");
    assert!(line.ends_with("; data types: none"), "{line}");

    // Keboola's default network, `bridge`: the container has an interface besides lo (pasta's).
    let bridged = [
        "--components",
        components,
        "--component-id",
        "demo.bridged",
        "--config-id",
        "cfg-1",
        "--default-bucket",
        "out.c-bridged",
    ];
    let job = run(&root, &bare, &bridged);
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    let line = interfaces_line(&job.stderr);
    assert!(line.starts_with("demo processor: interfaces: "), "{line}");
    assert_ne!(line, "demo processor: interfaces: lo ; data types: none");

    // Memory from the specification: the demo component's OOM names the spec's limit.
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let oom = demo_config(json!({"simulate": "oom"}));
    let spec_flags = ["--components", components, "--component-id", "demo"];
    let job = run(&root, &oom, &spec_flags);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert_eq!(job.result["image"], demo_image());
    assert_eq!(job.message(), "Component out of memory (exceeded 32m)");
    // ... and --memory wins over it.
    let mut more = spec_flags.to_vec();
    more.extend(["--memory", "40m"]);
    let job = run(&root, &oom, &more);
    assert_eq!(job.message(), "Component out of memory (exceeded 40m)");

    // `logging.no_application_errors` from the specification: a crash is the user's error.
    let crash = demo_config(json!({"simulate": "application-error"}));
    let job = run(&root, &crash, &spec_flags);
    assert_eq!(job.code, Some(2), "{}", job.stderr);
    let lenient = ["--components", components, "--component-id", "demo.lenient"];
    let job = run(&root, &crash, &lenient);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert_eq!(job.result["class"], "user");

    // The default file in the state directory, without --components.
    std::fs::copy(&file, root.path().join("components.json")).unwrap();
    let job = run(
        &root,
        &bare,
        &["--component-id", "demo.copy", "--config-id", "cfg-2"],
    );
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    assert!(root.table_exists("out.c-demo-copy-cfg-2.listing"));

    // Keboola's rule: a default bucket needs a configuration id.
    let job = run(&root, &bare, &["--component-id", "demo.copy"]);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(
        job.message().contains("Configuration ID not set"),
        "{}",
        job.message()
    );
    assert_eq!(job.result["containers"], json!([]));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_processor_is_found_by_id_with_its_own_settings() {
    let root = Root::new();
    let file = write(&root, "index.json", &index());
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let mut config = demo_config(json!({}));
    config["processors"] = json!({
        "before": [{"definition": {"component": "demo.upper"},
                    "parameters": {"upper_column": "customer"}}]
    });
    let mut flags = vec!["--components", file.to_str().unwrap()];
    flags.extend_from_slice(JOB_FLAGS);
    // The main component's network is host: the processor's own (none) still applies.
    flags.extend(["--network", "host"]);
    let job = run(&root, &config, &flags);
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    let containers = job.result["containers"].as_array().unwrap();
    assert_eq!(containers[0]["role"], "before");
    assert_eq!(containers[0]["image"], processor_image());
    assert_eq!(containers[1]["image"], demo_image());
    assert_eq!(
        interfaces_line(&job.stderr),
        "demo processor: interfaces: lo ; data types: none"
    );
    assert_eq!(
        root.rows("out.c-demo.customer_totals"),
        [
            "\"customer\",\"total\"",
            "\"ALICE\",\"30.00\"",
            "\"BOB\",\"5.50\"",
            "\"CAROL\",\"7.25\"",
        ]
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn an_unknown_id_or_a_malformed_file_is_refused_before_anything_runs() {
    let root = Root::new();
    let file = write(&root, "index.json", &index());
    let config = json!({"parameters": {}});

    let job = run(
        &root,
        &config,
        &[
            "--components",
            file.to_str().unwrap(),
            "--component-id",
            "nope",
        ],
    );
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert_eq!(job.result["class"], "user");
    let message = job.message();
    assert!(message.contains("\"nope\""), "{message}");
    assert!(message.contains(file.to_str().unwrap()), "{message}");
    assert!(message.contains("--components"), "{message}");
    assert_eq!(job.result["containers"], json!([]));
    untouched(root.path());

    // No file at all: the message says where specifications come from.
    let job = run(&root, &config, &["--component-id", "demo"]);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(
        job.message().contains("components.json"),
        "{}",
        job.message()
    );

    // An explicit file without the id is refused even with an IMAGE.
    let mut args = vec![demo_image(), "--components", file.to_str().unwrap()];
    args.extend(["--component-id", "nope"]);
    let job = run(&root, &config, &args);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    untouched(root.path());

    // A sync action the specification does not list is refused, as Keboola refuses it; a
    // listed one runs.
    let demo = [
        "--components",
        file.to_str().unwrap(),
        "--component-id",
        "demo",
    ];
    let job = run(&root, &json!({"action": "drop-tables"}), &demo);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(
        job.message()
            .contains("Action \"drop-tables\" is not defined"),
        "{}",
        job.message()
    );
    untouched(root.path());
    let job = run(&root, &json!({"action": "test-connection"}), &demo);
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    assert_eq!(job.result["action_result"]["component"], "demo");

    // A malformed file names the file and the field.
    let mut bad = index();
    bad["components"][1]["data"]["network"] = json!("host");
    let bad_file = write(&root, "bad.json", &bad);
    let job = run(
        &root,
        &config,
        &[
            "--components",
            bad_file.to_str().unwrap(),
            "--component-id",
            "demo",
        ],
    );
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    let message = job.message();
    assert!(message.contains(bad_file.to_str().unwrap()), "{message}");
    assert!(message.contains("components[1].data.network"), "{message}");
    assert_eq!(job.result["containers"], json!([]));
}

/// A project directory in the layout `kbc pull` writes: a manifest, a branch folder, the demo
/// component's configuration with two enabled rows and a disabled one, and its variables
/// with default values.
fn kbc_project(dir: &Path) {
    let put = |path: &str, doc: Value| {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    };
    put(
        ".keboola/manifest.json",
        json!({
            "version": 2,
            "project": {"id": 1234, "apiHost": "connection.keboola.com"},
            "allowTargetEnv": false,
            "sortBy": "id",
            "naming": {"branch": "{branch_name}", "config": "{component_type}/{component_id}/{config_name}",
                       "configRow": "rows/{config_row_name}", "variablesConfig": "variables",
                       "variablesValuesRow": "values/{config_row_name}"},
            "allowedBranches": ["__all__"],
            "ignoredComponents": [],
            "branches": [{"id": 321, "path": "main"}],
            "configurations": [
                {"branchId": 321, "componentId": "demo", "id": "cfg-p",
                 "path": "application/demo/orders",
                 "rows": [{"id": "r1", "path": "rows/low-vat"},
                          {"id": "r2", "path": "rows/broken"},
                          {"id": "r3", "path": "rows/variable-vat"}]},
                {"branchId": 321, "componentId": "keboola.variables", "id": "vars-1",
                 "path": "variables",
                 "relations": [{"componentId": "demo", "configId": "cfg-p", "type": "variablesFor"}],
                 "rows": [{"id": "values-1", "path": "values/default",
                           "relations": [{"type": "variablesValuesFor"}]}]}
            ]
        }),
    );
    let config = "main/application/demo/orders";
    put(
        &format!("{config}/meta.json"),
        json!({"name": "Orders", "isDisabled": false}),
    );
    put(
        &format!("{config}/config.json"),
        json!({"storage": {"input": {"tables": [
            {"source": "in.c-demo.orders", "destination": "orders.csv"}]}}}),
    );
    let row = |name: &str, disabled: bool, parameters: Value, table: &str| {
        put(
            &format!("{config}/rows/{name}/meta.json"),
            json!({"name": name, "isDisabled": disabled}),
        );
        put(
            &format!("{config}/rows/{name}/config.json"),
            json!({"parameters": parameters, "storage": {"output": {"tables": [
                {"source": "orders_enriched.csv", "destination": table}]}}}),
        );
    };
    row(
        "low-vat",
        false,
        json!({"vat_rate": 0.1}),
        "out.c-r1.enriched",
    );
    row(
        "broken",
        true,
        json!({"simulate": "application-error"}),
        "out.c-r2.enriched",
    );
    row(
        "variable-vat",
        false,
        json!({"vat_rate": "{{ vat }}"}),
        "out.c-r3.enriched",
    );
    put(
        &format!("{config}/variables/config.json"),
        json!({"variables": [{"name": "vat", "type": "string"}]}),
    );
    put(
        &format!("{config}/variables/meta.json"),
        json!({"name": "Variables"}),
    );
    put(
        &format!("{config}/variables/values/default/config.json"),
        json!({"values": [{"name": "vat", "value": "0.5"}]}),
    );
    put(
        &format!("{config}/variables/values/default/meta.json"),
        json!({"name": "Default values"}),
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_kbc_project_configuration_runs_with_its_rows_and_variables() {
    let root = Root::new();
    let project = root.path().join("project");
    kbc_project(&project);
    let file = write(&root, "index.json", &index());
    let components = file.to_str().unwrap();
    let dir = project.to_str().unwrap();

    // Without PATH: the runnable configurations (not the variables).
    let out = root.dockless(&["run", "--project", dir], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "main/application/demo/orders\tdemo\tcfg-p\t3 rows\n"
    );

    root.import(ORDERS_1, "in.c-demo.orders", false);
    let job = run_project(
        &root,
        &[
            "--project",
            dir,
            "main/application/demo/orders/",
            "--components",
            components,
        ],
    );
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    assert_eq!(job.result["config_id"], "cfg-p");
    let statuses: Vec<(&str, &str)> = job.result["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["row_id"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [("r1", "success"), ("r2", "skipped"), ("r3", "success")]
    );
    assert!(
        root.rows("out.c-r1.enriched")
            .contains(&"\"1\",\"alice\",\"10.00\",\"11.00\",\"1\"".to_string())
    );
    // The variable's default value from the project's variables/values/default.
    assert!(
        root.rows("out.c-r3.enriched")
            .contains(&"\"1\",\"alice\",\"10.00\",\"15.00\",\"1\"".to_string())
    );
    assert!(!root.table_exists("out.c-r2.enriched"));
    let state = |row: &str| {
        root.storage()
            .state(&dockless_staging::StateKey {
                component: "demo".into(),
                config: "cfg-p".into(),
                row: Some(row.into()),
            })
            .unwrap()
    };
    assert_eq!(state("r1").unwrap()["component"]["last_id"], 4);
    assert_eq!(state("r3").unwrap()["component"]["runs"], 1);
    assert_eq!(state("r2"), None);

    // A path the manifest does not have is the user's error, nothing run.
    let job = run_project(
        &root,
        &["--project", dir, "main/nope", "--components", components],
    );
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(job.message().contains("main/nope"), "{}", job.message());
    assert_eq!(job.result["containers"], json!([]));
}

fn run_project(root: &Root, args: &[&str]) -> Job {
    let mut all = vec!["run", "--json"];
    all.extend_from_slice(args);
    let out = root.dockless(&all, None);
    let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON result ({e}): stdout {} stderr {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    root.assert_clean();
    Job {
        code: out.status.code(),
        result,
        stderr: text(&out.stderr),
    }
}
