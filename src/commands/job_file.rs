//! `dockless run --job FILE`: a job's image, configuration and component settings in one
//! JSON file, so a job can be kept, versioned and replayed. Flags given on the command line
//! as well win over the file. Instead of `image`, a job may name a `build` (a base image and
//! a repository, see [`dockless_builder::BuildSpec`]): the image is built (or found in the
//! build cache) before the job runs, then runs as any pulled image.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::build::BuildOptions;
use crate::cli::run::{ConfigurationFormat, DataTypeSupport, Network, RunArgs};
use crate::paths::Paths;
use crate::units::{parse_cpus, parse_duration, parse_size};

/// A build command's wall-clock limit when the job sets none (a job's own default).
const DEFAULT_BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The job file's fields: the flags of `dockless run --config`, by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    image: Option<String>,
    build: Option<dockless_builder::BuildSpec>,
    configuration: Option<serde_json::Value>,
    config_file: Option<PathBuf>,
    component_id: Option<String>,
    /// `--components`, relative to the job file.
    components: Option<PathBuf>,
    config_id: Option<String>,
    row_id: Option<String>,
    project_id: Option<String>,
    branch_id: Option<String>,
    orchestration_id: Option<String>,
    configuration_format: Option<String>,
    default_bucket: Option<String>,
    data_type_support: Option<String>,
    image_parameters: Option<serde_json::Value>,
    memory: Option<String>,
    timeout: Option<serde_json::Value>,
    network: Option<String>,
    cpus: Option<f64>,
    #[serde(default)]
    processors: std::collections::BTreeMap<String, String>,
    /// Rows to run (`--row`) of a configuration in the Storage API's form.
    #[serde(default)]
    rows: Vec<String>,
    /// `--variables`, relative to the job file.
    variables: Option<PathBuf>,
    /// `--var NAME=VALUE` as an object of names and values.
    #[serde(default)]
    vars: std::collections::BTreeMap<String, String>,
    /// `--vault`, relative to the job file.
    vault: Option<PathBuf>,
    /// `--shared-code`, relative to the job file.
    shared_code: Option<PathBuf>,
    /// The component's `logging` section, in its specification's form.
    logging: Option<serde_json::Value>,
}

/// Checks that `value` is a job file this version reads (unknown fields refused, as
/// [`apply`] refuses them), so that a queued job fails when it is submitted, not later on a
/// worker.
pub fn check(value: &serde_json::Value, path: &Path) -> anyhow::Result<()> {
    JobFile::deserialize(value)
        .map(|_| ())
        .with_context(|| format!("job file {}: not a valid job", path.display()))
}

