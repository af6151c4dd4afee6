//! The built image's OCI config and manifest, derived from the base image's.
//!
//! The config keeps everything of the base (Env, User, Labels, history) and changes only the
//! entry point (Cmd cleared, as a Dockerfile ENTRYPOINT does), the working directory, the
//! creation time and the revision label, and appends one diff id and one history entry per
//! new layer. JSON keys come
//! out in a fixed order (sorted, or the base's order when the workspace enables serde_json's
//! `preserve_order`), so the same inputs give the same digests.

use serde_json::{Map, Value, json};

use crate::error::ImageError;
use crate::layer::LAYER_MEDIA_TYPE;

/// The OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The label naming the commit an image was built from (OCI's annotation key).
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";
/// The OCI image config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// A layer dockless made, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLayer {
    /// `sha256:<hex>` of the gzipped blob.
    pub digest: String,
    /// The blob's size.
    pub size: u64,
    /// `sha256:<hex>` of the tar.
    pub diff_id: String,
    /// The history line (`created_by`).
    pub created_by: String,
}

/// A layer of the base image, as its manifest describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseLayer {
    /// Blob digest.
    pub digest: String,
    /// Blob size.
    pub size: u64,
    /// Media type (Docker's are mapped to their OCI names: same bytes).
    pub media_type: String,
}

/// What the build sets in the config.
#[derive(Clone, Debug)]
pub struct ConfigChanges<'a> {
    /// The entry point.
    pub entrypoint: &'a [String],
    /// The working directory.
    pub workdir: &'a str,
    /// Unix time of the image (the commit's, so a rebuild gives the same config).
    pub created: i64,
    /// The commit built: the `org.opencontainers.image.revision` label.
    pub revision: &'a str,
    /// Layers on top of the base, bottom first.
    pub layers: &'a [NewLayer],
}

/// The new config JSON from the base config's bytes.
pub fn derive_config(base: &[u8], changes: &ConfigChanges<'_>) -> Result<Vec<u8>, ImageError> {
    let bad = |why: &str| ImageError::BaseConfig {
        why: why.to_owned(),
        source: None,
    };
    let mut config: Map<String, Value> = match serde_json::from_slice(base) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(bad("not a JSON object")),
        Err(e) => {
            return Err(ImageError::BaseConfig {
                why: "not a JSON object".to_owned(),
                source: Some(e),
            });
        }
    };
    let created = chrono::DateTime::from_timestamp(changes.created, 0)
        .ok_or(ImageError::Time(changes.created))?
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    config.insert("created".into(), Value::String(created.clone()));

    let runtime = config
        .entry("config")
        .and_modify(|v| {
            if !v.is_object() {
                *v = json!({});
            }
        })
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("made an object above");
    runtime.insert("Entrypoint".into(), json!(changes.entrypoint));
    runtime.remove("Cmd");
    runtime.insert("WorkingDir".into(), json!(changes.workdir));
    let labels = runtime
        .entry("Labels")
        .and_modify(|v| {
            if !v.is_object() {
                *v = json!({});
            }
        })
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("made an object above");
    labels.insert(REVISION_LABEL.into(), json!(changes.revision));

    let diff_ids = config
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("no rootfs.diff_ids"))?;
    diff_ids.extend(changes.layers.iter().map(|l| json!(l.diff_id)));

    let base_layers = diff_ids.len() - changes.layers.len();
    let history = config
        .entry("history")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| bad("history is not a list"))?;
    // One history entry per base layer at least (a base without history gets placeholders),
    // so that the non-empty entries line up with the layers.
    let base_entries = history
        .iter()
        .filter(|h| {
            !h.get("empty_layer")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .count();
    for _ in base_entries..base_layers {
        history.push(json!({"created_by": "(base layer)"}));
    }
    history.extend(
        changes
            .layers
            .iter()
            .map(|l| json!({"created": created, "created_by": l.created_by})),
    );
    Ok(serde_json::to_vec(&config).expect("a JSON value serialises"))
}

/// The `created` time of an image config (Unix seconds), if it has a valid one: the build
/// commands' layers take it as their files' time, so a layer that does not depend on the code
/// is the same for every commit.
pub fn created_time(config: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(config).ok()?;
    let text = v.get("created")?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

/// The OCI manifest of the base layers followed by the new ones.
pub fn manifest(
    config_digest: &str,
    config_size: u64,
    base: &[BaseLayer],
    new: &[NewLayer],
) -> Vec<u8> {
    let descriptor = |media: &str, digest: &str, size: u64| json!({"mediaType": media, "digest": digest, "size": size});
    let layers: Vec<Value> = base
        .iter()
        .map(|l| descriptor(&oci_media_type(&l.media_type), &l.digest, l.size))
        .chain(
            new.iter()
                .map(|l| descriptor(LAYER_MEDIA_TYPE, &l.digest, l.size)),
        )
        .collect();
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(CONFIG_MEDIA_TYPE, config_digest, config_size),
        "layers": layers,
    });
    serde_json::to_vec(&doc).expect("a JSON value serialises")
}

