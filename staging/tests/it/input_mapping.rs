//! Input mapping: tables and files into /data/in with manifests.

use dockless_staging::storage::Slice;
use dockless_staging::{DataDir, Job, JobSpec, NewFile, Storage};
use serde_json::{Value, json};

use crate::output_mapping::run_job;
use crate::{Backend, TestStorage, seed, storage};

fn stage(
    s: &TestStorage,
    configuration: Value,
) -> (
    tempfile::TempDir,
    DataDir,
    Result<Job, dockless_staging::Error>,
) {
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let result = Job::new(JobSpec {
        configuration,
        component_id: "keboola.test".into(),
        config_id: Some("cfg1".into()),
        action: "run".into(),
        ..JobSpec::default()
    })
    .and_then(|mut job| job.stage(s, &dir).map(|_| ()).map(|_| job));
    (work, dir, result)
}

fn read(dir: &DataDir, rel: &str) -> String {
    std::fs::read_to_string(dir.data().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn add_file(s: &mut TestStorage, name: &str, tags: &[&str], content: &str) -> i64 {
    let mut tx = s.begin().unwrap();
    let file = NewFile {
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        is_public: false,
        is_permanent: true,
        is_encrypted: true,
    };
    let mut slices = std::iter::once(Slice {
        name: name.into(),
        reader: Box::new(std::io::Cursor::new(content.as_bytes().to_vec())),
        origin: name.into(),
    });
    let id = tx.add_file(&file, &mut slices).unwrap();
    tx.commit().unwrap();
    id
}

fn layout_and_table_with_columns_filter_and_limit(backend: Backend) {
    let (_d, mut s) = storage(backend);
    seed(
        &mut s,
        "in.c-main.orders",
        "id,status,total\n1,open,10\n2,done,20\n3,open,30\n",
        &["id"],
    );
    let (_w, dir, job) = stage(
        &s,
        json!({"storage": {"input": {"tables": [
        {"source": "in.c-main.orders", "destination": "open.csv", "columns": ["total", "id"],
         "where_column": "status", "where_values": ["open"]},
        {"source": "in.c-main.orders", "limit": 1},
        {"source": "in.c-main.orders", "destination": "not-open.csv", "where_column": "status", "where_values": ["open"], "where_operator": "ne"}]}}}),
    );
    job.unwrap();
    for sub in [
        "in/tables",
        "in/files",
        "in/user",
        "out/tables",
        "out/files",
    ] {
        assert!(dir.data().join(sub).is_dir(), "{sub}");
    }
    assert!(dir.tmp().is_dir());
    let mut open: Vec<String> = read(&dir, "in/tables/open.csv")
        .lines()
        .map(str::to_string)
        .collect();
    open[1..].sort();
    assert_eq!(open, ["\"total\",\"id\"", "\"10\",\"1\"", "\"30\",\"3\""]);
    assert_eq!(
        read(&dir, "in/tables/not-open.csv"),
        "\"id\",\"status\",\"total\"\n\"2\",\"done\",\"20\"\n"
    );
    assert_eq!(
        read(&dir, "in/tables/in.c-main.orders").lines().count(),
        2,
        "default destination is the table id, no .csv"
    );
    let manifest: Value = serde_json::from_str(&read(&dir, "in/tables/open.csv.manifest")).unwrap();
    assert_eq!(manifest["id"], "in.c-main.orders");
    assert_eq!(manifest["name"], "orders");
    assert_eq!(manifest["columns"], json!(["total", "id"]));
    assert_eq!(manifest["primary_key"], json!(["id"]));
    assert_eq!(manifest["column_metadata"], json!({"total": [], "id": []}));
    let created = manifest["created"].as_str().unwrap();
    assert!(
        created.len() == 24 && created.ends_with("+0000"),
        "{created}"
    );
    assert_eq!(read(&dir, "in/state.json"), "{}");
    assert!(read(&dir, "config.json").contains("\"where_operator\": \"eq\""));
}

fn changed_since_days_and_adaptive(backend: Backend) {
    let (_d, mut s) = storage(backend);
    seed(&mut s, "in.c-main.t", "id\n1\n", &["id"]);
    let (_w, dir, job) = stage(
        &s,
        json!({"storage": {"input": {"tables": [
        {"source": "in.c-main.t", "destination": "future.csv", "changed_since": "2999-01-01"},
        {"source": "in.c-main.t", "destination": "past.csv", "changed_since": "-2 days"},
        {"source": "in.c-main.t", "destination": "days.csv", "days": 1}]}}}),
    );
    job.unwrap();
    assert_eq!(read(&dir, "in/tables/future.csv"), "\"id\"\n");
    assert_eq!(read(&dir, "in/tables/past.csv"), "\"id\"\n\"1\"\n");
    assert_eq!(read(&dir, "in/tables/days.csv"), "\"id\"\n\"1\"\n");
    let (_w, _dir, job) = stage(
        &s,
        json!({"storage": {"input": {"tables": [{"source": "in.c-main.t", "changed_since": "whenever"}]}}}),
    );
    assert!(job.unwrap_err().is_user_error());

    // Adaptive: the first run reads everything, the next only rows changed since.
    let adaptive = json!({"storage": {"input": {"tables": [{"source": "in.c-main.t", "destination": "a.csv", "changed_since": "adaptive"}]}}});
    let (_w, result) = run_job(&mut s, adaptive.clone(), true, |_| {});
    result.unwrap();
    let (_w, dir, job) = stage(&s, adaptive.clone());
    job.unwrap();
    assert_eq!(
        read(&dir, "in/tables/a.csv"),
        "\"id\"\n",
        "nothing changed since the last run"
    );
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::write(dir2.path().join("x.csv"), "id\n2\n").unwrap();
    let options = dockless_staging::ImportOptions {
        primary_key: vec!["id".into()],
        incremental: true,
        ..Default::default()
    };
    dockless_staging::import_file(
        &mut s,
        &dir2.path().join("x.csv"),
        &"in.c-main.t".parse().unwrap(),
        &options,
        "t",
    )
    .unwrap();
    let (_w, dir, job) = stage(&s, adaptive);
    job.unwrap();
    assert_eq!(read(&dir, "in/tables/a.csv"), "\"id\"\n\"2\"\n");
}

fn files_by_tags_ids_and_processed_tags(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let a = add_file(&mut s, "a.txt", &["dilbert"], "A");
    let b = add_file(&mut s, "b.txt", &["dilbert", "old"], "B");
    let c = add_file(&mut s, "c.txt", &["xkcd"], "C");
    let (_w, dir, job) = stage(
        &s,
        json!({"storage": {"input": {"files": [
        {"source": {"tags": [{"name": "dilbert"}, {"name": "old", "match": "exclude"}]}},
        {"file_ids": [c]}]}}}),
    );
    job.unwrap();
    assert_eq!(read(&dir, &format!("in/files/{a}_a.txt")), "A");
    assert_eq!(read(&dir, &format!("in/files/{c}_c.txt")), "C");
    assert!(!dir.in_files().join(format!("{b}_b.txt")).exists());
    let manifest: Value =
        serde_json::from_str(&read(&dir, &format!("in/files/{a}_a.txt.manifest"))).unwrap();
    assert_eq!(manifest["id"], a);
    assert_eq!(manifest["name"], "a.txt");
    assert_eq!(manifest["tags"], json!(["dilbert"]));
    assert_eq!(manifest["size_bytes"], 1);

    let config =
        json!({"storage": {"input": {"files": [{"tags": ["xkcd"], "processed_tags": ["done"]}]}}});
    let (_w, r) = run_job(&mut s, config.clone(), false, |_| {});
    r.unwrap();
    assert!(
        !s.file(c)
            .unwrap()
            .unwrap()
            .tags
            .contains(&"done".to_string()),
        "failed job: no processed tags"
    );
    let (_w, r) = run_job(&mut s, config, true, |_| {});
    r.unwrap();
    assert!(
        s.file(c)
            .unwrap()
            .unwrap()
            .tags
            .contains(&"done".to_string())
    );
}

fn a_missing_source_table_is_a_user_error(backend: Backend) {
    let (_d, s) = storage(backend);
    let (_w, _dir, job) = stage(
        &s,
        json!({"storage": {"input": {"tables": [{"source": "in.c-main.nope"}]}}}),
    );
    let err = job.unwrap_err();
    assert!(
        err.is_user_error() && err.to_string().contains("in.c-main.nope"),
        "{err}"
    );
}

fn sliced_files_become_folders_of_slices(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let mut tx = s.begin().unwrap();
    let file = NewFile {
        name: "export.csv".into(),
        tags: vec!["sliced".into()],
        is_public: false,
        is_permanent: false,
        is_encrypted: true,
    };
    let slice = |name: &str, body: &str| Slice {
        name: name.into(),
        reader: Box::new(std::io::Cursor::new(body.as_bytes().to_vec())),
        origin: name.into(),
    };
    let mut slices = vec![slice("part0", "a,1\n"), slice("part1", "b,2\n")].into_iter();
    let id = tx.add_file(&file, &mut slices).unwrap();
    tx.commit().unwrap();
    let info = s.file(id).unwrap().unwrap();
    assert!(info.is_sliced);
    assert_eq!(
        (info.size, info.slices.clone()),
        (8, vec!["part0".to_string(), "part1".to_string()])
    );
    let (_w, dir, job) = stage(
        &s,
        json!({"storage": {"input": {"files": [{"tags": ["sliced"]}]}}}),
    );
    job.unwrap();
    assert_eq!(
        read(&dir, &format!("in/files/{id}_export.csv/part0")),
        "a,1\n"
    );
    assert_eq!(
        read(&dir, &format!("in/files/{id}_export.csv/part1")),
        "b,2\n"
    );
    let manifest: Value =
        serde_json::from_str(&read(&dir, &format!("in/files/{id}_export.csv.manifest"))).unwrap();
    assert_eq!(manifest["is_sliced"], true);
}

fn adaptive_files_read_only_new_ones(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let first = add_file(&mut s, "one.txt", &["feed"], "1");
    let config =
        json!({"storage": {"input": {"files": [{"tags": ["feed"], "changed_since": "adaptive"}]}}});
    let (_w, result) = run_job(&mut s, config.clone(), true, |_| {});
    result.unwrap();
    let (_w, dir, job) = stage(&s, config.clone());
    job.unwrap();
    assert!(
        !dir.in_files().join(format!("{first}_one.txt")).exists(),
        "already read by the last run"
    );
    let second = add_file(&mut s, "two.txt", &["feed"], "2");
    let (_w, dir, job) = stage(&s, config);
    job.unwrap();
    assert_eq!(read(&dir, &format!("in/files/{second}_two.txt")), "2");
    assert!(!dir.in_files().join(format!("{first}_one.txt")).exists());
}

fn manifests_are_written_as_php_json(backend: Backend) {
    let (_d, mut s) = storage(backend);
    seed(&mut s, "in.c-main.t", "id\n1\n", &[]);
    let mut tx = s.begin().unwrap();
    let entries = [(
        "KBC.description".to_string(),
        "see https://example.com/ – ok".to_string(),
    )];
    tx.set_table_metadata(&"in.c-main.t".parse().unwrap(), "user", &entries)
        .unwrap();
    tx.commit().unwrap();
    let (_w, dir, job) = stage(
        &s,
        json!({"storage": {"input": {"tables": [{"source": "in.c-main.t", "destination": "t.csv"}]}}}),
    );
    job.unwrap();
    let text = read(&dir, "in/tables/t.csv.manifest");
    assert!(
        text.contains("\"value\": \"see https:\\/\\/example.com\\/ \\u2013 ok\""),
        "{text}"
    );
    assert!(
        text.starts_with("{\n    \"id\": \"in.c-main.t\",\n    \"name\": \"t\",\n"),
        "{text}"
    );
    assert!(text.ends_with('}'), "no final newline, as PHP writes it");
}

crate::backends!(
    layout_and_table_with_columns_filter_and_limit,
    changed_since_days_and_adaptive,
    files_by_tags_ids_and_processed_tags,
    a_missing_source_table_is_a_user_error,
    sliced_files_become_folders_of_slices,
    adaptive_files_read_only_new_ones,
    manifests_are_written_as_php_json,
);
