//! The `KBC_*` variables a component sees (contract §7). There is no Storage API here, so no
//! token and no URL are ever forwarded: nothing secret enters the container beyond its
//! decrypted config.json.

use dockless_staging::DataTypeSupport;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Who runs what, as the variables report it.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    /// The run id (`KBC_RUNID`).
    pub run_id: &'a str,
    /// The project id (`KBC_PROJECTID`).
    pub project_id: &'a str,
    /// The stack id (`KBC_STACKID`).
    pub stack_id: &'a str,
    /// The configuration id, when the job runs a stored configuration.
    pub config_id: Option<&'a str>,
    /// The row id, when it runs a row.
    pub row_id: Option<&'a str>,
    /// The branch id, when known ([`DEFAULT_BRANCH`] otherwise).
    pub branch_id: Option<&'a str>,
    /// The configuration's version (`KBC_CONFIGVERSION`), when the job runs a stored one.
    pub config_version: Option<&'a str>,
    /// Keboola's run mode: `run`, or `debug` for a debug job.
    pub run_mode: &'a str,
    /// The component's data type support (`KBC_DATA_TYPE_SUPPORT`). Keboola sets the variable
    /// in projects with native types, from the component alone (a configuration's
    /// `storage.output.data_type_support` is not reflected); the embedded Storage keeps
    /// types, so it is always set.
    pub data_type_support: DataTypeSupport,
}

/// `KBC_BRANCHID` of a job that names no branch: Keboola always sets the variable (a job
/// runs in a branch, the default one at least); its numeric id is not known locally, so the
/// name Keboola's libraries use for the default branch stands in.
pub const DEFAULT_BRANCH: &str = "default";

/// Feature gates every component sees: Keboola's Python library keeps `write_always` in the
/// manifests it writes only with `queuev2` among them (contract §19).
pub const FEATURE_GATES: &str = "queuev2";

/// `KEY=VALUE` entries for the image of component `component_id` (a processor gets its own
/// id). `parameters` stands in for the config id of an unnamed configuration.
pub fn variables(who: &Identity<'_>, component_id: &str, parameters: &Value) -> Vec<String> {
    let config_id = match who.config_id {
        Some(id) => id.to_string(),
        None => unnamed_config_id(parameters),
    };
    let mut env = vec![
        "KBC_DATADIR=/data/".to_string(),
        format!("KBC_RUNID={}", who.run_id),
        format!("KBC_PROJECTID={}", who.project_id),
        format!("KBC_STACKID={}", who.stack_id),
        format!("KBC_CONFIGID={config_id}"),
        format!(
            "KBC_CONFIGVERSION={}",
            who.config_version.unwrap_or_default()
        ),
        format!("KBC_COMPONENTID={component_id}"),
        "KBC_STAGING_FILE_PROVIDER=local".to_string(),
        format!("KBC_PROJECT_FEATURE_GATES={FEATURE_GATES}"),
        format!("KBC_COMPONENT_RUN_MODE={}", who.run_mode),
        format!("KBC_DATA_TYPE_SUPPORT={}", who.data_type_support),
    ];
    if let Some(row) = who.row_id {
        env.push(format!("KBC_CONFIGROWID={row}"));
    }
    env.push(format!(
        "KBC_BRANCHID={}",
        who.branch_id.unwrap_or(DEFAULT_BRANCH)
    ));
    env
}

/// Keboola hashes the parameters of an unnamed configuration into its config id; ours is the
/// first 40 hex digits of the SHA-256 of their JSON (opaque either way).
fn unnamed_config_id(parameters: &Value) -> String {
    let digest = Sha256::digest(parameters.to_string().as_bytes());
    hex::encode(digest)[..40].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn always_and_conditional_variables() {
        let who = Identity {
            run_id: "42",
            project_id: "1",
            stack_id: "local",
            config_id: Some("cfg"),
            row_id: None,
            branch_id: None,
            config_version: None,
            run_mode: "run",
            data_type_support: DataTypeSupport::default(),
        };
        let env = variables(&who, "demo", &json!({}));
        assert!(env.contains(&"KBC_DATA_TYPE_SUPPORT=none".to_string()));
        assert!(env.contains(&"KBC_DATADIR=/data/".to_string()));
        assert!(env.contains(&"KBC_CONFIGID=cfg".to_string()));
        assert!(env.contains(&"KBC_COMPONENTID=demo".to_string()));
        assert!(!env.iter().any(|e| e.starts_with("KBC_CONFIGROWID")));
        assert!(!env.iter().any(|e| e.starts_with("KBC_TOKEN")));
        let unnamed = Identity {
            config_id: None,
            row_id: Some("r1"),
            data_type_support: DataTypeSupport::Authoritative,
            ..who
        };
        let env = variables(&unnamed, "demo", &json!({"a": 1}));
        assert!(env.contains(&"KBC_DATA_TYPE_SUPPORT=authoritative".to_string()));
        let id = env.iter().find(|e| e.starts_with("KBC_CONFIGID=")).unwrap();
        assert_eq!(id.len(), "KBC_CONFIGID=".len() + 40);
        assert!(env.contains(&"KBC_CONFIGROWID=r1".to_string()));
    }
}
