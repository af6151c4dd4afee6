//! Native data types: how much a component vouches for the types it writes, Keboola's base
//! types, and a column's type as Storage keeps it with the table.
//!
//! Both forms of an output manifest carry types: the native-types form in
//! `schema[].data_type` (`{"base": {"type", "length", "default"}, "snowflake": {...}}`,
//! `nullable`), the legacy form in `column_metadata` under the `KBC.datatype.*` keys. Both
//! become a [`ColumnType`]; an input manifest in the typed form is written back from it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// Keboola's `dataTypesSupport` (component) / `storage.output.data_type_support`
/// (configuration): `authoritative` (every output column must carry its type), `hints`
/// (types are kept as metadata, columns are created as strings), `none` (Keboola's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataTypeSupport {
    /// Types are the truth: every schema column needs `data_type.base`.
    Authoritative,
    /// Types are hints: stored as `KBC.datatype.*` metadata on string columns.
    Hints,
    /// The component says nothing about types.
    #[default]
    None,
}

impl DataTypeSupport {
    /// The value as Keboola spells it (`KBC_DATA_TYPE_SUPPORT`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataTypeSupport::Authoritative => "authoritative",
            DataTypeSupport::Hints => "hints",
            DataTypeSupport::None => "none",
        }
    }

    /// `authoritative` or `hints`: the component reads and writes typed manifests.
    pub fn is_typed(self) -> bool {
        self != DataTypeSupport::None
    }
}

impl FromStr for DataTypeSupport {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "authoritative" => Ok(DataTypeSupport::Authoritative),
            "hints" => Ok(DataTypeSupport::Hints),
            "none" => Ok(DataTypeSupport::None),
            other => Err(format!(
                "{other:?} is not one of \"authoritative\", \"hints\", \"none\""
            )),
        }
    }
}

impl fmt::Display for DataTypeSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keboola's backend-independent base types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BaseType {
    /// Text.
    String,
    /// Whole numbers.
    Integer,
    /// Exact decimals (length `precision,scale`).
    Numeric,
    /// Floating point.
    Float,
    /// True or false.
    Boolean,
    /// A calendar date.
    Date,
    /// A point in time.
    Timestamp,
}

/// Every base type, in Keboola's order (for messages).
pub const BASE_TYPES: [BaseType; 7] = [
    BaseType::String,
    BaseType::Integer,
    BaseType::Numeric,
    BaseType::Float,
    BaseType::Boolean,
    BaseType::Date,
    BaseType::Timestamp,
];

impl BaseType {
    /// The name as Keboola spells it (`STRING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            BaseType::String => "STRING",
            BaseType::Integer => "INTEGER",
            BaseType::Numeric => "NUMERIC",
            BaseType::Float => "FLOAT",
            BaseType::Boolean => "BOOLEAN",
            BaseType::Date => "DATE",
            BaseType::Timestamp => "TIMESTAMP",
        }
    }

    /// A base type by name, in any case (libraries write `string` as well as `STRING`).
    pub fn parse(name: &str) -> Option<BaseType> {
        BASE_TYPES
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for BaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A column's type on one SQL backend (`snowflake`, `bigquery`), kept as the manifest gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendType {
    /// The backend's type name, e.g. `NUMBER`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Its length, e.g. `38,0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<String>,
    /// Its default value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// A typed column as Storage keeps it, part of the table's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnType {
    /// Keboola's base type.
    pub base: BaseType,
    /// Length of the base type (`255`, `12,2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<String>,
    /// Default value of the base type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Whether the column may hold NULL.
    pub nullable: bool,
    /// The backend-specific entries of the manifest's `data_type`, by backend.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, BackendType>,
}

impl ColumnType {
    /// A column of `base` type, nullable, without length, default or backend entries.
    pub fn of(base: BaseType) -> ColumnType {
        ColumnType {
            base,
            length: None,
            default: None,
            nullable: true,
            backends: BTreeMap::new(),
        }
    }

    /// The `data_type` node of a typed input manifest: `base` plus every backend entry.
    /// Keboola writes the length and default on the entry of the table's SQL backend; the
    /// embedded Storage has no SQL backend of its own, so they stay on `base`.
    pub fn data_type(&self) -> Value {
        let mut base = Map::new();
        base.insert("type".into(), json!(self.base.as_str()));
        if let Some(l) = &self.length {
            base.insert("length".into(), json!(l));
        }
        if let Some(d) = &self.default {
            base.insert("default".into(), json!(d));
        }
        let mut out = Map::new();
        out.insert("base".into(), Value::Object(base));
        for (backend, t) in &self.backends {
            out.insert(
                backend.clone(),
                serde_json::to_value(t).unwrap_or(Value::Null),
            );
        }
        Value::Object(out)
    }
}

