//! Component specifications as Keboola keeps them: the `components` array of the Storage API
//! index (`GET /v2/storage`), each `{"id", "type", "data": {...}, "features": [...],
//! "dataTypesConfiguration": {...}}`. A user saves that list once from their stack and runs
//! offline: a job then names only a component id, and its image, limits, network,
//! configuration format, image parameters, default bucket, logging and data type support come
//! from here.
//!
//! The rules follow Keboola's own parser (docker-bundle's component configuration tree and
//! job-queue-job-configuration's `ComponentSpecificationDefinition`): a component's top-level
//! keys other than those read here are ignored (the index carries names, icons, schemas...),
//! while `data` is checked as Keboola checks it: unknown keys, wrong types and values outside
//! Keboola's lists are refused, naming the field. Defaults are Keboola's (256m, 3600 s,
//! `bridge`, `json`, stage `in`, tag `latest`).

use serde_json::{Map, Value};

use crate::config::Format;
use crate::id::Stage;
use crate::types::DataTypeSupport;

/// Image registries Keboola knows (`definition.type`).
pub const IMAGE_TYPES: [&str; 3] = ["dockerhub", "quayio", "aws-ecr"];

/// Keys of a component's `data`, as Keboola's definition lists them (dashes read as
/// underscores, as Symfony's config normalizes them).
const DATA_KEYS: [&str; 14] = [
    "definition",
    "memory",
    "configuration_format",
    "process_timeout",
    "forward_token",
    "forward_token_details",
    "default_bucket",
    "image_parameters",
    "network",
    "default_bucket_stage",
    "vendor",
    "synchronous_actions",
    "logging",
    "staging_storage",
];

/// A component's network as its specification names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecNetwork {
    /// No network at all.
    None,
    /// Keboola's default: the container reaches the internet.
    Bridge,
    /// Keboola's `no-internet`: a network without the internet (here: none).
    NoInternet,
}

impl SpecNetwork {
    /// The value as Keboola spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecNetwork::None => "none",
            SpecNetwork::Bridge => "bridge",
            SpecNetwork::NoInternet => "no-internet",
        }
    }
}

/// `data.definition`: where the component's image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDefinition {
    /// `dockerhub`, `quayio` or `aws-ecr`.
    pub kind: String,
    /// The repository (`keboola/ex-db`, `147946154733.dkr.ecr.us-east-1.amazonaws.com/...`).
    pub uri: String,
    /// The tag (`latest` when absent).
    pub tag: String,
    /// The manifest digest (`sha256:...`), empty when absent.
    pub digest: String,
}

impl ImageDefinition {
    /// The reference to pull: `uri@digest` when the specification pins a digest (the exact
    /// image Keboola would run), else `uri:tag`.
    pub fn reference(&self) -> String {
        if self.digest.is_empty() {
            format!("{}:{}", self.uri, self.tag)
        } else {
            format!("{}@{}", self.uri, self.digest)
        }
    }
}

/// One component's specification, Keboola's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSpec {
    /// Component id (`keboola.ex-db-mysql`).
    pub id: String,
    /// `extractor`, `writer`, `processor`, ... (empty when absent).
    pub kind: String,
    /// The image.
    pub definition: ImageDefinition,
    /// Memory limit as written (`256m`).
    pub memory: String,
    /// Timeout in seconds.
    pub process_timeout: u64,
    /// Network.
    pub network: SpecNetwork,
    /// Whether outputs named by file name only go to the component's default bucket.
    pub default_bucket: bool,
    /// The stage of that bucket.
    pub default_bucket_stage: Stage,
    /// `configuration_format`.
    pub configuration_format: Format,
    /// `image_parameters` (`{}` when absent).
    pub image_parameters: Value,
    /// `logging` as written (`{}` when absent), for the binary's logging parser.
    pub logging: Value,
    /// `synchronous_actions`.
    pub synchronous_actions: Vec<String>,
    /// `features`.
    pub features: Vec<String>,
    /// `dataTypesConfiguration.dataTypesSupport` (`none` when absent).
    pub data_type_support: DataTypeSupport,
}

impl ComponentSpec {
    /// The component id as Keboola puts it into bucket names.
    pub fn sanitized_id(&self) -> String {
        crate::sanitize::component_id(&self.id)
    }

    /// The default bucket of a configuration, as Keboola computes it:
    /// `<stage>.c-<sanitized component id>-<config id>`; `None` when the component has none.
    pub fn default_bucket_name(&self, config_id: &str) -> Option<String> {
        self.default_bucket.then(|| {
            format!(
                "{}.c-{}-{config_id}",
                self.default_bucket_stage.as_str(),
                self.sanitized_id()
            )
        })
    }
}

