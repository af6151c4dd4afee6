//! Choosing one image manifest out of an index or manifest list.
//!
//! oci-client's built-in resolvers ignore the CPU variant and pick the first os/arch match;
//! here the variant counts (an `arm/v6` host must not get `arm/v7`), attestation entries
//! (`unknown/unknown`, BuildKit's provenance manifests) are never chosen, and a miss lists
//! what the index does offer.

use std::fmt;
use std::str::FromStr;

use oci_client::manifest::ImageIndexEntry;

use crate::error::Error;

/// An `os/arch[/variant]` triple, normalised as containerd does (`x86_64` -> `amd64`,
/// `aarch64` -> `arm64`, arm64's default variant `v8`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture in GOARCH spelling (`amd64`, `arm64`).
    pub arch: String,
    /// CPU variant (`v7`, `v8`), if it matters.
    pub variant: Option<String>,
}

impl Platform {
    /// linux/amd64: the default, as docker's on this kind of host.
    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        }
    }

    fn normalise(mut self) -> Platform {
        self.arch = match self.arch.as_str() {
            "x86_64" | "x86-64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            "armhf" => {
                self.variant.get_or_insert_with(|| "v7".into());
                "arm".into()
            }
            "armel" => {
                self.variant.get_or_insert_with(|| "v6".into());
                "arm".into()
            }
            other => other.to_string(),
        };
        if self.arch == "arm64" && self.variant.as_deref() == Some("v8") {
            self.variant = None;
        }
        self
    }

    /// Whether an index entry may run here: same os and arch; when we ask for a variant the
    /// entry must carry the same one (or none at all, which means "any").
    fn accepts(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        let entry = Platform {
            os: os.to_string(),
            arch: arch.to_string(),
            variant: variant.map(str::to_string),
        }
        .normalise();
        if entry.os != self.os || entry.arch != self.arch {
            return false;
        }
        match (&self.variant, &entry.variant) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        }
    }

    /// Picks the manifest for this platform; entries with an exact variant match win over
    /// entries without a variant.
    pub fn select<'a>(&self, entries: &'a [ImageIndexEntry]) -> Option<&'a ImageIndexEntry> {
        let candidates = entries.iter().filter(|e| !is_attestation(e)).filter(|e| {
            e.platform.as_ref().is_some_and(|p| {
                self.accepts(
                    &p.os.to_string(),
                    &p.architecture.to_string(),
                    p.variant.as_deref(),
                )
            })
        });
        let mut best = None;
        for entry in candidates {
            let exact = entry
                .platform
                .as_ref()
                .and_then(|p| p.variant.as_deref())
                .is_some()
                && self.variant.is_some();
            if exact {
                return Some(entry);
            }
            best.get_or_insert(entry);
        }
        best
    }
}

/// Lists the platforms of an index for error messages.
pub fn describe(entries: &[ImageIndexEntry]) -> String {
    let names: Vec<String> = entries
        .iter()
        .filter(|e| !is_attestation(e))
        .filter_map(|e| e.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn is_attestation(e: &ImageIndexEntry) -> bool {
    let unknown = e
        .platform
        .as_ref()
        .is_some_and(|p| p.os.to_string() == "unknown" || p.architecture.to_string() == "unknown");
    let annotated = e.annotations.as_ref().is_some_and(|a| {
        a.get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
    });
    unknown || annotated
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Platform, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::InvalidPlatform(s.to_string());
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let platform = match parts.as_slice() {
            [os, arch] => Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            },
            [os, arch, variant] => Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(variant.to_string()),
            },
            _ => return Err(bad()),
        };
        Ok(platform.normalise())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, os: &str, arch: &str, variant: Option<&str>) -> ImageIndexEntry {
        serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": 1,
            "platform": {"os": os, "architecture": arch, "variant": variant},
        }))
        .unwrap()
    }

    #[test]
    fn picks_by_os_arch_and_variant() {
        let index = vec![
            entry("att", "unknown", "unknown", None),
            entry("v6", "linux", "arm", Some("v6")),
            entry("v7", "linux", "arm", Some("v7")),
            entry("a64", "linux", "arm64", Some("v8")),
            entry("x64", "linux", "amd64", None),
        ];
        let pick = |p: &str| {
            p.parse::<Platform>()
                .unwrap()
                .select(&index)
                .map(|e| e.digest.clone())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("x64"));
        assert_eq!(pick("linux/x86_64").as_deref(), Some("x64"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("a64"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("v7"));
        assert_eq!(pick("linux/arm/v6").as_deref(), Some("v6"));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(
            describe(&index),
            "linux/arm/v6, linux/arm/v7, linux/arm64/v8, linux/amd64"
        );
    }

    #[test]
    fn attestations_are_never_chosen() {
        let index = vec![entry("att", "unknown", "unknown", None)];
        assert!(Platform::linux_amd64().select(&index).is_none());
    }

    #[test]
    fn parses() {
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
        assert_eq!(
            "linux/aarch64/v8".parse::<Platform>().unwrap().to_string(),
            "linux/arm64"
        );
    }
}