/// Docker's layer media types under their OCI names (the bytes are the same format).
fn oci_media_type(media: &str) -> String {
    match media {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => LAYER_MEDIA_TYPE.to_owned(),
        "application/vnd.docker.image.rootfs.diff.tar" => {
            "application/vnd.oci.image.layer.v1.tar".to_owned()
        }
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_the_base_and_sets_the_entry_point() {
        let base = br#"{"architecture":"amd64","os":"linux",
            "config":{"Env":["PATH=/bin","LANG=C"],"Cmd":["sh"],"User":"1000","WorkingDir":"/"},
            "rootfs":{"type":"layers","diff_ids":["sha256:aa"]},
            "history":[{"created_by":"base"}]}"#;
        let layers = [NewLayer {
            digest: "sha256:bb".into(),
            size: 3,
            diff_id: "sha256:cc".into(),
            created_by: "code".into(),
        }];
        let changes = ConfigChanges {
            entrypoint: &["python".into(), "/home/main.py".into()],
            workdir: "/data/",
            created: 1_700_000_000,
            revision: "c0ffee",
            layers: &layers,
        };
        let out = derive_config(base, &changes).unwrap();
        assert_eq!(out, derive_config(base, &changes).unwrap());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["config"]["Env"], json!(["PATH=/bin", "LANG=C"]));
        assert_eq!(v["config"]["User"], "1000");
        assert_eq!(
            v["config"]["Entrypoint"],
            json!(["python", "/home/main.py"])
        );
        assert_eq!(v["config"]["WorkingDir"], "/data/");
        assert_eq!(v["config"]["Labels"][REVISION_LABEL], "c0ffee");
        assert!(v["config"].get("Cmd").is_none());
        assert_eq!(v["rootfs"]["diff_ids"], json!(["sha256:aa", "sha256:cc"]));
        assert_eq!(v["created"], "2023-11-14T22:13:20Z");
        assert_eq!(v["history"][1]["created_by"], "code");
        assert_eq!(created_time(&out), Some(1_700_000_000));
        assert_eq!(created_time(base), None);
        assert!(matches!(
            derive_config(b"{}", &changes),
            Err(ImageError::BaseConfig { .. })
        ));
    }

    #[test]
    fn manifest_lists_base_then_new_layers_in_oci_types() {
        let m = manifest(
            "sha256:cf",
            10,
            &[BaseLayer {
                digest: "sha256:b1".into(),
                size: 5,
                media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
            }],
            &[NewLayer {
                digest: "sha256:n1".into(),
                size: 7,
                diff_id: "sha256:d".into(),
                created_by: "x".into(),
            }],
        );
        let v: Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(v["config"]["digest"], "sha256:cf");
        assert_eq!(v["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(v["layers"][1]["digest"], "sha256:n1");
        assert_eq!(v["layers"][1]["size"], 7);
    }
}