/// A malformed specification: the field (`components[2].data.memory`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// Path of the field.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses a specification document: the Storage API index (`{"components": [...]}`), or its
/// `components` array alone.
pub fn parse(document: &Value) -> Result<Vec<ComponentSpec>, SpecError> {
    let (list, at) = match document {
        Value::Array(list) => (list, String::new()),
        Value::Object(map) => match map.get("components") {
            Some(Value::Array(list)) => (list, "components".to_string()),
            Some(_) => return Err(bad("components", "expected a list of components")),
            None => {
                return Err(bad(
                    "components",
                    "missing (expected the Storage API index, {\"components\": [...]}, or its \
                     components list)",
                ));
            }
        },
        _ => {
            return Err(bad(
                "(document)",
                "expected the Storage API index or a list of components",
            ));
        }
    };
    let mut out: Vec<ComponentSpec> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let spec = parse_component(entry, &at)?;
        if out.iter().any(|s| s.id == spec.id) {
            return Err(bad(
                format!("{at}.id"),
                format!("component {:?} is listed twice", spec.id),
            ));
        }
        out.push(spec);
    }
    Ok(out)
}

/// One entry of the `components` list; `at` is its path for messages.
pub fn parse_component(entry: &Value, at: &str) -> Result<ComponentSpec, SpecError> {
    let Value::Object(map) = entry else {
        return Err(bad(at, "expected a component object"));
    };
    let id = match map.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err(bad(format!("{at}.id"), "expected a component id")),
    };
    let kind = match map.get("type") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(bad(format!("{at}.type"), "expected a string")),
    };
    let features = string_list(map.get("features"), &format!("{at}.features"))?;
    let data_type_support = match map.get("dataTypesConfiguration") {
        None | Some(Value::Null) => DataTypeSupport::None,
        Some(Value::Object(c)) => match c.get("dataTypesSupport") {
            None | Some(Value::Null) => DataTypeSupport::None,
            Some(Value::String(s)) => s
                .parse()
                .map_err(|e| bad(format!("{at}.dataTypesConfiguration.dataTypesSupport"), e))?,
            Some(_) => {
                return Err(bad(
                    format!("{at}.dataTypesConfiguration.dataTypesSupport"),
                    "expected authoritative, hints or none",
                ));
            }
        },
        Some(_) => {
            return Err(bad(
                format!("{at}.dataTypesConfiguration"),
                "expected an object",
            ));
        }
    };
    let at = format!("{at}.data");
    let data = match map.get("data") {
        Some(Value::Object(d)) => normalize_keys(d),
        // Keboola's runner: an empty `data` is `[]` in PHP, and a missing `definition` then.
        Some(Value::Array(a)) if a.is_empty() => Map::new(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(bad(at, "expected an object")),
    };
    if let Some(key) = data.keys().find(|k| !DATA_KEYS.contains(&k.as_str())) {
        return Err(bad(format!("{at}.{key}"), "unrecognized option"));
    }
    let field = |key: &str| format!("{at}.{key}");
    let definition = parse_definition(data.get("definition"), &field("definition"))?;
    let memory = match data.get("memory") {
        None | Some(Value::Null) => "256m".to_string(),
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(bad(field("memory"), "expected a size such as \"256m\""));
        }
    };
    let process_timeout = match data.get("process_timeout") {
        None | Some(Value::Null) => 3600,
        Some(v) => v.as_u64().ok_or_else(|| {
            bad(
                field("process_timeout"),
                format!("expected a whole number of seconds, not {v}"),
            )
        })?,
    };
    let network = match enum_value(&data, "network", &at, &["none", "bridge", "no-internet"])? {
        None | Some("bridge") => SpecNetwork::Bridge,
        Some("none") => SpecNetwork::None,
        Some(_) => SpecNetwork::NoInternet,
    };
    let default_bucket_stage = match enum_value(&data, "default_bucket_stage", &at, &["in", "out"])?
    {
        None | Some("in") => Stage::In,
        Some(_) => Stage::Out,
    };
    let configuration_format =
        match enum_value(&data, "configuration_format", &at, &["json", "yaml"])? {
            None | Some("json") => Format::Json,
            Some(_) => Format::Yaml,
        };
    let default_bucket = boolean(&data, "default_bucket", &at)?;
    for key in ["forward_token", "forward_token_details"] {
        boolean(&data, key, &at)?;
    }
    let image_parameters = match data.get("image_parameters") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Array(a)) if a.is_empty() => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(bad(field("image_parameters"), "expected an object")),
    };
    let logging = match data.get("logging") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Array(a)) if a.is_empty() => Value::Object(Map::new()),
        Some(l @ Value::Object(_)) => l.clone(),
        Some(_) => return Err(bad(field("logging"), "expected an object")),
    };
    let synchronous_actions = string_list(
        data.get("synchronous_actions"),
        &field("synchronous_actions"),
    )?;
    Ok(ComponentSpec {
        id,
        kind,
        definition,
        memory,
        process_timeout,
        network,
        default_bucket,
        default_bucket_stage,
        configuration_format,
        image_parameters,
        logging,
        synchronous_actions,
        features,
        data_type_support,
    })
}

