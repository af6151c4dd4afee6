//! End-to-end: what `dockless run --project` makes of a `kbc` project's transformation code
//! blocks and shared code (issue 14 item 5): a Snowflake transformation with two blocks of
//! codes in `blocks/`, linking two codes of its shared code (`shared_code_path`,
//! `-- {{:codes/<name>}}`) that use a variable; an application naming the shared code by
//! `shared_code_id` and `shared_code_row_ids` with a `{{ row id }}` placeholder; malformed
//! projects refused before anything runs. A busybox component built here prints the
//! `config.json` it was given. Needs root and `scripts/test-env up`.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{self, json_of, text};

/// Prints the configuration it was given.
const COMPONENT: &str = "cat /data/config.json\n";

const IMAGE: &str = "localhost/kbc-dump:1";
const SNOWFLAKE: &str = "keboola.snowflake-transformation";
const TRANSFORMATION: &str = "main/transformation/keboola.snowflake-transformation/orders";
const SHARED: &str = "main/_shared/keboola.snowflake-transformation";
const APPLICATION: &str = "main/application/kbc.dump/uses-shared-code";
const PYTHON: &str = "keboola.python-transformation-v2";
const PYTHON_TRANSFORMATION: &str = "main/transformation/keboola.python-transformation-v2/clean";

/// The Storage API index: the transformation's and the application's component both run the
/// printing image.
fn index() -> Value {
    let definition = json!({"type": "dockerhub", "uri": "localhost/kbc-dump", "tag": "1"});
    json!({"components": [
        {"id": SNOWFLAKE, "type": "transformation", "flags": ["genericCodeBlocksUI"],
         "data": {"definition": definition, "network": "none"}},
        {"id": "kbc.dump", "type": "application",
         "data": {"definition": definition, "network": "none"}},
        {"id": PYTHON, "type": "transformation", "flags": ["genericCodeBlocksUI"],
         "data": {"definition": definition, "network": "none"}}
    ]})
}

