//! The configuration of `dockless run --config` as a user keeps it: a job configuration, or a
//! configuration in the Storage API's form with rows; its shared code, vault and
//! configuration variables from the files the flags name. Everything is read, resolved and
//! checked here, for every row, before anything runs: a failure is the user's, naming the
//! file and the key.

use std::path::Path;

use dockless_staging::config::{self, Planned, Sources};
use serde_json::Value;

use crate::cli::run::JobArgs;
use crate::pipeline::rows::RowPlan;

/// What a configuration runs.
#[derive(Debug)]
pub enum Runs {
    /// One run: a job configuration, or a stored configuration without rows.
    Single {
        /// The resolved configuration.
        configuration: Value,
        /// The row id given with `--row-id`.
        row_id: Option<String>,
    },
    /// A configuration with rows, each row its own run.
    Rows(Vec<RowPlan>),
}

/// The configuration's id (`--config-id`, else the document's `id`) and its runs.
#[derive(Debug)]
pub struct Plan {
    /// Configuration id.
    pub config_id: Option<String>,
    /// The stored configuration's version, when its document gives one.
    pub config_version: Option<String>,
    /// The runs.
    pub runs: Runs,
}

/// Reads the values of variables, vault and shared code the flags name.
pub fn sources(job: &JobArgs) -> Result<Sources, String> {
    let mut sources = Sources::default();
    if let Some(path) = &job.variables {
        sources.variables = config::parse_values(&read_json(path, "--variables")?)
            .map_err(|e| format!("--variables {}: {e}", path.display()))?;
    }
    sources.variables.extend(job.vars.iter().cloned());
    if let Some(path) = &job.vault {
        let document = read_json(path, "--vault")?;
        sources.vault = config::parse_vault(&document)
            .map_err(|e| format!("--vault {}: {e}", path.display()))?;
        sources.secrets = config::vault_secrets(&document);
    }
    if let Some(path) = &job.shared_code {
        sources.shared_code = Some(
            config::parse_shared_code(&read_json(path, "--shared-code")?)
                .map_err(|e| format!("--shared-code {}: {e}", path.display()))?,
        );
    } else if let Some(document) = &job.shared_code_inline {
        sources.shared_code = Some(
            config::parse_shared_code(document)
                .map_err(|e| format!("the project's shared code: {e}"))?,
        );
    }
    Ok(sources)
}

fn read_json(path: &Path, flag: &str) -> Result<Value, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{flag} {}: not valid JSON: {e}", path.display()))
}

/// The runs of `document` (read from `file`): rows merged, shared code and variables
/// resolved, every row's configuration checked.
pub fn plan(
    document: &Value,
    file: &Path,
    job: &JobArgs,
    sources: &Sources,
) -> Result<Plan, String> {
    let file = file.display();
    if !config::is_stored_form(document) {
        if !job.rows.is_empty() {
            return Err(format!(
                "--row: the configuration {file} has no rows (rows come with a configuration \
                 in the Storage API's form: {{\"id\", \"configuration\", \"rows\"}})"
            ));
        }
        let configuration =
            config::resolve(document, sources).map_err(|e| format!("configuration {file}: {e}"))?;
        return Ok(Plan {
            config_id: job.config_id.clone(),
            config_version: None,
            runs: Runs::Single {
                configuration,
                row_id: job.row_id.clone(),
            },
        });
    }
    let stored =
        config::parse_stored(document).map_err(|e| format!("configuration {file}: {e}"))?;
    let config_id = job.config_id.clone().or(stored.id.clone());
    if stored.rows.is_empty() {
        if !job.rows.is_empty() {
            return Err(format!(
                "--row: the configuration {file} has no rows, so row {:?} cannot be run",
                job.rows.join(",")
            ));
        }
        let configuration = config::resolve(&stored.configuration, sources)
            .map_err(|e| format!("configuration {file}: {e}"))?;
        return Ok(Plan {
            config_id,
            config_version: stored.version.clone(),
            runs: Runs::Single {
                configuration,
                row_id: job.row_id.clone(),
            },
        });
    }
    let mut selection = job.rows.clone();
    selection.extend(job.row_id.iter().cloned());
    let planned =
        config::plan(&stored, &selection).map_err(|e| format!("configuration {file}: {e}"))?;
    let mut rows = Vec::new();
    for entry in planned {
        match entry {
            Planned::Skipped { row_id } => rows.push(RowPlan::Disabled { row_id }),
            Planned::Run {
                row_id,
                configuration,
            } => {
                let row_id = row_id.unwrap_or_default();
                let bad =
                    |e: &dyn std::fmt::Display| format!("configuration {file}: row {row_id}: {e}");
                let configuration =
                    config::resolve(&configuration, sources).map_err(|e| bad(&e))?;
                config::normalize(&configuration).map_err(|e| bad(&e))?;
                crate::pipeline::process_timeout(&configuration).map_err(|e| bad(&e))?;
                rows.push(RowPlan::Run {
                    row_id,
                    configuration,
                });
            }
        }
    }
    Ok(Plan {
        config_id,
        config_version: stored.version.clone(),
        runs: Runs::Rows(rows),
    })
}