fn normalize_keys(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| (k.replace('-', "_"), v.clone()))
        .collect()
}

fn parse_definition(value: Option<&Value>, at: &str) -> Result<ImageDefinition, SpecError> {
    let Some(Value::Object(map)) = value else {
        return Err(bad(
            at,
            "missing (the component's image: {\"type\", \"uri\", \"tag\"})",
        ));
    };
    let map = normalize_keys(map);
    if let Some(key) = map
        .keys()
        .find(|k| !["type", "uri", "tag", "digest", "repository"].contains(&k.as_str()))
    {
        return Err(bad(format!("{at}.{key}"), "unrecognized option"));
    }
    let kind = match map.get("type") {
        Some(Value::String(t)) if IMAGE_TYPES.contains(&t.as_str()) => t.clone(),
        Some(v) => {
            return Err(bad(
                format!("{at}.type"),
                format!("Invalid image type {v} (dockerhub, quayio or aws-ecr)"),
            ));
        }
        None => return Err(bad(format!("{at}.type"), "missing")),
    };
    let uri = match map.get("uri") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        _ => return Err(bad(format!("{at}.uri"), "expected the image's repository")),
    };
    let text = |key: &str, default: &str| match map.get(key) {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(Value::String(s)) if key == "tag" && s.is_empty() => Ok(default.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(bad(
            format!("{at}.{key}"),
            format!("expected a string, not {v}"),
        )),
    };
    let tag = text("tag", "latest")?;
    let digest = text("digest", "")?;
    if !digest.is_empty() && !digest.contains(':') {
        return Err(bad(
            format!("{at}.digest"),
            format!("{digest:?} is not a digest (sha256:...)"),
        ));
    }
    Ok(ImageDefinition {
        kind,
        uri,
        tag,
        digest,
    })
}

fn enum_value<'a>(
    data: &'a Map<String, Value>,
    key: &str,
    at: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, SpecError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s.as_str())),
        Some(v) => Err(bad(
            format!("{at}.{key}"),
            format!("Invalid {key} {v} (one of {})", allowed.join(", ")),
        )),
    }
}

fn boolean(data: &Map<String, Value>, key: &str, at: &str) -> Result<bool, SpecError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(
            format!("{at}.{key}"),
            format!("expected true or false, not {v}"),
        )),
    }
}

