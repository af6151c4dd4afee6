//! End-to-end: configurations as Keboola users keep them (issue 14): values only Keboola's
//! stack can resolve refused up front, the state warning of a run without a configuration
//! id, configurations with rows, variables, vault and shared code. Real containers with the
//! demo component, as in [`super::job`].

use dockless_staging::{StateKey, Storage};
use dockless_testkit::test_env;
use serde_json::{Value, json};

use super::job::{JOB_FLAGS, ORDERS_1, Root, demo_config, demo_image};
use crate::support::text;

#[test]
#[ignore = "needs root and scripts/test-env"]
fn encrypted_values_and_oauth_references_are_refused_before_anything_runs() {
    let root = Root::new();
    // The image does not exist: had anything been pulled, the error would say so.
    let image = format!("{}/no-such-component:1", test_env().registry);
    for (config, path, words) in [
        (
            demo_config(json!({"db": {"#password": "KBC::ProjectSecure::eJwBAAAA"}})),
            "parameters.db.#password",
            "KBC::ProjectSecure::",
        ),
        (
            demo_config(json!({"hosts": [{"#key": "KBC::ConfigSecureKV::abc"}]})),
            "parameters.hosts[0].#key",
            "KBC::ConfigSecureKV::",
        ),
        (
            demo_config(json!({"token": "KBC::ComponentSecure::xyz"})),
            "parameters.token",
            "KBC::ComponentSecure::",
        ),
        (
            json!({"authorization": {"oauth_api": {"id": "123456", "version": 3}}}),
            "authorization.oauth_api",
            "OAuth Broker",
        ),
    ] {
        let job = root.job(&image, &config, JOB_FLAGS);
        assert_eq!(job.code, Some(1), "{}", job.stderr);
        assert_eq!(job.result["class"], "user");
        let message = job.message();
        assert!(message.contains(path), "{message}");
        assert!(message.contains(words), "{message}");
        assert_eq!(job.result["containers"], json!([]));
        assert_eq!(job.result["digest"], Value::Null);
        assert!(!root.path().join("store").exists(), "nothing may be pulled");
        assert!(
            !root.path().join("storage.db").exists(),
            "Storage untouched"
        );
    }
    let job = root.job(
        &image,
        &json!({"authorization": {"oauth_api": {"id": "1"}}}),
        JOB_FLAGS,
    );
    assert!(
        job.message()
            .contains("authorization.oauth_api.credentials"),
        "{}",
        job.message()
    );
    let job = root.job(
        &image,
        &demo_config(json!({"#db": "KBC::ProjectSecure::abc"})),
        JOB_FLAGS,
    );
    assert!(job.message().contains("plain value"), "{}", job.message());
    assert!(job.stderr.contains("parameters.#db"), "{}", job.stderr);

    // Image parameters are the component's: a cipher there is refused too.
    let params = root.path().join("image-parameters.json");
    std::fs::write(
        &params,
        json!({"#api_key": "KBC::ComponentSecure::zz"}).to_string(),
    )
    .unwrap();
    let mut flags = JOB_FLAGS.to_vec();
    flags.extend(["--image-parameters", params.to_str().unwrap()]);
    let job = root.job(&image, &demo_config(json!({})), &flags);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(
        job.message().contains("image_parameters.#api_key"),
        "{}",
        job.message()
    );

    // Credentials given with the reference are used as they are: the job runs.
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let mut config = demo_config(json!({}));
    config["authorization"] =
        json!({"oauth_api": {"id": "1", "credentials": {"appKey": "k", "#data": "{}"}}});
    let job = root.job(demo_image(), &config, JOB_FLAGS);
    assert_eq!(job.code, Some(0), "{}", job.stderr);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_state_left_without_a_configuration_id_is_reported_as_not_stored() {
    let root = Root::new();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let unnamed = root.job(
        demo_image(),
        &demo_config(json!({})),
        &["--component-id", "demo"],
    );
    assert_eq!(unnamed.code, Some(0), "{}", unnamed.stderr);
    assert_eq!(unnamed.result["state_stored"], false);
    let warnings = unnamed.result["warnings"].to_string();
    assert!(
        warnings.contains("out/state.json") && warnings.contains("not stored"),
        "{warnings}"
    );
    assert!(warnings.contains("--config-id"), "{warnings}");
    assert!(
        unnamed
            .stderr
            .contains("warning: the component left out/state.json"),
        "{}",
        unnamed.stderr
    );

    // No state left: nothing to say. With a configuration id: stored, no warning.
    let quiet = root.job(
        demo_image(),
        &demo_config(json!({"keep_state": false})),
        &["--component-id", "demo"],
    );
    assert_eq!(quiet.code, Some(0), "{}", quiet.stderr);
    assert!(
        !quiet.result["warnings"].to_string().contains("state"),
        "{}",
        quiet.result
    );
    let named = root.job(demo_image(), &demo_config(json!({})), JOB_FLAGS);
    assert_eq!(named.result["state_stored"], true);
    assert!(
        !named.result["warnings"].to_string().contains("state"),
        "{}",
        named.result
    );
}

/// `dockless run IMAGE --config - --json FLAGS` with `config` on stdin: the exit code, the
/// JSON result and stderr; nothing may be left behind.
fn run_json(
    root: &Root,
    image: &str,
    config: &Value,
    flags: &[&str],
) -> (Option<i32>, Value, String) {
    let mut args = vec!["run", image, "--config", "-", "--json"];
    args.extend_from_slice(flags);
    let out = root.dockless(&args, Some(&config.to_string()));
    let stderr = text(&out.stderr);
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON result ({e}): {} {stderr}", text(&out.stdout)));
    root.assert_clean();
    (out.status.code(), result, stderr)
}

fn row_state(root: &Root, config: &str, row: Option<&str>) -> Option<Value> {
    root.storage()
        .state(&StateKey {
            component: "demo".into(),
            config: config.into(),
            row: row.map(str::to_string),
        })
        .unwrap()
}

/// A configuration in the Storage API's form: the input mapping and a VAT rate shared, two
/// enabled rows with their own rate and output table, a disabled one between them.
fn configuration_with_rows() -> Value {
    let row = |id: &str, disabled: bool, parameters: Value, table: &str| {
        json!({"id": id, "version": 2, "name": format!("row {id}"), "isDisabled": disabled,
               "state": {}, "configuration": {
                   "parameters": parameters,
                   "storage": {"output": {"tables": [
                       {"source": "orders_enriched.csv", "destination": table}]}}}})
    };
    json!({
        "id": "cfg-rows", "version": 7, "name": "Orders by row", "description": "",
        "isDisabled": false, "rowsSortOrder": [], "state": {},
        "configuration": {
            "storage": {"input": {"tables": [{"source": "in.c-demo.orders", "destination": "orders.csv"}]}},
            "parameters": {"vat_rate": 0.21},
        },
        "rows": [
            row("r1", false, json!({"vat_rate": 0.1}), "out.c-r1.enriched"),
            row("r2", true, json!({"simulate": "application-error"}), "out.c-r2.enriched"),
            row("r3", false, json!({}), "out.c-r3.enriched"),
        ],
    })
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn rows_run_in_order_with_their_own_configuration_and_state() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let config = configuration_with_rows();

    let (code, result, stderr) = run_json(&root, image, &config, &["--component-id", "demo"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(result["class"], "success");
    assert_eq!(result["config_id"], "cfg-rows", "the document's id");
    let rows = result["rows"].as_array().unwrap();
    let statuses: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["row_id"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [("r1", "success"), ("r2", "skipped"), ("r3", "success")]
    );
    assert_eq!(rows[0]["result"]["row_id"], "r1");
    assert_eq!(rows[0]["result"]["state_stored"], true);
    assert_eq!(rows[1]["result"], Value::Null);
    assert!(stderr.contains("dockless: row r2: skipped"), "{stderr}");
    assert!(
        stderr.contains("configuration cfg-rows: 3 rows: 2 succeeded, 0 failed, 1 skipped"),
        "{stderr}"
    );
    // Each row with its own merged configuration: the row's rate over the configuration's.
    assert!(
        root.rows("out.c-r1.enriched")
            .contains(&"\"1\",\"alice\",\"10.00\",\"11.00\",\"1\"".to_string())
    );
    assert!(
        root.rows("out.c-r3.enriched")
            .contains(&"\"1\",\"alice\",\"10.00\",\"12.10\",\"1\"".to_string())
    );
    assert!(!root.table_exists("out.c-r2.enriched"));
    // State per row; none for the disabled row nor for the configuration itself.
    assert_eq!(
        row_state(&root, "cfg-rows", Some("r1")).unwrap()["component"]["last_id"],
        4
    );
    assert_eq!(
        row_state(&root, "cfg-rows", Some("r3")).unwrap()["component"]["runs"],
        1
    );
    assert_eq!(row_state(&root, "cfg-rows", Some("r2")), None);
    assert_eq!(row_state(&root, "cfg-rows", None), None);

    // One row by id, with a config id of the command line: its own state read back.
    let (code, result, stderr) = run_json(
        &root,
        image,
        &config,
        &["--component-id", "demo", "--row", "r1"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(result["rows"].as_array().unwrap().len(), 1);
    assert!(
        stderr.contains("run 2, config cfg-rows, orders after id 4"),
        "{stderr}"
    );
    assert_eq!(
        row_state(&root, "cfg-rows", Some("r3")).unwrap()["component"]["runs"],
        1
    );

    // The same from a job file: the configuration inline, the row and a variable by name.
    let mut templated = config.clone();
    templated["configuration"]["variables_id"] = json!("v");
    templated["rows"][2]["configuration"]["parameters"]["vat_rate"] = json!("{{ rate }}");
    let job_file = root.path().join("job.json");
    std::fs::write(
        &job_file,
        json!({"image": image, "component_id": "demo", "configuration": templated,
               "rows": ["r3"], "vars": {"rate": "1"}})
        .to_string(),
    )
    .unwrap();
    let out = root.dockless(
        &["run", "--job", job_file.to_str().unwrap(), "--json"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["rows"].as_array().unwrap().len(), 1, "{result}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("run 2, config cfg-rows, orders after id 4, VAT 1"),
        "{stderr}"
    );

    // A disabled row runs when asked for; its failure is the job's class.
    let (code, result, stderr) = run_json(
        &root,
        image,
        &config,
        &["--component-id", "demo", "--row", "r2"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(result["class"], "application");
    assert!(
        result["message"].as_str().unwrap().starts_with("row r2: "),
        "{result}"
    );
    assert_eq!(result["rows"][0]["status"], "error");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_failing_row_ends_the_configuration_and_bad_rows_are_refused_before_anything_runs() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);

    let mut config = configuration_with_rows();
    config["rows"][0]["configuration"]["parameters"]["simulate"] = json!("user-error");
    let (code, result, stderr) = run_json(
        &root,
        image,
        &config,
        &["--component-id", "demo", "--config-id", "other"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(result["class"], "user");
    assert_eq!(
        result["config_id"], "other",
        "--config-id wins over the document's"
    );
    let statuses: Vec<&str> = result["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["error", "skipped", "not run"]);
    assert!(!root.table_exists("out.c-r3.enriched"));
    assert_eq!(row_state(&root, "other", Some("r3")), None);

    // The last row fails: the first row's outputs stay loaded, but no row's state is stored
    // (Keboola persists the rows' states only when every row succeeded).
    let mut config = configuration_with_rows();
    config["rows"][2]["configuration"]["parameters"]["simulate"] = json!("application-error");
    let (code, result, stderr) = run_json(
        &root,
        image,
        &config,
        &["--component-id", "demo", "--config-id", "late"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    let statuses: Vec<&str> = result["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["success", "skipped", "error"]);
    assert!(root.table_exists("out.c-r1.enriched"));
    assert_eq!(row_state(&root, "late", Some("r1")), None);
    assert_eq!(result["rows"][0]["result"]["state_stored"], false);
    assert!(
        result["warnings"]
            .to_string()
            .contains("no row's state was stored: row r3 failed"),
        "{result}"
    );
    assert!(stderr.contains("no row's state was stored"), "{stderr}");

    // A bad key in the last row: refused naming file, row and key, before the first row runs.
    let mut config = configuration_with_rows();
    config["rows"][2]["configuration"]["bogus"] = json!(1);
    let (code, result, _) = run_json(
        &root,
        image,
        &config,
        &["--component-id", "demo", "--config-id", "bad"],
    );
    assert_eq!(code, Some(1));
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("row r3") && message.contains("bogus"),
        "{message}"
    );
    assert!(message.contains("configuration -"), "{message}");
    assert_eq!(row_state(&root, "bad", Some("r1")), None, "nothing ran");
    assert_eq!(result["rows"], Value::Null);

    // Processors in the configuration and in a row: refused as Keboola refuses them.
    let mut config = configuration_with_rows();
    let processors = json!({"before": [{"definition": {"component": "x"}}]});
    config["configuration"]["processors"] = processors.clone();
    config["rows"][2]["configuration"]["processors"] = processors;
    let (code, result, _) = run_json(&root, image, &config, &["--component-id", "demo"]);
    assert_eq!(code, Some(1));
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("not in both places"),
        "{result}"
    );

    // An unknown row, --row with a plain configuration, an unknown key of the document.
    let (code, result, _) = run_json(&root, image, &configuration_with_rows(), &["--row", "nope"]);
    assert_eq!(code, Some(1));
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("None of rows \"nope\" was found.")
    );
    let (code, result, _) = run_json(&root, image, &demo_config(json!({})), &["--row", "r1"]);
    assert_eq!(code, Some(1));
    assert!(
        result["message"].as_str().unwrap().contains("has no rows"),
        "{result}"
    );
    let mut config = configuration_with_rows();
    config["rowz"] = json!([]);
    let (code, result, _) = run_json(&root, image, &config, &[]);
    assert_eq!(code, Some(1));
    assert!(
        result["message"].as_str().unwrap().contains("rowz"),
        "{result}"
    );
    assert_eq!(
        row_state(&root, "cfg-rows", Some("r1")),
        None,
        "nothing ran"
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn variables_vault_and_shared_code_are_resolved_as_keboola_does() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let secret = "vault-S3cret-77";
    let vault = root.path().join("vault.json");
    std::fs::write(
        &vault,
        json!([{"key": "token", "value": secret, "flags": ["encrypted"], "attributes": {}}])
            .to_string(),
    )
    .unwrap();
    let variables = root.path().join("values.json");
    std::fs::write(
        &variables,
        json!({"values": [{"name": "rate", "value": "0.1"}, {"name": "who", "value": "alice"}]})
            .to_string(),
    )
    .unwrap();
    let shared = root.path().join("shared-code.json");
    std::fs::write(
        &shared,
        json!({"id": "sc-1", "version": 1, "configuration": {}, "rows": [
            {"id": "tags", "version": 1, "configuration": {"code_content": ["from-shared-code", "by-{{ who }}"]}},
        ]})
        .to_string(),
    )
    .unwrap();
    let mut config =
        demo_config(json!({"vat_rate": "{{ rate }}", "#api_token": "{{ vault.token }}"}));
    config["variables_id"] = json!("vars-1");
    config["shared_code_id"] = json!("sc-1");
    config["shared_code_row_ids"] = json!(["tags"]);
    config["storage"]["output"] =
        json!({"files": [{"source": "summary.txt", "tags": ["{{ tags }}"]}]});
    let files = [
        "--variables",
        variables.to_str().unwrap(),
        "--vault",
        vault.to_str().unwrap(),
        "--shared-code",
        shared.to_str().unwrap(),
    ];
    let mut flags = vec!["--component-id", "demo"];
    flags.extend(files);
    let (code, result, stderr) = run_json(&root, image, &config, &flags);
    assert_eq!(code, Some(0), "{stderr}");
    // The variable reached the component (VAT 0.1), the vault value too (a secret: hidden).
    assert!(
        root.rows("out.c-demo.orders_enriched")
            .contains(&"\"1\",\"alice\",\"10.00\",\"11.00\",\"1\"".to_string())
    );
    assert!(
        result["stdout_tail"]
            .as_str()
            .unwrap()
            .contains("authenticating with token [hidden]"),
        "{result}"
    );
    assert!(!format!("{result}{stderr}").contains(secret));
    // Shared code spliced into the list, then its own placeholder rendered.
    let tags = &result["files"][0]["tags"];
    assert!(
        tags.as_array()
            .unwrap()
            .contains(&json!("from-shared-code"))
            && tags.as_array().unwrap().contains(&json!("by-alice")),
        "{tags}"
    );

    // A vault variable flagged encrypted is a secret wherever it is rendered.
    let mut leaky = config.clone();
    leaky["parameters"]["simulate"] = json!("{{ vault.token }}");
    let (code, result, stderr) = run_json(&root, image, &leaky, &flags);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(result["message"], "unknown simulate value: [hidden]");
    assert!(!format!("{result}{stderr}").contains(secret));

    // --var wins over --variables.
    let mut with_var = flags.clone();
    with_var.extend(["--var", "rate=0.5"]);
    let (code, _, stderr) = run_json(&root, image, &config, &with_var);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        root.rows("out.c-demo.orders_enriched")
            .contains(&"\"1\",\"alice\",\"10.00\",\"15.00\",\"1\"".to_string())
    );

    // Placeholders without values, a variables configuration without values, shared code
    // not given: user errors naming them, nothing pulled or run.
    let nothing = format!("{}/no-such-component:1", test_env().registry);
    let mut missing = config.clone();
    missing["parameters"]["other"] = json!("{{ other }} and {{ vault.nope }}");
    let (code, result, _) = run_json(&root, &nothing, &missing, &flags);
    assert_eq!(code, Some(1));
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("Missing values for placeholders: other, vault.nope"),
        "{message}"
    );
    assert_eq!(result["containers"], json!([]));
    let (code, result, _) = run_json(
        &root,
        &nothing,
        &config,
        &[
            "--vault",
            vault.to_str().unwrap(),
            "--shared-code",
            shared.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        result["message"].as_str().unwrap().contains("vars-1"),
        "{result}"
    );
    let (code, result, _) = run_json(
        &root,
        &nothing,
        &config,
        &[
            "--var",
            "rate=1",
            "--var",
            "who=x",
            "--vault",
            vault.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("--shared-code"),
        "{result}"
    );
    std::fs::write(&variables, r#"{"values": [{"value": "1"}]}"#).unwrap();
    let (code, result, _) = run_json(&root, &nothing, &config, &flags);
    assert_eq!(code, Some(1));
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("values.json") && message.contains("values[0].name"),
        "{message}"
    );
    assert_eq!(result["digest"], Value::Null, "nothing may be pulled");

    // Variables in the rows of a configuration: resolved per row, before any row runs.
    let mut rows = configuration_with_rows();
    rows["configuration"]["variables_id"] = json!("vars-1");
    rows["rows"][2]["configuration"]["parameters"]["vat_rate"] = json!("{{ rate3 }}");
    let (code, result, _) = run_json(
        &root,
        image,
        &rows,
        &["--component-id", "demo", "--var", "rate3=0.3"],
    );
    assert_eq!(code, Some(0), "{result}");
    assert!(
        root.rows("out.c-r3.enriched")
            .contains(&"\"1\",\"alice\",\"10.00\",\"13.00\",\"1\"".to_string())
    );
    let (code, result, _) = run_json(
        &root,
        image,
        &rows,
        &[
            "--component-id",
            "demo",
            "--config-id",
            "fresh",
            "--var",
            "rate=1",
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        result["message"].as_str().unwrap().contains("row r3")
            && result["message"].as_str().unwrap().contains("rate3"),
        "{result}"
    );
    assert_eq!(row_state(&root, "fresh", Some("r1")), None, "nothing ran");
}