/// Backends a manifest's `data_type` may name besides `base` (Keboola's list).
pub const DATA_TYPE_BACKENDS: [&str; 3] = ["base", "snowflake", "bigquery"];

/// Keboola turns a non-string `length` or `default` into a string (booleans as
/// `true`/`false`).
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "true" } else { "false" }.to_string()),
        other => Some(other.to_string()),
    }
}

fn unknown_base(table: &str, column: &str, value: &str) -> String {
    let known: Vec<&str> = BASE_TYPES.iter().map(|t| t.as_str()).collect();
    format!(
        "table {table} column {column:?}: unknown base type {value:?} (Keboola's base types are {})",
        known.join(", ")
    )
}

/// The type of one `schema[]` entry of a manifest (already known to be an object with a
/// name), or `None` when it has no `data_type`. `what` names the source for errors, `table`
/// the destination.
pub fn from_schema_column(
    entry: &Map<String, Value>,
    what: &str,
    table: &str,
) -> Result<Option<ColumnType>> {
    let name = entry
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let nullable = match entry.get("nullable") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(Error::mapping(
                what,
                format!("schema column {name:?}: nullable must be a boolean, got {other}"),
            ));
        }
    };
    let data_type = match entry.get("data_type") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(Error::mapping(
                what,
                format!("schema column {name:?}: data_type must be an object, got {other}"),
            ));
        }
    };
    let mut base = None;
    let mut backends = BTreeMap::new();
    for (backend, spec) in data_type {
        if !DATA_TYPE_BACKENDS.contains(&backend.as_str()) {
            return Err(Error::mapping(
                what,
                format!("The \"{backend}\" data type is not supported."),
            ));
        }
        let spec = spec.as_object().ok_or_else(|| {
            Error::mapping(
                what,
                format!("schema column {name:?}: data_type.{backend} must be an object"),
            )
        })?;
        let type_name = match spec.get("type").and_then(scalar_text) {
            Some(t) if !t.is_empty() => t,
            _ => {
                return Err(Error::mapping(
                    what,
                    format!("The \"type\" is required for the \"{backend}\" data type."),
                ));
            }
        };
        let length = spec.get("length").and_then(scalar_text);
        let default = spec.get("default").and_then(scalar_text);
        if backend == "base" {
            let parsed = BaseType::parse(&type_name)
                .ok_or_else(|| Error::mapping(what, unknown_base(table, name, &type_name)))?;
            base = Some((parsed, length, default));
        } else {
            backends.insert(
                backend.clone(),
                BackendType {
                    type_name,
                    length,
                    default,
                },
            );
        }
    }
    let Some((base, length, default)) = base else {
        return Err(Error::mapping(
            what,
            format!("schema column {name:?}: data_type needs a \"base\" entry"),
        ));
    };
    Ok(Some(ColumnType {
        base,
        length,
        default,
        nullable,
        backends,
    }))
}

/// Keboola's truthiness of a `KBC.datatype.nullable` value (`1`, `true` or a JSON true).
fn truthy_text(v: &str) -> bool {
    !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
}

