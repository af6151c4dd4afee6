//! Every config and manifest in the shared Keboola examples.

use std::collections::BTreeSet;
use std::path::Path;

use dockless_staging::{DataDir, Format, Job, JobSpec, Storage, config};
use serde_json::{Value, json};

use crate::output_mapping::run_job;
use crate::{Backend, examples, seed, storage};

fn load(rel: &str) -> Value {
    let path = examples().join(rel);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn every_example_config_normalizes() {
    for rel in [
        "01-docs-sample-data-folder/config.json",
        "02-python-component-data1/config.json",
        "04-php-component-manifests/sync-action-config.json",
        "05-docker-bundle-test-derived/runner-written-config.json",
        "05-docker-bundle-test-derived/stored-configuration-with-before-processors.json",
    ] {
        let original = load(rel);
        let n = config::normalize(&original).unwrap_or_else(|e| panic!("{rel}: {e}"));
        // Normalizing is idempotent and keeps every value that was there.
        assert_eq!(config::normalize(&n).unwrap(), n, "{rel}");
        for (k, v) in original.as_object().unwrap() {
            if !["storage", "image_parameters", "processors"].contains(&k.as_str()) {
                assert_eq!(&n[k], v, "{rel}: {k}");
            }
        }
    }
    let n = config::normalize(&load("02-python-component-data1/config.json")).unwrap();
    assert_eq!(n["storage"]["output"]["files"][0]["is_encrypted"], true);
    assert_eq!(n["storage"]["output"]["tables"][0]["delimiter"], ",");
    // Current runners drop empty processed_tags and add overwrite (the example is older).
    assert!(
        n["storage"]["input"]["files"][0]
            .get("processed_tags")
            .is_none()
    );
    assert_eq!(n["storage"]["input"]["files"][0]["overwrite"], true);
    assert_eq!(
        n["storage"]["input"]["tables"][0]["keep_internal_timestamp_column"],
        true
    );
    assert_eq!(
        n["storage"]["output"]["tables"][0]["column_metadata"],
        json!([])
    );
    let n = config::normalize(&load(
        "05-docker-bundle-test-derived/stored-configuration-with-before-processors.json",
    ))
    .unwrap();
    assert_eq!(n["processors"]["after"], json!([]));
    let n = config::normalize(&load("01-docs-sample-data-folder/config.json")).unwrap();
    let written = config::container_config(&n, &json!([]), "run").unwrap();
    assert_eq!(
        written["image_parameters"],
        json!({}),
        "an old runner's [] is written as {{}}"
    );
}

#[test]
fn config_json_matches_the_runner_byte_for_byte() {
    // docker-bundle's ConfigFileTest feeds ConfigFile a raw configuration; the expected text is
    // a PHP heredoc, which has no final newline (the transcription in the examples adds one).
    let raw = json!({"parameters": {"key1": "value1", "key2": {"key3": "value3", "key4": []}}});
    let doc = config::container_config(&raw, &json!({"fooBar": "baz"}), "run").unwrap();
    let expected = std::fs::read_to_string(
        examples().join("05-docker-bundle-test-derived/runner-written-config.json"),
    )
    .unwrap();
    let ours = String::from_utf8(config::render(&doc, Format::Json).unwrap()).unwrap();
    assert_eq!(ours, expected.trim_end_matches('\n'));

    // A real job goes through the job definition's normalization first, which places
    // shared_code_row_ids before the keys ConfigFile appends.
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let job = Job::new(JobSpec {
        configuration: json!({"parameters": {"url": "https://example.com/a", "name": "Dlažba", "n": 2.0, "o": {}}}),
        image_parameters: json!({"fooBar": "baz"}),
        component_id: "keboola.test".into(),
        action: "run".into(),
        ..JobSpec::default()
    })
    .unwrap();
    let written = std::fs::read_to_string(job.write_config(&dir).unwrap()).unwrap();
    assert_eq!(
        written,
        "{\n    \"parameters\": {\n        \"url\": \"https:\\/\\/example.com\\/a\",\n        \"name\": \"Dla\\u017eba\",\n        \"n\": 2,\n        \"o\": []\n    },\n    \"shared_code_row_ids\": [],\n    \"image_parameters\": {\n        \"fooBar\": \"baz\"\n    },\n    \"action\": \"run\",\n    \"storage\": {},\n    \"authorization\": {}\n}"
    );
}

fn processors_and_runtime_never_reach_the_container_and_secrets_pass_through(backend: Backend) {
    let (_d, mut s) = storage(backend);
    seed(&mut s, "in.c-main.test", "x\n1\n", &[]);
    seed(&mut s, "in.c-main.test2", "y\n2\n", &[]);
    let mut configuration =
        load("05-docker-bundle-test-derived/stored-configuration-with-before-processors.json");
    configuration["runtime"] = json!({"safe": true});
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let job = Job::new(JobSpec {
        configuration,
        component_id: "c".into(),
        action: "run".into(),
        ..JobSpec::default()
    })
    .unwrap();
    let written: Value =
        serde_json::from_slice(&std::fs::read(job.write_config(&dir).unwrap()).unwrap()).unwrap();
    assert!(written.get("processors").is_none() && written.get("runtime").is_none());
    assert_eq!(written["action"], "run");

    let mut job = Job::new(JobSpec {
        configuration: load("02-python-component-data1/config.json"),
        component_id: "c".into(),
        action: "run".into(),
        ..JobSpec::default()
    })
    .unwrap();
    job.stage(&s, &dir).unwrap();
    let written: Value =
        serde_json::from_slice(&std::fs::read(dir.data().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        written["authorization"]["oauth_api"]["credentials"]["#appSecret"],
        "myappsecret"
    );
    assert_eq!(
        std::fs::read_to_string(dir.in_tables().join("fooBar")).unwrap(),
        "\"y\"\n\"2\"\n"
    );
}

#[test]
fn unknown_keys_are_user_errors() {
    for bad in [
        json!({"parameters": {}, "foo": 1}),
        json!({"storage": {"input": {"tables": [{"source": "in.c-a.b", "nope": 1}]}}}),
        json!({"storage": {"output": {"tables": [{"source": "a.csv", "destination": "not-an-id"}]}}}),
        json!({"storage": {"input": {"files": [{"tags": ["a"], "source": {"tags": [{"name": "b"}]}}]}}}),
    ] {
        let err = Job::new(JobSpec {
            configuration: bad.clone(),
            ..JobSpec::default()
        })
        .unwrap_err();
        assert!(err.is_user_error(), "{bad}: {err:?}");
    }
}

fn yaml_format_writes_config_and_state_as_yaml(backend: Backend) {
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let (_d, s) = storage(backend);
    let mut job = Job::new(JobSpec {
        configuration: json!({"parameters": {"a": 1}}),
        component_id: "c".into(),
        action: "run".into(),
        format: Format::Yaml,
        ..JobSpec::default()
    })
    .unwrap();
    job.stage(&s, &dir).unwrap();
    let text = std::fs::read_to_string(dir.data().join("config.yml")).unwrap();
    let parsed: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(parsed["parameters"]["a"], 1);
    assert!(!dir.data().join("config.json").exists());
    assert!(dir.data().join("in/state.yml").exists());
}

fn put(out: &Path, rel: &str, content: &str) {
    std::fs::write(out.join(rel), content).unwrap();
}

fn every_example_output_manifest_loads(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let m = |rel: &str| std::fs::read_to_string(examples().join(rel)).unwrap();
    let config = json!({"storage": {"output": {"default_bucket": "out.c-ex", "tables": [
        {"source": "all-options.csv", "destination": "out.c-ex.all_options"},
        {"source": "legacy.csv", "destination": "out.c-ex.legacy"}]}}});
    let sales_row = (1..=12)
        .map(|i| format!("v{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let (_w, result) = run_job(&mut s, config, true, |out| {
        put(out, "tables/some-table.csv", "f1,b1\n");
        put(
            out,
            "tables/some-table.csv.manifest",
            &m("02-python-component-data1/out/tables/some-table.csv.manifest"),
        );
        put(out, "tables/all-options.csv", "_1_|_x|y_|_z_\n");
        put(
            out,
            "tables/all-options.csv.manifest",
            &m("04-php-component-manifests/expectedManifestForWriteFromOptionsAllOptions.manifest"),
        );
        put(out, "tables/legacy.csv", "_1_|2|_true_\n");
        put(
            out,
            "tables/legacy.csv.manifest",
            &m("04-php-component-manifests/legacy-output-table.manifest"),
        );
        put(out, "tables/sales.csv", &format!("{sales_row}\n"));
        put(
            out,
            "tables/sales.csv.manifest",
            &m("04-php-component-manifests/snowflake-native-types-output-table.manifest"),
        );
        put(out, "files/pic.gif", "GIF89a");
        put(
            out,
            "files/pic.gif.manifest",
            &m("04-php-component-manifests/expected-file.manifest"),
        );
    });
    let report = result.unwrap();
    assert_eq!(report.output.tables.len(), 4);
    let some = s
        .table(&"out.c-ex.some-destination".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (some.columns.clone(), some.primary_key.clone()),
        (
            vec!["foo".to_string(), "bar".to_string()],
            vec!["foo".to_string()]
        )
    );
    let all = s
        .table(&"out.c-ex.all_options".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(all.primary_key, ["id"]);
    assert_eq!(
        crate::export(&s, "out.c-ex.all_options"),
        "\"id\",\"number\",\"other_column\"\n\"1\",\"x|y\",\"z\"\n"
    );
    let legacy = s
        .table(&"out.c-ex.legacy".parse().unwrap())
        .unwrap()
        .unwrap();
    let number = &legacy
        .column_metadata
        .iter()
        .find(|(c, _)| c == "number")
        .unwrap()
        .1;
    assert!(
        number
            .iter()
            .any(|m| m.key == "KBC.datatype.default" && m.value == "0")
    );
    let sales = s
        .table(&"in.c-main.sales".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(sales.columns.len(), 12);
    assert!(
        sales
            .metadata
            .iter()
            .any(|m| m.key == "KBC.rowCount" && m.value == "100")
    );
    let pic = &s.files(&Default::default()).unwrap()[0];
    assert!(pic.tags.contains(&"sometag".to_string()) && !pic.is_encrypted && !pic.is_permanent);
}

fn input_manifests_carry_the_keys_of_real_ones(backend: Backend) {
    let (_d, mut s) = storage(backend);
    seed(&mut s, "in.c-main.test", "number,someText\n10,ab\n", &[]);
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let mut job = Job::new(JobSpec {
        configuration: load("01-docs-sample-data-folder/config.json"),
        component_id: "c".into(),
        action: "run".into(),
        ..JobSpec::default()
    })
    .unwrap();
    job.stage(&s, &dir).unwrap();
    let ours: Value = serde_json::from_slice(
        &std::fs::read(dir.in_tables().join("source.csv.manifest")).unwrap(),
    )
    .unwrap();
    let required: BTreeSet<String> = [
        "id",
        "name",
        "primary_key",
        "created",
        "last_change_date",
        "last_import_date",
        "columns",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for rel in [
        "01-docs-sample-data-folder/in/tables/source.csv.manifest",
        "02-python-component-data1/in/tables/sample.csv.manifest",
    ] {
        let real = keys(&load(rel));
        assert!(required.is_subset(&real), "{rel}");
        let extra: BTreeSet<String> = ["metadata", "column_metadata", "distribution_key"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let known: BTreeSet<String> = real.union(&extra).cloned().collect();
        assert!(
            keys(&ours).is_subset(&known),
            "{:?} not within {known:?}",
            keys(&ours)
        );
    }
    assert!(required.is_subset(&keys(&ours)));
    assert_eq!(ours["columns"], json!(["number", "someText"]));
    // Same content as the sample folder: 2 columns, values quoted, LF.
    assert_eq!(
        std::fs::read_to_string(dir.in_tables().join("source.csv")).unwrap(),
        "\"number\",\"someText\"\n\"10\",\"ab\"\n"
    );

    let file_manifest =
        load("02-python-component-data1/in/files/151971405_21702.strip.print.gif.manifest");
    let cfg = json!({"storage": {"input": {"files": [{"tags": ["dilbert"]}]}}});
    let mut tx = s.begin().unwrap();
    let nf = dockless_staging::NewFile {
        name: "21702.strip.print.gif".into(),
        tags: vec!["dilbert".into()],
        is_public: false,
        is_permanent: false,
        is_encrypted: true,
    };
    let mut slices = std::iter::once(dockless_staging::storage::Slice {
        name: "x".into(),
        reader: Box::new(std::io::Cursor::new(b"GIF".to_vec())),
        origin: "x".into(),
    });
    let fid = tx.add_file(&nf, &mut slices).unwrap();
    tx.commit().unwrap();
    let mut job = Job::new(JobSpec {
        configuration: cfg,
        component_id: "c".into(),
        action: "run".into(),
        ..JobSpec::default()
    })
    .unwrap();
    job.stage(&s, &dir).unwrap();
    let ours: Value = serde_json::from_slice(
        &std::fs::read(
            dir.in_files()
                .join(format!("{fid}_21702.strip.print.gif.manifest")),
        )
        .unwrap(),
    )
    .unwrap();
    let mut expected = keys(&file_manifest);
    expected.insert("is_sliced".into());
    assert_eq!(keys(&ours), expected);
}

#[test]
fn processors_get_their_own_config_and_rotated_data() {
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let job = Job::new(JobSpec {
        configuration: load(
            "05-docker-bundle-test-derived/stored-configuration-with-before-processors.json",
        ),
        component_id: "c".into(),
        action: "run".into(),
        ..JobSpec::default()
    })
    .unwrap();
    let path = job
        .write_processor_config(&dir, &json!({"direction": "tables"}), &json!([]))
        .unwrap();
    let written: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(
        written,
        json!({"parameters": {"direction": "tables"}, "image_parameters": {}, "action": "run",
               "shared_code_row_ids": [], "storage": {}, "authorization": {}})
    );
    std::fs::write(dir.out_tables().join("t.csv"), "a\n1\n").unwrap();
    std::fs::write(dir.in_tables().join("old.csv"), "x\n").unwrap();
    std::fs::write(dir.data().join("out/state.json"), "{}").unwrap();
    dir.rotate_out_to_in().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.in_tables().join("t.csv")).unwrap(),
        "a\n1\n"
    );
    assert!(!dir.in_tables().join("old.csv").exists());
    assert!(dir.out_tables().is_dir() && dir.out_files().is_dir());
    assert!(!dir.data().join("out/state.json").exists());
}

crate::backends!(
    processors_and_runtime_never_reach_the_container_and_secrets_pass_through,
    yaml_format_writes_config_and_state_as_yaml,
    every_example_output_manifest_loads,
    input_manifests_carry_the_keys_of_real_ones,
);
