//! A configuration with rows: each enabled row is a job run of its own ([`super::run`]), in
//! order, with its own state, as Keboola's runner runs a configuration's job definitions. As
//! there, the first row that fails ends the job: the rows after it are not run (the outputs
//! of the rows before it stay loaded), and the rows' states are stored only when every row
//! succeeded, all at once at the end. Disabled rows are listed as skipped. The result lists
//! every row; its class is the worst row's.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::classify::Class;
use super::result::JobResult;
use super::{JobSettings, run};
use crate::paths::Paths;

/// One row of the configuration, as planned: run with this configuration, or skipped.
#[derive(Debug, Clone)]
pub enum RowPlan {
    /// Run the row with its (merged, resolved) configuration.
    Run {
        /// Row id.
        row_id: String,
        /// The configuration the row's run gets.
        configuration: Value,
    },
    /// A disabled row.
    Disabled {
        /// Row id.
        row_id: String,
    },
}

/// What became of one row.
#[derive(Debug, Clone, Serialize)]
pub struct RowOutcome {
    /// Row id.
    pub row_id: String,
    /// `success`, `error`, `terminated`, `skipped` (disabled) or `not run` (an earlier row
    /// failed).
    pub status: &'static str,
    /// Why a row did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The row's job result, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
}

/// The result of a configuration with rows: what `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct RowsResult {
    /// `success`, `error` or `terminated`: the worst row's.
    pub status: &'static str,
    /// The worst row's class.
    pub class: Class,
    /// The failed row's message, prefixed with its id.
    pub message: Option<String>,
    /// Component id.
    pub component_id: String,
    /// Configuration id, if any.
    pub config_id: Option<String>,
    /// Run id, shared by the rows (one Keboola job).
    pub run_id: String,
    /// Every row, in order.
    pub rows: Vec<RowOutcome>,
    /// Notes on the configuration as a whole (states not stored after a failed row).
    pub warnings: Vec<String>,
    /// A row, or the rows' states, could not be stored because the Storage was unreachable
    /// (see [`JobResult::retryable`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
}

impl RowsResult {
    /// Some row's working dir could not be removed (dockless exits 125 then).
    pub fn cleanup_failed(&self) -> bool {
        self.rows
            .iter()
            .filter_map(|r| r.result.as_ref())
            .any(|r| r.cleanup_error.is_some())
    }

    /// Each row's summary, then one line for the configuration.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for row in &self.rows {
            match &row.result {
                Some(result) => {
                    let _ = writeln!(s, "dockless: row {}:", row.row_id);
                    s.push_str(&result.summary());
                }
                None => {
                    let _ = writeln!(
                        s,
                        "dockless: row {}: {} ({})",
                        row.row_id,
                        row.status,
                        row.reason.as_deref().unwrap_or("")
                    );
                }
            }
        }
        for w in &self.warnings {
            let _ = writeln!(s, "dockless: warning: {w}");
        }
        let count = |status: &str| self.rows.iter().filter(|r| r.status == status).count();
        let _ = writeln!(
            s,
            "dockless: configuration {}: {} rows: {} succeeded, {} failed, {} skipped, {} not run: {}",
            self.config_id.as_deref().unwrap_or("(no id)"),
            self.rows.len(),
            count("success"),
            count("error") + count("terminated"),
            count("skipped"),
            count("not run"),
            self.status
        );
        s
    }
}

/// Runs the rows in order with `base`'s settings (each with its own configuration and row
/// id); stops at the first row that does not succeed.
pub fn run_rows(base: &JobSettings, rows: Vec<RowPlan>, paths: &Paths) -> RowsResult {
    let mut result = RowsResult {
        status: "success",
        class: Class::Success,
        message: None,
        component_id: base.component_id.clone(),
        config_id: base.config_id.clone(),
        run_id: base.run_id.clone(),
        rows: Vec::new(),
        warnings: Vec::new(),
        retryable: false,
    };
    let mut failed: Option<String> = None;
    let mut states = Vec::new();
    for row in rows {
        let (row_id, configuration) = match row {
            RowPlan::Disabled { row_id } => {
                result.rows.push(RowOutcome {
                    row_id,
                    status: "skipped",
                    reason: Some("the row is disabled".into()),
                    result: None,
                });
                continue;
            }
            RowPlan::Run {
                row_id,
                configuration,
            } => (row_id, configuration),
        };
        if let Some((_, state)) = base.rows_done.iter().find(|(done, _)| *done == row_id) {
            // Stored by an earlier attempt of this queued job: not run twice.
            if let Some(state) = state {
                let key = dockless_staging::StateKey {
                    component: base.component_id.clone(),
                    config: base.config_id.clone().unwrap_or_default(),
                    row: Some(row_id.clone()),
                };
                states.push((result.rows.len(), (key, state.clone())));
            }
            result.rows.push(RowOutcome {
                row_id,
                status: "success",
                reason: Some("stored by an earlier attempt of this queued job".into()),
                result: None,
            });
            continue;
        }
        if let Some(first) = &failed {
            result.rows.push(RowOutcome {
                row_id,
                status: "not run",
                reason: Some(format!("row {first} failed before it")),
                result: None,
            });
            continue;
        }
        let mut settings = base.clone();
        settings.configuration = configuration;
        settings.row_id = Some(row_id.clone());
        settings.defer_state = true;
        let mut ran = run(&settings, paths);
        if let Some(state) = ran.deferred_state.take() {
            states.push((result.rows.len(), state));
        }
        if ran.class != Class::Success {
            failed = Some(row_id.clone());
            result.retryable |= ran.retryable;
            if worse(ran.class, result.class) {
                result.class = ran.class;
                result.status = ran.status;
                result.message = ran.message.as_ref().map(|m| format!("row {row_id}: {m}"));
            }
        }
        result.rows.push(RowOutcome {
            row_id,
            status: ran.status,
            reason: None,
            result: Some(ran),
        });
    }
    if let Some(row) = &failed {
        if !states.is_empty() {
            result.warnings.push(format!(
                "no row's state was stored: row {row} failed (Keboola stores the states of a \
                 configuration's rows only when every row succeeded)"
            ));
        }
        return result;
    }
    if states.is_empty() {
        return result;
    }
    let stored = crate::stages::storage::open(paths).and_then(|mut storage| {
        let all: Vec<_> = states.iter().map(|(_, s)| s.clone()).collect();
        dockless_staging::job::store_states_ending(&mut storage, &all, base.claim.as_ref())
    });
    match stored {
        Ok(()) => {
            for (index, _) in &states {
                if let Some(r) = result.rows[*index].result.as_mut() {
                    r.state_stored = true;
                }
            }
        }
        Err(e) => {
            result.retryable = e.is_unavailable();
            result.class = Class::Application;
            result.status = "error";
            result.message = Some(format!("storing the rows' states failed: {e}"));
        }
    }
    result
}

/// `a` is a worse outcome than `b`: success < user error < application error < terminated.
fn worse(a: Class, b: Class) -> bool {
    fn rank(c: Class) -> u8 {
        match c {
            Class::Success => 0,
            Class::User => 1,
            Class::Application => 2,
            Class::Terminated => 3,
        }
    }
    rank(a) > rank(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_rank_from_success_to_terminated() {
        assert!(worse(Class::User, Class::Success));
        assert!(worse(Class::Application, Class::User));
        assert!(worse(Class::Terminated, Class::Application));
        assert!(!worse(Class::User, Class::Application));
    }
}
