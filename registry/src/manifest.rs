//! Manifests: fetch with content negotiation, verify, classify, pick a platform.
//!
//! Accepted: OCI image manifest and index, Docker schema2 manifest and manifest list.
//! Docker schema1 is refused with a message that says so (it has no config blob and no
//! diff ids, and registries have stopped serving it).

use oci_client::manifest::{OciImageIndex, OciImageManifest};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::client::Session;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::MAX_METADATA_BYTES;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Layer media types the runtime can unpack.
pub const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// A verified manifest body and what it turned out to be.
pub enum Fetched {
    /// A single-platform image manifest.
    Image(Box<OciImageManifest>, Vec<u8>),
    /// An index or manifest list.
    Index(OciImageIndex, Vec<u8>),
}

/// Which kind of document the bytes are, from the body (the `Content-Type` header is only a
/// fallback, since registries are known to get it wrong).
pub fn parse(image: &str, body: &[u8], content_type: Option<&str>) -> Result<Fetched> {
    let bad = |reason: String| Error::Manifest {
        image: image.to_string(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|source| Error::ManifestJson {
            image: image.to_string(),
            what: "manifest is not JSON",
            source,
        })?;
    let schema = value.get("schemaVersion").and_then(|v| v.as_i64());
    let media_type = value
        .get("mediaType")
        .and_then(|v| v.as_str())
        .or(content_type)
        .unwrap_or("");
    if schema == Some(1) || media_type == DOCKER_SCHEMA1 || media_type == DOCKER_SCHEMA1_SIGNED {
        return Err(bad(
            "Docker schema1 manifests are not supported (deprecated format without a config); \
             re-push the image with a current docker, podman or skopeo"
                .into(),
        ));
    }
    if schema != Some(2) {
        return Err(bad(format!(
            "unsupported manifest schemaVersion {schema:?}"
        )));
    }
    let is_index = media_type == OCI_INDEX
        || media_type == DOCKER_LIST
        || (media_type.is_empty() && value.get("manifests").is_some());
    if is_index {
        let index: OciImageIndex =
            serde_json::from_value(value).map_err(|source| Error::ManifestJson {
                image: image.to_string(),
                what: "malformed index",
                source,
            })?;
        return Ok(Fetched::Index(index, body.to_vec()));
    }
    if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST && !media_type.is_empty() {
        return Err(bad(format!(
            "unsupported manifest media type {media_type:?}"
        )));
    }
    let manifest: OciImageManifest =
        serde_json::from_value(value).map_err(|source| Error::ManifestJson {
            image: image.to_string(),
            what: "malformed image manifest",
            source,
        })?;
    for layer in &manifest.layers {
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(bad(format!(
                "layer {} has media type {:?}, which is not a container filesystem layer",
                layer.digest, layer.media_type
            )));
        }
    }
    Ok(Fetched::Image(Box::new(manifest), body.to_vec()))
}

/// HEADs a manifest for its digest (free on Docker Hub's pull quota). `None` when the
/// registry does not say.
pub(crate) async fn head_digest(session: &mut Session, key: &str) -> Result<Option<Digest>> {
    let url = session.url(&format!("manifests/{key}"));
    let response = session
        .send(
            Method::HEAD,
            &url,
            accept_headers(),
            &format!("manifest {key}"),
        )
        .await?;
    Ok(response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v).ok()))
}

/// GETs a manifest by tag or digest and verifies it: against the pinned digest when there is
/// one, else against `Docker-Content-Digest` when sent. Returns the body and its digest.
pub(crate) async fn fetch(
    session: &mut Session,
    key: &str,
    pinned: Option<&Digest>,
) -> Result<(Vec<u8>, Digest, Option<String>)> {
    let what = format!("manifest {key}");
    let url = session.url(&format!("manifests/{key}"));
    let mut response = session
        .send(Method::GET, &url, accept_headers(), &what)
        .await?;
    let header_digest = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| Error::Unreachable {
            image: session.image.clone(),
            registry: session.host.clone(),
            attempts: 1,
            source,
        })?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_METADATA_BYTES {
            return Err(Error::TooLarge {
                what,
                expected: MAX_METADATA_BYTES,
            });
        }
    }
    let actual = Digest::of(&body);
    let expected = match (pinned, header_digest.as_deref()) {
        (Some(p), _) => Some(p.to_string()),
        (None, Some(h)) if h.starts_with("sha256:") => Some(h.to_string()),
        _ => None,
    };
    if let Some(expected) = expected
        && expected != actual.to_string()
    {
        return Err(Error::DigestMismatch {
            what,
            expected,
            actual: actual.to_string(),
        });
    }
    Ok((body, actual, content_type))
}

fn accept_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
    h.insert(
        ACCEPT,
        HeaderValue::from_str(&accept).expect("static header"),
    );
    h
}

/// The parts of an image config the store records.
#[derive(serde::Deserialize)]
pub(crate) struct ConfigRootfs {
    pub rootfs: Rootfs,
}

/// `rootfs` of an image config.
#[derive(serde::Deserialize)]
pub(crate) struct Rootfs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// Reads `rootfs.diff_ids` from a config and checks there is one per layer.
pub(crate) fn diff_ids(image: &str, config: &[u8], layers: usize) -> Result<Vec<Digest>> {
    let bad = |reason: String| Error::Manifest {
        image: image.to_string(),
        reason,
    };
    let parsed: ConfigRootfs =
        serde_json::from_slice(config).map_err(|source| Error::ManifestJson {
            image: image.to_string(),
            what: "malformed image config",
            source,
        })?;
    if parsed.rootfs.kind != "layers" {
        return Err(bad(format!(
            "image config rootfs.type is {:?}, expected \"layers\"",
            parsed.rootfs.kind
        )));
    }
    if parsed.rootfs.diff_ids.len() != layers {
        return Err(bad(format!(
            "image config lists {} diff ids for {} layers",
            parsed.rootfs.diff_ids.len(),
            layers
        )));
    }
    Ok(parsed.rootfs.diff_ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_schema1_with_a_clear_message() {
        let body = br#"{"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}"#;
        let err = parse("x", body, None).err().unwrap().to_string();
        assert!(err.contains("schema1"), "{err}");
    }

    #[test]
    fn refuses_non_filesystem_layers() {
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "a".repeat(64)), "size": 2},
            "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": format!("sha256:{}", "b".repeat(64)), "size": 3}]
        });
        let err = parse("x", body.to_string().as_bytes(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("helm"), "{err}");
    }

    #[test]
    fn diff_ids_must_match_layer_count() {
        let cfg = format!(
            r#"{{"rootfs": {{"type": "layers", "diff_ids": ["sha256:{}"]}}}}"#,
            "c".repeat(64)
        );
        assert_eq!(diff_ids("x", cfg.as_bytes(), 1).unwrap().len(), 1);
        assert!(diff_ids("x", cfg.as_bytes(), 2).is_err());
        assert!(
            diff_ids(
                "x",
                br#"{"rootfs": {"type": "layers", "diff_ids": ["md5:00"]}}"#,
                1
            )
            .is_err()
        );
    }
}