fn string_list(value: Option<&Value>, at: &str) -> Result<Vec<String>, SpecError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad(format!("{at}[{i}]"), "expected a string")),
            })
            .collect(),
        Some(_) => Err(bad(at, "expected a list of strings")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index(data: Value) -> Value {
        json!({"components": [{"id": "keboola.ex-db_mysql", "type": "extractor",
            "name": "MySQL", "flags": ["genericUI"], "data": data}]})
    }

    #[test]
    fn keboolas_defaults_fill_what_the_index_leaves_out() {
        let specs = parse(&index(
            json!({"definition": {"type": "aws-ecr", "uri": "1.dkr/ex"}}),
        ))
        .unwrap();
        let s = &specs[0];
        assert_eq!(s.id, "keboola.ex-db_mysql");
        assert_eq!(s.kind, "extractor");
        assert_eq!(s.definition.reference(), "1.dkr/ex:latest");
        assert_eq!(s.memory, "256m");
        assert_eq!(s.process_timeout, 3600);
        assert_eq!(s.network, SpecNetwork::Bridge);
        assert_eq!(s.configuration_format, Format::Json);
        assert!(!s.default_bucket);
        assert_eq!(s.default_bucket_name("123"), None);
        assert_eq!(s.image_parameters, json!({}));
        assert_eq!(s.data_type_support, DataTypeSupport::None);
    }

    #[test]
    fn every_field_is_read() {
        let doc = json!([{"id": "kds-team.app-x", "type": "application",
            "features": ["container-root-user"],
            "dataTypesConfiguration": {"dataTypesSupport": "authoritative"},
            "data": {"definition": {"type": "dockerhub", "uri": "keboola/x", "tag": "1.2.3",
                                    "digest": "sha256:abcd"},
                     "memory": "1g", "process_timeout": 60, "network": "none",
                     "default_bucket": true, "default-bucket-stage": "out",
                     "configuration_format": "yaml", "image_parameters": {"#k": "v"},
                     "logging": {"type": "gelf", "no_application_errors": true},
                     "synchronous_actions": ["testConnection"], "vendor": {"contact": []},
                     "staging_storage": {"input": "local"}, "forward_token": false}}]);
        let s = &parse(&doc).unwrap()[0];
        assert_eq!(s.definition.reference(), "keboola/x@sha256:abcd");
        assert_eq!(s.definition.tag, "1.2.3");
        assert_eq!(s.memory, "1g");
        assert_eq!(s.process_timeout, 60);
        assert_eq!(s.network, SpecNetwork::None);
        assert_eq!(s.configuration_format, Format::Yaml);
        assert_eq!(s.image_parameters, json!({"#k": "v"}));
        assert_eq!(s.logging["type"], "gelf");
        assert_eq!(s.synchronous_actions, ["testConnection"]);
        assert_eq!(s.features, ["container-root-user"]);
        assert_eq!(s.data_type_support, DataTypeSupport::Authoritative);
        assert_eq!(
            s.default_bucket_name("7").as_deref(),
            Some("out.c-kds-team-app-x-7")
        );
    }

    #[test]
    fn the_default_bucket_is_keboolas() {
        let doc = index(json!({"definition": {"type": "dockerhub", "uri": "a/b"},
                               "default_bucket": true}));
        let s = &parse(&doc).unwrap()[0];
        assert_eq!(
            s.default_bucket_name("123").as_deref(),
            Some("in.c-keboola-ex-db-mysql-123")
        );
        // The same rule as the staging crate's helper.
        assert_eq!(
            crate::id::default_bucket(Stage::In, &s.id, Some("123"))
                .unwrap()
                .to_string(),
            "in.c-keboola-ex-db-mysql-123"
        );
    }

    #[test]
    fn malformed_fields_are_named() {
        for (doc, field) in [
            (json!({"data": []}), "components"),
            (json!({"components": {}}), "components"),
            (json!({"components": [{"data": {}}]}), "components[0].id"),
            (index(json!({})), "components[0].data.definition"),
            (
                index(json!({"definition": {"type": "gcr", "uri": "a"}})),
                "components[0].data.definition.type",
            ),
            (
                index(json!({"definition": {"type": "dockerhub"}})),
                "components[0].data.definition.uri",
            ),
            (
                index(json!({"definition": {"type": "dockerhub", "uri": "a"}, "memory": true})),
                "components[0].data.memory",
            ),
            (
                index(
                    json!({"definition": {"type": "dockerhub", "uri": "a"}, "process_timeout": "1h"}),
                ),
                "components[0].data.process_timeout",
            ),
            (
                index(json!({"definition": {"type": "dockerhub", "uri": "a"}, "network": "host"})),
                "components[0].data.network",
            ),
            (
                index(
                    json!({"definition": {"type": "dockerhub", "uri": "a"}, "default_bucket_stage": "sys"}),
                ),
                "components[0].data.default_bucket_stage",
            ),
            (
                index(json!({"definition": {"type": "dockerhub", "uri": "a"}, "cpus": 2})),
                "components[0].data.cpus",
            ),
            (
                index(
                    json!({"definition": {"type": "dockerhub", "uri": "a"}, "image_parameters": 3}),
                ),
                "components[0].data.image_parameters",
            ),
            (
                json!([{"id": "a", "dataTypesConfiguration": {"dataTypesSupport": "all"},
                        "data": {"definition": {"type": "dockerhub", "uri": "a"}}}]),
                "[0].dataTypesConfiguration.dataTypesSupport",
            ),
            (
                json!([{"id": "a", "data": {"definition": {"type": "dockerhub", "uri": "a"}}},
                       {"id": "a", "data": {"definition": {"type": "dockerhub", "uri": "b"}}}]),
                "[1].id",
            ),
        ] {
            let err = parse(&doc).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }
}