fn put(dir: &Path, path: &str, text: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn put_json(dir: &Path, path: &str, doc: &Value) {
    put(dir, path, &serde_json::to_string_pretty(doc).unwrap());
}

/// The project in the layout `kbc pull` writes.
fn project(dir: &Path) {
    put_json(
        dir,
        ".keboola/manifest.json",
        &json!({
            "version": 2,
            "project": {"id": 1234, "apiHost": "connection.keboola.com"},
            "allowTargetEnv": false,
            "sortBy": "path",
            "naming": {"branch": "{branch_name}",
                       "config": "{component_type}/{component_id}/{config_name}",
                       "configRow": "rows/{config_row_name}",
                       "sharedCodeConfig": "_shared/{target_component_id}",
                       "sharedCodeConfigRow": "codes/{config_row_name}",
                       "variablesConfig": "variables",
                       "variablesValuesRow": "values/{config_row_name}"},
            "allowedBranches": ["__all__"],
            "ignoredComponents": [],
            "branches": [{"id": 321, "path": "main"}],
            "configurations": [
                {"branchId": 321, "componentId": "keboola.shared-code", "id": "sc-1",
                 "path": "_shared/keboola.snowflake-transformation",
                 "rows": [{"id": "9001", "path": "codes/create-shared"},
                          {"id": "9002", "path": "codes/vat-rate"}]},
                {"branchId": 321, "componentId": "kbc.dump", "id": "app-1",
                 "path": "application/kbc.dump/uses-shared-code", "rows": []},
                {"branchId": 321, "componentId": SNOWFLAKE, "id": "tr-1",
                 "path": "transformation/keboola.snowflake-transformation/orders", "rows": []},
                {"branchId": 321, "componentId": "keboola.variables", "id": "vars-1",
                 "path": "variables",
                 "relations": [{"componentId": SNOWFLAKE, "configId": "tr-1",
                                "type": "variablesFor"}],
                 "rows": [{"id": "values-1", "path": "values/default",
                           "relations": [{"type": "variablesValuesFor"}]}]},
                {"branchId": 321, "componentId": "keboola.shared-code", "id": "sc-py",
                 "path": "_shared/keboola.python-transformation-v2",
                 "rows": [{"id": "9101", "path": "codes/helper"}]},
                {"branchId": 321, "componentId": PYTHON, "id": "py-1",
                 "path": "transformation/keboola.python-transformation-v2/clean", "rows": []}
            ]
        }),
    );
    // The shared code: its target component, two codes.
    put_json(
        dir,
        &format!("{SHARED}/config.json"),
        &json!({"componentId": SNOWFLAKE}),
    );
    put_json(
        dir,
        &format!("{SHARED}/meta.json"),
        &json!({"name": "Shared Codes", "isDisabled": false}),
    );
    for (name, title, code) in [
        (
            "create-shared",
            "Create shared",
            "CREATE TABLE \"shared\" (\"id\" int);\nINSERT INTO \"shared\" VALUES (1);\n",
        ),
        (
            "vat-rate",
            "VAT rate",
            "SELECT {{ vat }} * 2 AS \"double\";\n",
        ),
    ] {
        put(dir, &format!("{SHARED}/codes/{name}/code.sql"), code);
        put(dir, &format!("{SHARED}/codes/{name}/config.json"), "{}");
        put_json(
            dir,
            &format!("{SHARED}/codes/{name}/meta.json"),
            &json!({"name": title}),
        );
    }
    // The transformation: two blocks, four codes, two of them linking shared code.
    let t = TRANSFORMATION;
    put_json(
        dir,
        &format!("{t}/config.json"),
        &json!({"parameters": {"warehouse": "small"},
                "shared_code_path": "_shared/keboola.snowflake-transformation"}),
    );
    put_json(
        dir,
        &format!("{t}/meta.json"),
        &json!({"name": "Orders", "isDisabled": false}),
    );
    let code = |block: &str, block_name: &str, code: &str, code_name: &str, sql: &str| {
        put_json(
            dir,
            &format!("{t}/blocks/{block}/meta.json"),
            &json!({"name": block_name}),
        );
        put_json(
            dir,
            &format!("{t}/blocks/{block}/{code}/meta.json"),
            &json!({"name": code_name}),
        );
        put(dir, &format!("{t}/blocks/{block}/{code}/code.sql"), sql);
    };
    code(
        "001-prepare",
        "Prepare",
        "001-tables",
        "Tables",
        "CREATE TABLE \"orders\" (\"id\" int, \"note\" varchar);\n\n\
         INSERT INTO \"orders\" VALUES (1, 'a;b');\n\n-- keep ; this\nSELECT 1;\n",
    );
    code(
        "001-prepare",
        "Prepare",
        "002-shared",
        "Shared",
        "-- {{:codes/create-shared}}\n",
    );
    code(
        "002-report",
        "Report",
        "001-vat",
        "VAT",
        "SELECT {{ vat }} AS \"vat\";\n\n-- {{:codes/vat-rate}}\n",
    );
    code(
        "002-report",
        "Report",
        "002-final",
        "Final",
        "EXECUTE IMMEDIATE $$\n  SELECT 1;\n  SELECT 2;\n$$;\n",
    );
    put_json(
        dir,
        &format!("{t}/variables/config.json"),
        &json!({"variables": [{"name": "vat", "type": "string"}]}),
    );
    put_json(
        dir,
        &format!("{t}/variables/values/default/config.json"),
        &json!({"values": [{"name": "vat", "value": "0.21"}]}),
    );
    // A Python transformation: each code file one script, a `#` link to its shared code.
    let shared = "main/_shared/keboola.python-transformation-v2";
    put_json(
        dir,
        &format!("{shared}/config.json"),
        &json!({"componentId": PYTHON}),
    );
    put(
        dir,
        &format!("{shared}/codes/helper/code.py"),
        "def double(x):\n    return x * 2\n",
    );
    put_json(
        dir,
        &format!("{shared}/codes/helper/meta.json"),
        &json!({"name": "Helper"}),
    );
    let p = PYTHON_TRANSFORMATION;
    put_json(
        dir,
        &format!("{p}/config.json"),
        &json!({"parameters": {"packages": ["pandas"]},
                "shared_code_path": "_shared/keboola.python-transformation-v2"}),
    );
    put_json(
        dir,
        &format!("{p}/blocks/001-main/meta.json"),
        &json!({"name": "Main"}),
    );
    for (folder, name, code) in [
        ("001-helper", "Helper", "# {{:codes/helper}}\n"),
        (
            "002-run",
            "Run",
            "import csv; print(double(2))\n\nprint('done')\n\n",
        ),
    ] {
        put_json(
            dir,
            &format!("{p}/blocks/001-main/{folder}/meta.json"),
            &json!({"name": name}),
        );
        put(dir, &format!("{p}/blocks/001-main/{folder}/code.py"), code);
    }
    // An application that names the shared code by id (kbc keeps these keys as they are for
    // components other than transformations with code blocks).
    put_json(
        dir,
        &format!("{APPLICATION}/config.json"),
        &json!({"shared_code_id": "sc-1", "shared_code_row_ids": ["9001"],
                "parameters": {"script": ["-- start", "{{ 9001 }}", "-- end"]}}),
    );
}

/// `dockless run --json --project DIR PATH --components FILE`: exit code and result.
fn run(root: &support::Root, dir: &Path, path: &str) -> (Option<i32>, Value) {
    let components = root.path().join("index.json");
    std::fs::write(&components, index().to_string()).unwrap();
    let out = root.dockless_with(
        &[
            "run",
            "--json",
            "--project",
            dir.to_str().unwrap(),
            path,
            "--components",
            components.to_str().unwrap(),
        ],
        &[],
        "",
    );
    dockless_testkit::assert_clean(root.path(), &["jobs-v1", "rootfs-v1"]);
    (out.status.code(), json_of(&out))
}

/// The configuration the component printed.
fn seen(result: &Value) -> Value {
    let stdout = result["stdout_tail"].as_str().unwrap();
    assert!(stdout.len() < 3500, "the whole config.json must be kept");
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_transformations_code_blocks_and_shared_code_run_as_keboola_assembles_them() {
    let root = support::Root::new("jobs need root here");
    let dir = root.path().join("project");
    project(&dir);

    // Listed as runnable: the transformation and the application, not the shared code or
    // the variables.
    let out = root.dockless_with(&["run", "--project", dir.to_str().unwrap()], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{APPLICATION}\tkbc.dump\tapp-1\t0 rows\n\
             {TRANSFORMATION}\t{SNOWFLAKE}\ttr-1\t0 rows\n\
             {PYTHON_TRANSFORMATION}\t{PYTHON}\tpy-1\t0 rows\n"
        )
    );

    support::busybox_component(&root, COMPONENT, IMAGE);
    let (code, result) = run(&root, &dir, TRANSFORMATION);
    assert_eq!(code, Some(0), "{result:#}");
    assert_eq!(result["component_id"], SNOWFLAKE);
    assert_eq!(result["config_id"], "tr-1");
    let config = seen(&result);
    assert_eq!(
        config["parameters"],
        json!({
            "warehouse": "small",
            "blocks": [
                {"name": "Prepare", "codes": [
                    {"name": "Tables", "script": [
                        "CREATE TABLE \"orders\" (\"id\" int, \"note\" varchar);",
                        "INSERT INTO \"orders\" VALUES (1, 'a;b');",
                        "-- keep ; this\nSELECT 1;"]},
                    {"name": "Shared", "script": [
                        "CREATE TABLE \"shared\" (\"id\" int);",
                        "INSERT INTO \"shared\" VALUES (1);"]}]},
                {"name": "Report", "codes": [
                    {"name": "VAT", "script": [
                        "SELECT 0.21 AS \"vat\";",
                        "SELECT 0.21 * 2 AS \"double\";"]},
                    {"name": "Final", "script": [
                        "EXECUTE IMMEDIATE $$\n  SELECT 1;\n  SELECT 2;\n$$;"]}]}
            ]
        }),
        "{config:#}"
    );
    assert!(
        !config.to_string().contains("shared_code_path"),
        "{config:#}"
    );

    // Python: the whole code one script, the link replaced by the shared code's.
    let (code, result) = run(&root, &dir, PYTHON_TRANSFORMATION);
    assert_eq!(code, Some(0), "{result:#}");
    let config = seen(&result);
    assert_eq!(
        config["parameters"],
        json!({"packages": ["pandas"], "blocks": [{"name": "Main", "codes": [
            {"name": "Helper", "script": ["def double(x):\n    return x * 2"]},
            {"name": "Run", "script": ["import csv; print(double(2))\n\nprint('done')"]}]}]}),
        "{config:#}"
    );
    assert_eq!(config["shared_code_id"], "sc-py");

    // Shared code named by id and row ids: the `{{ 9001 }}` element becomes the row's code.
    let (code, result) = run(&root, &dir, APPLICATION);
    assert_eq!(code, Some(0), "{result:#}");
    assert_eq!(
        seen(&result)["parameters"]["script"],
        json!([
            "-- start",
            "CREATE TABLE \"shared\" (\"id\" int);",
            "INSERT INTO \"shared\" VALUES (1);",
            "-- end"
        ])
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_malformed_transformation_or_shared_code_is_refused_before_anything_runs() {
    let root = support::Root::new("jobs need root here");
    let t = TRANSFORMATION;
    type Change = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Change, String)> = vec![
        (
            "a missing code file",
            Box::new(move |d| {
                std::fs::remove_file(d.join(format!("{t}/blocks/002-report/002-final/code.sql")))
                    .unwrap()
            }),
            format!("{t}/blocks/002-report/002-final: missing code file"),
        ),
        (
            "a missing shared code file",
            Box::new(|d| {
                std::fs::remove_file(d.join(format!("{SHARED}/codes/vat-rate/code.sql"))).unwrap()
            }),
            format!("{SHARED}/codes/vat-rate/code.sql: cannot read"),
        ),
        (
            "a shared code path outside the project",
            Box::new(move |d| {
                put_json(
                    d,
                    &format!("{t}/config.json"),
                    &json!({"shared_code_path": "../../_shared"}),
                )
            }),
            format!(
                "{t}/config.json: shared_code_path: \"../../_shared\" points outside the project"
            ),
        ),
        (
            "a shared code path at nothing",
            Box::new(move |d| {
                put_json(
                    d,
                    &format!("{t}/config.json"),
                    &json!({"shared_code_path": "_shared/keboola.r-transformation"}),
                )
            }),
            format!(
                "{t}/config.json: shared_code_path: no shared code at \
                 \"main/_shared/keboola.r-transformation\""
            ),
        ),
        (
            "shared code of another component",
            Box::new(move |d| {
                put_json(
                    d,
                    &format!("{t}/config.json"),
                    &json!({"shared_code_path": "_shared/keboola.python-transformation-v2"}),
                )
            }),
            "main/_shared/keboola.python-transformation-v2/config.json: componentId: the \
             shared code is for keboola.python-transformation-v2"
                .to_string(),
        ),
        (
            "a link to no shared code",
            Box::new(move |d| {
                put(
                    d,
                    &format!("{t}/blocks/001-prepare/002-shared/code.sql"),
                    "-- {{:codes/gone}}",
                )
            }),
            format!("{t}/blocks/001-prepare/002-shared/code.sql: {{{{:codes/gone}}}}: no code"),
        ),
        (
            "a symlink out of the project",
            Box::new(move |d| {
                let code = d.join(format!("{t}/blocks/001-prepare/001-tables/code.sql"));
                std::fs::remove_file(&code).unwrap();
                std::os::unix::fs::symlink("/etc/hostname", &code).unwrap();
            }),
            format!("{t}/blocks/001-prepare/001-tables/code.sql: is a link out of the project"),
        ),
    ];
    for (i, (what, change, words)) in cases.iter().enumerate() {
        let dir = root.path().join(format!("project-{i}"));
        project(&dir);
        change(&dir);
        let (code, result) = run(&root, &dir, TRANSFORMATION);
        assert_eq!(code, Some(1), "{what}: {result:#}");
        assert_eq!(result["class"], "user", "{what}");
        let message = result["message"].as_str().unwrap();
        assert!(message.contains(words.as_str()), "{what}: {message}");
        assert_eq!(result["containers"], json!([]), "{what}");
    }
    // Nothing ran: no image was pulled, Storage was not opened.
    assert!(!root.path().join("store").exists());
    assert!(!root.path().join("storage.db").exists());
}
