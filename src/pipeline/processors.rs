//! `processors.before[]` / `processors.after[]` of a configuration: which images run around
//! the main one (contract §9). Keboola finds a processor's image through its component id in
//! the Developer Portal; here `--processor COMPONENT=IMAGE` names it, else the component's
//! specification (`--components`, with its own limits, network and image parameters), and
//! without either the component id is taken as the image reference itself
//! (`definition.tag` as its tag).

use std::time::Duration;

use dockless_runtime::bundle::NetworkMode;
use serde_json::Value;

/// Before or after the main image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// `processors.before`
    Before,
    /// `processors.after`
    After,
}

impl Position {
    /// The name used in results.
    pub fn role(self) -> &'static str {
        match self {
            Position::Before => "before",
            Position::After => "after",
        }
    }
}

/// What a processor's component specification sets for its container (Keboola runs each
/// processor with its own component's limits, network and image parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorSpec {
    /// The image from the specification.
    pub image: String,
    /// Memory limit in bytes and as written.
    pub memory: (i64, String),
    /// Its timeout.
    pub timeout: Duration,
    /// Its network.
    pub network: NetworkMode,
    /// Its `image_parameters`.
    pub image_parameters: Value,
}

/// One processor to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Processor {
    /// Where it runs.
    pub position: Position,
    /// Its component id (`KBC_COMPONENTID`).
    pub component: String,
    /// Its image reference.
    pub image: String,
    /// Its `parameters` (`{}` when absent): the only part of the configuration it sees.
    pub parameters: Value,
    /// Its component's specification, when one was given.
    pub spec: Option<ProcessorSpec>,
}

/// The processors of a normalized configuration, before ones first, or the path and reason of
/// the first malformed entry (a user error).
pub fn parse(
    configuration: &Value,
    images: &[(String, String)],
    specs: &[(String, ProcessorSpec)],
) -> Result<Vec<Processor>, String> {
    let section = match configuration.get("processors") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        // Normalization writes an empty section as `[]`, as PHP's runner does.
        Some(Value::Array(list)) if list.is_empty() => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err("invalid configuration at processors: expected an object".into()),
    };
    if let Some(key) = section.keys().find(|k| *k != "before" && *k != "after") {
        return Err(format!(
            "invalid configuration at processors: unrecognized option {key:?}"
        ));
    }
    let mut out = Vec::new();
    for (name, position) in [("before", Position::Before), ("after", Position::After)] {
        let entries = match section.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(list)) => list,
            Some(_) => {
                return Err(format!(
                    "invalid configuration at processors.{name}: expected a list"
                ));
            }
        };
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("processors.{name}[{i}]");
            let definition = &entry["definition"];
            let Some(component) = definition["component"].as_str().filter(|c| !c.is_empty()) else {
                return Err(format!(
                    "invalid configuration at {at}.definition.component: expected a component id"
                ));
            };
            let tag = match &definition["tag"] {
                Value::Null => None,
                Value::String(t) if !t.is_empty() => Some(t.as_str()),
                _ => {
                    return Err(format!(
                        "invalid configuration at {at}.definition.tag: expected a tag"
                    ));
                }
            };
            let parameters = match &entry["parameters"] {
                Value::Null => serde_json::json!({}),
                Value::Array(list) if list.is_empty() => serde_json::json!({}),
                p @ Value::Object(_) => p.clone(),
                _ => {
                    return Err(format!(
                        "invalid configuration at {at}.parameters: expected an object"
                    ));
                }
            };
            let spec = specs
                .iter()
                .find(|(c, _)| c == component)
                .map(|(_, s)| s.clone());
            // `--processor` wins over the specification's image.
            let mut known: Vec<(String, String)> = images.to_vec();
            if let Some(s) = &spec {
                known.push((component.to_string(), s.image.clone()));
            }
            out.push(Processor {
                position,
                component: component.to_string(),
                image: image_for(component, tag, &known),
                parameters,
                spec,
            });
        }
    }
    Ok(out)
}

fn image_for(component: &str, tag: Option<&str>, images: &[(String, String)]) -> String {
    let base = images
        .iter()
        .find(|(c, _)| c == component)
        .map(|(_, image)| image.clone())
        .unwrap_or_else(|| component.to_string());
    match tag {
        Some(tag) => {
            // Replace the tag (not a registry port) of the reference.
            let name = base.split('@').next().unwrap_or(&base);
            let last_slash = name.rfind('/').map_or(0, |i| i + 1);
            let repo = match name[last_slash..].find(':') {
                Some(colon) => &name[..last_slash + colon],
                None => name,
            };
            format!("{repo}:{tag}")
        }
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_section_normalized_to_an_array_means_none() {
        let config = serde_json::json!({"processors": []});
        assert!(parse(&config, &[], &[]).unwrap().is_empty());
    }

    #[test]
    fn before_then_after_with_images_and_tags() {
        let config = json!({"processors": {
            "after": [{"definition": {"component": "kbc.move"}}],
            "before": [{"definition": {"component": "127.0.0.1:5000/p:1", "tag": "2"},
                        "parameters": {"a": 1}}]
        }});
        let images = [(
            "kbc.move".to_string(),
            "127.0.0.1:5000/move:latest".to_string(),
        )];
        let p = parse(&config, &images, &[]).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].position, Position::Before);
        assert_eq!(p[0].image, "127.0.0.1:5000/p:2");
        assert_eq!(p[0].parameters, json!({"a": 1}));
        assert_eq!(p[1].image, "127.0.0.1:5000/move:latest");
        assert_eq!(p[1].parameters, json!({}));
        assert_eq!(
            image_for("127.0.0.1:5000/p", Some("3"), &[]),
            "127.0.0.1:5000/p:3"
        );
    }

    #[test]
    fn a_specification_gives_the_image_and_settings_and_a_flag_wins() {
        let spec = ProcessorSpec {
            image: "r/upper@sha256:ab".into(),
            memory: (64 << 20, "64m".into()),
            timeout: Duration::from_secs(5),
            network: NetworkMode::None,
            image_parameters: json!({"#k": "v"}),
        };
        let specs = [("kbc.upper".to_string(), spec.clone())];
        let config = json!({"processors": {"before": [
            {"definition": {"component": "kbc.upper"}},
            {"definition": {"component": "kbc.upper", "tag": "2"}}
        ]}});
        let p = parse(&config, &[], &specs).unwrap();
        assert_eq!(p[0].image, "r/upper@sha256:ab");
        assert_eq!(p[0].spec.as_ref(), Some(&spec));
        // The definition's tag replaces the specification's pin, as Keboola's custom tag.
        assert_eq!(p[1].image, "r/upper:2");
        let flag = [("kbc.upper".to_string(), "local/upper:dev".to_string())];
        let p = parse(&config, &flag, &specs).unwrap();
        assert_eq!(p[0].image, "local/upper:dev");
        assert_eq!(p[0].spec.as_ref().unwrap().memory.1, "64m");
    }

    #[test]
    fn malformed_entries_name_their_path() {
        for (config, path) in [
            (json!({"processors": [1]}), "processors"),
            (json!({"processors": {"middle": []}}), "processors"),
            (
                json!({"processors": {"before": [{}]}}),
                "processors.before[0].definition.component",
            ),
            (
                json!({"processors": {"after": [{"definition": {"component": "x"}, "parameters": 3}]}}),
                "processors.after[0].parameters",
            ),
        ] {
            let err = parse(&config, &[], &[]).unwrap_err();
            assert!(err.contains(&format!("at {path}:")), "{err}");
        }
        assert_eq!(parse(&json!({}), &[], &[]).unwrap(), vec![]);
    }
}
