//! A queued job as one self-contained document: the job file together with the files it
//! names (configuration, component specifications, variables, vault, shared code), so that a
//! worker on any host runs it without this host's files. The document is sealed with the
//! hosts' state key before it reaches the database (it carries the configuration's secrets).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};

/// Job file fields that name a file (relative to the job file): taken into the document.
pub const FILE_FIELDS: [&str; 5] = [
    "config_file",
    "components",
    "variables",
    "vault",
    "shared_code",
];

/// A referenced file larger than this is refused (they are JSON documents).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// The version of the document's layout, checked by the worker.
const VERSION: u64 = 1;

/// A job file made self-contained, with what the queue shows of it.
#[derive(Debug)]
pub struct Packed {
    /// The document to seal and enqueue.
    pub document: Value,
    /// The job's component id (given, or the image's repository name).
    pub component_id: String,
    /// The job's configuration id, if any.
    pub config_id: Option<String>,
}

/// Reads the job file at `path` and the files it names into one document. A `build` of a
/// repository on this host's disk is refused: the worker that runs the job may be elsewhere.
pub fn pack(path: &Path, job: Value) -> anyhow::Result<Packed> {
    let Value::Object(mut job) = job else {
        bail!("job file {}: not a JSON object", path.display());
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files = Map::new();
    for field in FILE_FIELDS {
        let Some(value) = job.get(field) else {
            continue;
        };
        let Some(name) = value.as_str() else {
            bail!("job file {}: {field}: not a file name", path.display());
        };
        let file = dir.join(name);
        let text =
            read_limited(&file).with_context(|| format!("job file {}: {field}", path.display()))?;
        files.insert(field.to_string(), Value::String(text));
        job.insert(field.to_string(), Value::String(field.to_string()));
    }
    if let Some(repository) = job
        .get("build")
        .and_then(|b| b.get("repository"))
        .and_then(Value::as_str)
        && !dockless_builder::git::looks_remote(repository)
    {
        bail!(
            "job file {}: build.repository {repository:?} is a path on this host; a queued \
             job may run on another host: give the repository's URL",
            path.display()
        );
    }
    let text = |key: &str| job.get(key).and_then(Value::as_str).map(str::to_string);
    let component_id = match (text("component_id"), text("image")) {
        (Some(id), _) => id,
        (None, Some(image)) => crate::commands::job::repository_name(&image),
        (None, None) => bail!(
            "job file {}: a queued job needs `component_id` (or an `image` to take it from)",
            path.display()
        ),
    };
    let config_id = text("config_id");
    Ok(Packed {
        document: json!({"version": VERSION, "job": Value::Object(job), "files": files}),
        component_id,
        config_id,
    })
}

/// Writes the document's job file and files into `dir` (a fresh private directory) and
/// returns the job file's path, ready for `dockless run --job`.
pub fn unpack(document: &Value, dir: &Path) -> anyhow::Result<PathBuf> {
    if document["version"].as_u64() != Some(VERSION) {
        bail!(
            "the queued job's document has version {}, this dockless reads version {VERSION}",
            document["version"]
        );
    }
    let job = document["job"]
        .as_object()
        .context("the queued job's document has no job")?;
    let files = document["files"].as_object().cloned().unwrap_or_default();
    for (field, text) in &files {
        // Only the fields this version packs; the names are fixed, never paths.
        if !FILE_FIELDS.contains(&field.as_str()) {
            bail!("the queued job's document names an unknown file {field:?}");
        }
        let text = text.as_str().context("a queued job's file is not text")?;
        write_new(&dir.join(field), text.as_bytes())?;
    }
    let path = dir.join("job.json");
    write_new(&path, &serde_json::to_vec_pretty(job)?)?;
    Ok(path)
}

fn read_limited(path: &Path) -> anyhow::Result<String> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        bail!(
            "{} is larger than {} MiB",
            path.display(),
            MAX_FILE_BYTES >> 20
        );
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referenced_files_travel_inside_the_document() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("config.json"), r#"{"parameters":{"a":1}}"#).unwrap();
        std::fs::write(src.path().join("vars.json"), r#"{"values":[]}"#).unwrap();
        let path = src.path().join("job.json");
        let job = json!({"image": "r/x/demo:1", "config_file": "config.json",
                         "variables": "vars.json", "config_id": "7"});
        let packed = pack(&path, job).unwrap();
        assert_eq!(packed.component_id, "demo");
        assert_eq!(packed.config_id.as_deref(), Some("7"));
        drop(src);
        let out = tempfile::tempdir().unwrap();
        let job_file = unpack(&packed.document, out.path()).unwrap();
        let job: Value = serde_json::from_slice(&std::fs::read(&job_file).unwrap()).unwrap();
        assert_eq!(job["config_file"], "config_file");
        let config = std::fs::read_to_string(out.path().join("config_file")).unwrap();
        assert_eq!(config, r#"{"parameters":{"a":1}}"#);
        assert!(out.path().join("variables").is_file());
    }

    #[test]
    fn a_local_build_repository_and_a_missing_file_are_refused() {
        let src = tempfile::tempdir().unwrap();
        let path = src.path().join("job.json");
        let local = json!({"build": {"repository": "./repo"}, "component_id": "c",
                           "configuration": {}});
        let err = pack(&path, local).unwrap_err();
        assert!(
            format!("{err:#}").contains("a path on this host"),
            "{err:#}"
        );
        let missing = json!({"image": "x", "config_file": "nope.json"});
        let err = pack(&path, missing).unwrap_err();
        assert!(format!("{err:#}").contains("config_file"), "{err:#}");
    }

    #[test]
    fn an_unknown_file_name_in_a_document_is_refused() {
        let out = tempfile::tempdir().unwrap();
        let doc = json!({"version": 1, "job": {}, "files": {"../../etc/passwd": "x"}});
        let err = unpack(&doc, out.path()).unwrap_err();
        assert!(format!("{err:#}").contains("unknown file"), "{err:#}");
    }
}
