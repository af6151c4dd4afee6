//! Writing and reading the documents of the `/data` contract: `config.json` of the main
//! container and of processors, as Keboola's `ConfigFile` builds them, in JSON or YAML.

use serde_json::{Map, Value, json};

use super::normalize::parse;
use super::tree::is_empty_php;
use crate::error::{Error, Result};

/// Written as `config.json` (the default) or `config.yml` (component setting
/// `configuration_format: yaml`); manifests and state files follow the same format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// JSON, pretty-printed with 4 spaces as PHP's `JSON_PRETTY_PRINT`.
    #[default]
    Json,
    /// YAML.
    Yaml,
}

impl Format {
    /// File extension without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Yaml => "yml",
        }
    }
}

/// Builds the `config.json` document of the main container the way the runner's `ConfigFile`
/// does, step by step: `runtime` and `processors` dropped; `image_parameters` set to the
/// component's; an empty `authorization` or `storage` dropped; `action` set; the tree parsed
/// again (which appends `shared_code_row_ids: []` when missing); finally `storage`,
/// `parameters`, `image_parameters` and `authorization` written as `{}` when empty (in place,
/// or appended). Values pass through PHP's decoding, so nested empty objects become `[]`.
/// Key order follows from these steps, as in Keboola.
pub fn container_config(config: &Value, image_parameters: &Value, action: &str) -> Result<Value> {
    let mut config = config.clone();
    crate::php_json::empty_objects_as_arrays(&mut config);
    let mut out = match config {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    out.remove("runtime");
    out.remove("processors");
    let mut image = image_parameters.clone();
    crate::php_json::empty_objects_as_arrays(&mut image);
    out.insert("image_parameters".into(), image);
    for key in ["authorization", "storage"] {
        if out.get(key).is_some_and(is_empty_php) {
            out.remove(key);
        }
    }
    out.insert("action".into(), json!(action));
    let mut out = match parse(&Value::Object(out))? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for key in ["storage", "parameters", "image_parameters", "authorization"] {
        if out.get(key).is_none_or(is_empty_php) {
            out.insert(key.to_string(), json!({}));
        }
    }
    Ok(Value::Object(out))
}

/// Builds the `config.json` of a processor: its `parameters`, its own `image_parameters`,
/// the action, then empty `storage` and `authorization`, as the runner writes it.
pub fn processor_config(
    parameters: &Value,
    image_parameters: &Value,
    action: &str,
) -> Result<Value> {
    container_config(
        &json!({ "parameters": parameters }),
        image_parameters,
        action,
    )
}

/// Serializes a document the way the runner writes its files: PHP's pretty-printed JSON
/// (see [`crate::php_json`]), or YAML.
pub fn render(
    value: &Value,
    format: Format,
) -> std::result::Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    match format {
        Format::Json => Ok(crate::php_json::render(value)),
        Format::Yaml => Ok(serde_norway::to_string(value)?.into_bytes()),
    }
}

/// Parses a JSON or YAML document written by a component.
pub fn parse_document(bytes: &[u8], format: Format, what: &str) -> Result<Value> {
    match format {
        Format::Json => serde_json::from_slice(bytes).map_err(|source| Error::Parse {
            what: what.to_string(),
            source,
        }),
        Format::Yaml => serde_norway::from_slice(bytes).map_err(|source| Error::Yaml {
            what: what.to_string(),
            source,
        }),
    }
}