/// The type a legacy manifest gives a column in its `column_metadata` entries: a
/// `KBC.datatype.basetype` makes the column typed, with `KBC.datatype.length`, `.default` and
/// `.nullable`; `KBC.datatype.type` is the native type of the backend the table metadata
/// `KBC.datatype.backend` names (Keboola's earlier native-types rule). `None` without a
/// base type.
pub fn from_column_metadata(
    entries: &[(String, String)],
    table_backend: Option<&str>,
    what: &str,
    table: &str,
    column: &str,
) -> Result<Option<ColumnType>> {
    let get = |key: &str| {
        entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let Some(base_name) = get("KBC.datatype.basetype") else {
        return Ok(None);
    };
    let base = BaseType::parse(&base_name)
        .ok_or_else(|| Error::mapping(what, unknown_base(table, column, &base_name)))?;
    let mut column_type = ColumnType {
        base,
        length: get("KBC.datatype.length").filter(|l| !l.is_empty()),
        default: get("KBC.datatype.default"),
        nullable: get("KBC.datatype.nullable").is_none_or(|n| truthy_text(&n)),
        backends: BTreeMap::new(),
    };
    if let (Some(backend), Some(native)) = (
        table_backend.filter(|b| DATA_TYPE_BACKENDS[1..].contains(b)),
        get("KBC.datatype.type").filter(|t| !t.is_empty()),
    ) {
        column_type.backends.insert(
            backend.to_string(),
            BackendType {
                type_name: native,
                length: column_type.length.clone(),
                default: column_type.default.clone(),
            },
        );
    }
    Ok(Some(column_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn support_values_round_trip_and_refuse_others() {
        for s in ["authoritative", "hints", "none"] {
            assert_eq!(s.parse::<DataTypeSupport>().unwrap().as_str(), s);
        }
        assert!("Authoritative".parse::<DataTypeSupport>().is_err());
        assert_eq!(DataTypeSupport::default(), DataTypeSupport::None);
        assert!(DataTypeSupport::Hints.is_typed());
        assert!(!DataTypeSupport::None.is_typed());
    }

    #[test]
    fn base_types_in_any_case_and_nothing_else() {
        assert_eq!(BaseType::parse("string"), Some(BaseType::String));
        assert_eq!(BaseType::parse("TimeStamp"), Some(BaseType::Timestamp));
        for t in BASE_TYPES {
            assert_eq!(BaseType::parse(t.as_str()), Some(t));
        }
        assert_eq!(BaseType::parse("VARCHAR"), None);
        assert_eq!(BaseType::parse(""), None);
    }

    #[test]
    fn schema_column_with_base_and_backend_entries() {
        let entry = obj(json!({"name": "id", "nullable": false, "data_type": {
            "base": {"type": "numeric", "length": 12, "default": true},
            "snowflake": {"type": "NUMBER", "length": "12,2"}}}));
        let t = from_schema_column(&entry, "out/tables/a", "out.c-b.a")
            .unwrap()
            .unwrap();
        assert_eq!(t.base, BaseType::Numeric);
        assert_eq!(t.length.as_deref(), Some("12"));
        assert_eq!(t.default.as_deref(), Some("true"));
        assert!(!t.nullable);
        assert_eq!(t.backends["snowflake"].type_name, "NUMBER");
        assert_eq!(
            t.data_type(),
            json!({"base": {"type": "NUMERIC", "length": "12", "default": "true"},
                   "snowflake": {"type": "NUMBER", "length": "12,2"}})
        );
        let untyped = obj(json!({"name": "x"}));
        assert_eq!(from_schema_column(&untyped, "w", "t").unwrap(), None);
    }

    #[test]
    fn schema_column_errors_use_keboola_wording_and_name_the_column() {
        let err = |v: Value| {
            from_schema_column(&obj(v), "out/tables/a.csv", "out.c-b.a")
                .unwrap_err()
                .to_string()
        };
        let unknown = err(json!({"name": "num", "data_type": {"base": {"type": "VARCHAR"}}}));
        assert!(unknown.contains("out.c-b.a"), "{unknown}");
        assert!(unknown.contains("\"num\""), "{unknown}");
        assert!(unknown.contains("\"VARCHAR\""), "{unknown}");
        assert!(
            err(json!({"name": "a", "data_type": {"base": {"type": "STRING"}, "redshift": {"type": "X"}}}))
                .contains("The \"redshift\" data type is not supported.")
        );
        assert!(
            err(json!({"name": "a", "data_type": {"base": {"length": "1"}}}))
                .contains("The \"type\" is required for the \"base\" data type.")
        );
        assert!(
            err(json!({"name": "a", "data_type": {"snowflake": {"type": "TEXT"}}}))
                .contains("needs a \"base\" entry")
        );
    }

    #[test]
    fn legacy_column_metadata() {
        let entries = vec![
            ("KBC.datatype.basetype".to_string(), "INTEGER".to_string()),
            ("KBC.datatype.type".to_string(), "NUMBER".to_string()),
            ("KBC.datatype.length".to_string(), "38,0".to_string()),
            ("KBC.datatype.nullable".to_string(), "0".to_string()),
            ("KBC.datatype.default".to_string(), "0".to_string()),
        ];
        let t = from_column_metadata(&entries, Some("snowflake"), "w", "t", "c")
            .unwrap()
            .unwrap();
        assert_eq!(t.base, BaseType::Integer);
        assert!(!t.nullable);
        assert_eq!(t.length.as_deref(), Some("38,0"));
        assert_eq!(t.backends["snowflake"].type_name, "NUMBER");
        let plain = from_column_metadata(&entries, None, "w", "t", "c")
            .unwrap()
            .unwrap();
        assert!(plain.backends.is_empty());
        assert_eq!(
            from_column_metadata(&[("k".into(), "v".into())], None, "w", "t", "c").unwrap(),
            None
        );
        let bad = from_column_metadata(
            &[("KBC.datatype.basetype".into(), "TEXT".into())],
            None,
            "w",
            "out.c-b.t",
            "c",
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("\"TEXT\"") && bad.contains("out.c-b.t"),
            "{bad}"
        );
    }
}
