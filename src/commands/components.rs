//! `--components FILE`: Keboola's component specifications (see
//! [`dockless_staging::components`]) into a job's settings. The file is `--components` (or the
//! job file's `components`), else `components.json` in the state directory when present. Every
//! failure here is the user's and names the file and the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dockless_staging::components::{self, ComponentSpec, SpecNetwork};

use crate::cli::run::{JobArgs, Network};
use crate::paths::Paths;
use crate::pipeline::processors::ProcessorSpec;
use crate::units::{limit_text, parse_size};

/// The specifications a job sees and the file they came from.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The file read (none when there is none).
    pub source: Option<PathBuf>,
    /// Its components.
    pub specs: Vec<ComponentSpec>,
    /// Whether the user named the file (`--components` or the job file).
    pub explicit: bool,
}

impl Loaded {
    /// The specification of `id`.
    pub fn find(&self, id: &str) -> Option<&ComponentSpec> {
        self.specs.iter().find(|s| s.id == id)
    }

    fn file(&self) -> String {
        self.source
            .as_deref()
            .map_or_else(String::new, |p| p.display().to_string())
    }
}

/// The default specification file: `components.json` in the state directory.
pub fn default_file(paths: &Paths) -> PathBuf {
    paths.root.join("components.json")
}

/// Reads the specifications of `job` (or the default file when present).
pub fn load(job: &JobArgs, paths: &Paths) -> Result<Loaded, String> {
    let (path, explicit) = match &job.components {
        Some(p) => (p.clone(), true),
        None => {
            let p = default_file(paths);
            if !p.exists() {
                return Ok(Loaded::default());
            }
            (p, false)
        }
    };
    let specs = read(&path)?;
    Ok(Loaded {
        source: Some(path),
        specs,
        explicit,
    })
}

fn read(path: &Path) -> Result<Vec<ComponentSpec>, String> {
    let file = path.display();
    let bytes = std::fs::read(path)
        .map_err(|e| format!("component specifications {file}: cannot read: {e}"))?;
    let document: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("component specifications {file}: not valid JSON: {e}"))?;
    components::parse(&document).map_err(|e| format!("component specifications {file}: {e}"))
}

/// The user error for a component without a specification: where specifications come from.
pub fn unknown(id: &str, loaded: &Loaded, paths: &Paths) -> String {
    let whence = match &loaded.source {
        Some(p) => format!("{} has no component {id:?}", p.display()),
        None => format!(
            "no component specifications: none given with --components FILE and no {}",
            default_file(paths).display()
        ),
    };
    format!(
        "component {id:?}: {whence}. Specifications come from --components FILE (or the job \
         file's `components`), else {}: Keboola's component list as the Storage API index \
         returns it (GET /v2/storage, its \"components\"); or give the IMAGE to run",
        default_file(paths).display()
    )
}

/// The component's memory limit in bytes, or the user error naming the field.
pub fn memory(spec: &ComponentSpec, loaded: &Loaded) -> Result<i64, String> {
    parse_size(&spec.memory).map_err(|e| {
        format!(
            "component specifications {}: component {:?}: data.memory: {e}",
            loaded.file(),
            spec.id
        )
    })
}

/// The container network for a specification's: Keboola's `bridge` (its default: the
/// internet, not the host) is dockless' `bridge`; `none` and `no-internet` have no network.
pub fn network(spec: &ComponentSpec) -> Network {
    match spec.network {
        SpecNetwork::None | SpecNetwork::NoInternet => Network::None,
        SpecNetwork::Bridge => Network::Bridge,
    }
}

/// The specifications of every component but the main one, as processors would run them.
pub fn processor_specs(loaded: &Loaded) -> Result<Vec<(String, ProcessorSpec)>, String> {
    loaded
        .specs
        .iter()
        .map(|s| {
            let bytes = memory(s, loaded)?;
            Ok((
                s.id.clone(),
                ProcessorSpec {
                    image: s.definition.reference(),
                    memory: (bytes, limit_text(bytes)),
                    timeout: Duration::from_secs(s.process_timeout),
                    network: network(s).into(),
                    image_parameters: s.image_parameters.clone(),
                },
            ))
        })
        .collect()
}

/// The component's default bucket for `config_id`, Keboola's user error without one.
pub fn default_bucket(
    spec: &ComponentSpec,
    config_id: Option<&str>,
) -> Result<Option<String>, String> {
    if !spec.default_bucket {
        return Ok(None);
    }
    match config_id.filter(|c| !c.is_empty()) {
        Some(id) => Ok(spec.default_bucket_name(id)),
        // Keboola's words.
        None => Err(format!(
            "Configuration ID not set, but is required for default_bucket option (component \
             {:?}'s specification sets default_bucket: give --config-id)",
            spec.id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn loaded(data: serde_json::Value) -> Loaded {
        let doc = json!([{"id": "kbc.x", "data": data}]);
        Loaded {
            source: Some("/tmp/c.json".into()),
            specs: components::parse(&doc).unwrap(),
            explicit: true,
        }
    }

    #[test]
    fn settings_from_a_specification() {
        let l = loaded(
            json!({"definition": {"type": "dockerhub", "uri": "r/x", "tag": "2"},
            "memory": "64m", "process_timeout": 90, "network": "none",
            "image_parameters": {"#k": "v"}, "default_bucket": true}),
        );
        let s = l.find("kbc.x").unwrap();
        assert_eq!(memory(s, &l), Ok(64 << 20));
        assert_eq!(network(s), Network::None);
        let p = processor_specs(&l).unwrap();
        assert_eq!(p[0].1.image, "r/x:2");
        assert_eq!(p[0].1.timeout, Duration::from_secs(90));
        assert_eq!(p[0].1.memory.1, "64m");
        assert_eq!(
            default_bucket(s, Some("9")).unwrap().as_deref(),
            Some("in.c-kbc-x-9")
        );
        assert!(
            default_bucket(s, None)
                .unwrap_err()
                .contains("Configuration ID not set")
        );
    }

    #[test]
    fn keboolas_default_network_is_bridge_and_bad_memory_is_named() {
        let l =
            loaded(json!({"definition": {"type": "dockerhub", "uri": "r/x"}, "memory": "lots"}));
        let s = l.find("kbc.x").unwrap();
        assert_eq!(network(s), Network::Bridge);
        let err = memory(s, &l).unwrap_err();
        assert!(
            err.contains("/tmp/c.json") && err.contains("data.memory"),
            "{err}"
        );
    }
}