/// Reads `path` and fills every setting of `args` the command line left unset; a `build` is
/// built here (its progress on stderr) and becomes the image.
pub fn apply(path: &Path, args: &mut RunArgs, paths: &Paths) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the job file {}", path.display()))?;
    let file: JobFile = serde_json::from_str(&text)
        .with_context(|| format!("job file {}: not a valid job", path.display()))?;
    let bad =
        |what: &str, why: String| anyhow::anyhow!("job file {}: {what}: {why}", path.display());

    if file.image.is_some() && file.build.is_some() {
        return Err(bad("image", "give `image` or `build`, not both".into()));
    }
    let build = file.build.filter(|_| args.image.is_none());
    if args.image.is_none() {
        args.image = file.image;
    }
    let job = &mut args.job;
    match (file.configuration, file.config_file) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "configuration",
                "give `configuration` or `config_file`, not both".into(),
            ));
        }
        (Some(inline), None) => job.config_inline = Some(inline),
        // Relative to the job file, so a job directory can move as a whole.
        (None, Some(f)) => job.config = Some(path.parent().unwrap_or(Path::new(".")).join(f)),
        (None, None) => {
            return Err(bad(
                "configuration",
                "missing (`configuration` or `config_file`)".into(),
            ));
        }
    }
    let beside = |f: PathBuf| path.parent().unwrap_or(Path::new(".")).join(f);
    if job.rows.is_empty() {
        job.rows = file.rows;
    }
    job.variables = job.variables.take().or(file.variables.map(beside));
    job.vault = job.vault.take().or(file.vault.map(beside));
    job.shared_code = job.shared_code.take().or(file.shared_code.map(beside));
    job.components = job.components.take().or(file.components.map(beside));
    // Flags come last: they win over the file's values of the same name.
    let flags = std::mem::take(&mut job.vars);
    job.vars = file.vars.into_iter().chain(flags).collect();
    job.component_id = job.component_id.take().or(file.component_id);
    job.config_id = job.config_id.take().or(file.config_id);
    job.row_id = job.row_id.take().or(file.row_id);
    job.branch_id = job.branch_id.take().or(file.branch_id);
    job.orchestration_id = job.orchestration_id.take().or(file.orchestration_id);
    job.default_bucket = job.default_bucket.take().or(file.default_bucket);
    if let Some(project) = file.project_id.filter(|_| job.project_id == "0") {
        job.project_id = project;
    }
    if let Some(format) = file
        .configuration_format
        .filter(|_| job.configuration_format.is_none())
    {
        job.configuration_format = Some(match format.as_str() {
            "json" => ConfigurationFormat::Json,
            "yaml" => ConfigurationFormat::Yaml,
            other => {
                return Err(bad(
                    "configuration_format",
                    format!("{other:?} is not json or yaml"),
                ));
            }
        });
    }
    if job.data_type_support.is_none()
        && let Some(support) = file.data_type_support
    {
        job.data_type_support = Some(match support.as_str() {
            "authoritative" => DataTypeSupport::Authoritative,
            "hints" => DataTypeSupport::Hints,
            "none" => DataTypeSupport::None,
            other => {
                return Err(bad(
                    "data_type_support",
                    format!("{other:?} is not authoritative, hints or none"),
                ));
            }
        });
    }
    if job.image_parameters.is_none() {
        job.image_parameters_inline = file.image_parameters;
    }
    job.logging_inline = file.logging;
    for (component, image) in file.processors {
        if !job.processors.iter().any(|(c, _)| *c == component) {
            job.processors.push((component, image));
        }
    }
    if args.memory.is_none()
        && let Some(m) = file.memory
    {
        args.memory = Some(parse_size(&m).map_err(|e| bad("memory", e))?);
    }
    if args.timeout.is_none()
        && let Some(t) = file.timeout
    {
        let text = match t {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s,
            other => {
                return Err(bad(
                    "timeout",
                    format!("{other} is not seconds or a duration"),
                ));
            }
        };
        args.timeout = Some(parse_duration(&text).map_err(|e| bad("timeout", e))?);
    }
    if args.cpus.is_none()
        && let Some(cpus) = file.cpus
    {
        args.cpus = Some(parse_cpus(&cpus.to_string()).map_err(|e| bad("cpus", e))?);
    }
    if let Some(net) = file.network.filter(|_| args.network.is_none()) {
        args.network = Some(match net.as_str() {
            "none" => Network::None,
            "host" => Network::Host,
            "bridge" => Network::Bridge,
            other => {
                return Err(bad(
                    "network",
                    format!("{other:?} is not none, bridge or host"),
                ));
            }
        });
    }
    if let Some(mut spec) = build {
        // A local repository is relative to the job file, as `config_file` is.
        if !dockless_builder::git::looks_remote(&spec.repository) {
            spec.repository = path
                .parent()
                .unwrap_or(Path::new("."))
                .join(&spec.repository)
                .to_string_lossy()
                .into_owned();
        }
        let options = BuildOptions {
            tag: None,
            platform: args.platform.clone(),
            registry: args.registry.resolve()?,
            memory: args.memory,
            cpus: args.cpus,
            timeout: args.timeout.unwrap_or(DEFAULT_BUILD_TIMEOUT),
            pids: args.pids_limit,
            quiet: false,
            // As `dockless build` by default: the host's proxy variables, no CA bundle.
            http_proxy: true,
            ca_file: None,
        };
        let built = crate::build::build(&spec, &options, paths)
            .with_context(|| format!("job file {}: build", path.display()))?;
        // The component id defaults from the image's name (state, KBC_COMPONENTID, container
        // names), which a digest does not carry: take it from the build's name first.
        args.job
            .component_id
            .get_or_insert_with(|| super::job::repository_name(&built.name));
        // By digest: the name may be replaced by another build before the run looks it up.
        args.image = Some(built.digest.to_string());
    }
    Ok(())
}
