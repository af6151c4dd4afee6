//! Image references, resolved exactly as docker resolves them.
//!
//! `busybox` is `docker.io/library/busybox:latest`; a first component with a `.` or `:` or
//! equal to `localhost` is a registry host; `name@sha256:...` pins a digest (and wins over a
//! tag). Parsing is oci-spec's (through oci-client); this module adds the endpoint rules:
//! which host to dial, and whether plain HTTP is allowed.

use std::fmt;
use std::net::IpAddr;

use crate::digest::Digest;
use crate::error::{Error, ReferenceError, Result};

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker's CLI talks to for `docker.io`.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: oci_client::Reference,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses a reference with docker's defaults (registry, `library/`, `latest`).
    pub fn parse(text: &str) -> Result<ImageRef> {
        let inner: oci_client::Reference =
            text.parse()
                .map_err(|e: oci_client::ParseError| Error::InvalidReference {
                    reference: text.to_string(),
                    source: ReferenceError::Grammar(e),
                })?;
        let digest =
            inner
                .digest()
                .map(Digest::parse)
                .transpose()
                .map_err(|_| Error::InvalidReference {
                    reference: text.to_string(),
                    source: ReferenceError::UnsupportedDigest,
                })?;
        Ok(ImageRef { inner, digest })
    }

    /// The registry as named in the reference (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if the reference has one (a digest-only reference has none).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the manifests endpoint for: the digest when pinned, else the tag.
    pub fn manifest_key(&self) -> String {
        match (&self.digest, self.inner.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The host to dial: `registry-1.docker.io` for Docker Hub, the named host otherwise.
    pub fn endpoint(&self) -> &str {
        if self.registry() == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            self.registry()
        }
    }

    /// The same reference pinned to `digest` (tag dropped), as stored after a pull.
    pub fn with_digest(&self, digest: &Digest) -> ImageRef {
        ImageRef {
            inner: oci_client::Reference::with_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                digest.to_string(),
            ),
            digest: Some(digest.clone()),
        }
    }

    /// The reference oci-client should authenticate against when talking to `host`
    /// (a mirror or the real endpoint).
    pub(crate) fn for_host(&self, host: &str) -> oci_client::Reference {
        oci_client::Reference::with_tag(
            host.to_string(),
            self.repository().to_string(),
            "latest".into(),
        )
    }
}

impl fmt::Display for ImageRef {
    /// The full canonical form, e.g. `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry(), self.repository())?;
        if let Some(tag) = self.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Docker's rule for plain HTTP: loopback hosts (`localhost`, 127.0.0.0/8, `::1`) and hosts the
/// user listed with `--insecure-registry HOST[:PORT]`. Everything else is HTTPS with the system
/// trust store.
pub fn is_insecure(host: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|h| h == host || strip_port(host) == h) {
        return true;
    }
    let bare = strip_port(host);
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    if bare == "localhost" {
        return true;
    }
    bare.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

fn strip_port(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        return &host[..end + 2];
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.endpoint(), "registry-1.docker.io");
        let r = ImageRef::parse("keboola/python-transformation:1.2").unwrap();
        assert_eq!(r.to_string(), "docker.io/keboola/python-transformation:1.2");
        let r = ImageRef::parse("127.0.0.1:5000/busybox:v2s2").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "busybox", Some("v2s2"))
        );
        let r = ImageRef::parse("localhost/a/b").unwrap();
        assert_eq!(r.registry(), "localhost");
    }

    #[test]
    fn digest_pinning() {
        let d = format!("sha256:{}", "0".repeat(64));
        let r = ImageRef::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(r.manifest_key(), d);
        let r = ImageRef::parse(&format!("busybox:1.36@{d}")).unwrap();
        assert_eq!(r.manifest_key(), d, "a digest wins over a tag");
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox@sha256:abc",
            "a//b",
            "busybox:",
            "busybox@md5:00",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn insecure_rule() {
        let none: Vec<String> = vec![];
        assert!(is_insecure("127.0.0.1:5000", &none));
        assert!(is_insecure("127.3.4.5", &none));
        assert!(is_insecure("localhost:5000", &none));
        assert!(is_insecure("[::1]:5000", &none));
        assert!(!is_insecure("registry-1.docker.io", &none));
        assert!(!is_insecure("10.0.0.1:5000", &none));
        let listed = vec!["reg.example:5000".to_string(), "other.example".to_string()];
        assert!(is_insecure("reg.example:5000", &listed));
        assert!(!is_insecure("reg.example:6000", &listed));
        assert!(is_insecure("other.example:443", &listed));
    }
}
