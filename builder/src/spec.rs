//! The build definition: what a job file's `build` object and `dockless build`'s flags say.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::SpecError;

/// Where the code of a component comes from and how its image is made, as Keboola's builder
/// components describe it: a base image, a repository at a ref, optional build commands and
/// the entry point. Credentials are held as [`Secret`], so no `Debug` or error shows them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// The base image reference (pulled when not stored).
    pub base: String,
    /// An https or ssh URL, or a local path.
    pub repository: String,
    /// A tag, a branch or a full 40-hex commit id.
    #[serde(rename = "ref")]
    pub reference: String,
    /// User name for an https repository.
    #[serde(default)]
    pub username: Option<String>,
    /// Password or token for an https repository (a `#` key: a Keboola secret).
    #[serde(default, rename = "#password")]
    pub password: Option<Secret>,
    /// Shell commands run in the image, in order, at build time (`/bin/sh -c`, in `/home`).
    #[serde(default)]
    pub commands: Vec<String>,
    /// The image's entry point: an argument list, or one string split as a shell would.
    #[serde(deserialize_with = "entrypoint")]
    pub entrypoint: Vec<String>,
    /// The image's working directory (Keboola's `/data/`).
    #[serde(default = "default_workdir")]
    pub workdir: String,
    /// The network of the build commands: `none` (default), `bridge` or `host`.
    #[serde(default)]
    pub network: BuildNetwork,
}

/// The network the build commands get; the built image's runs choose their own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildNetwork {
    /// An empty network namespace: what the commands need must be in the base or the code.
    #[default]
    None,
    /// The host's network (package installs).
    Host,
    /// Outbound access through a user-mode network stack (package installs without the
    /// host's network).
    Bridge,
}

/// A credential that never shows in `Debug`, `Display` or serialised output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that hands it to git.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The Keboola default working directory of a builder component.
pub fn default_workdir() -> String {
    "/data/".to_owned()
}

/// Splits an entry point given as one string the way a shell would (`python /home/main.py`).
pub fn split_entrypoint(text: &str) -> Result<Vec<String>, SpecError> {
    match shlex::split(text) {
        Some(words) if !words.is_empty() => Ok(words),
        _ => Err(SpecError::Entrypoint {
            text: text.to_owned(),
        }),
    }
}

fn entrypoint<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Text(String),
        List(Vec<String>),
    }
    match Form::deserialize(d)? {
        Form::Text(t) => split_entrypoint(&t).map_err(serde::de::Error::custom),
        Form::List(l) if !l.is_empty() => Ok(l),
        Form::List(_) => Err(serde::de::Error::custom("entrypoint: empty list")),
    }
}

impl BuildSpec {
    /// Refuses what git or the image could misread: option-like repository or ref, a relative
    /// working directory, a password without a user name.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field: &'static str, why: &str| SpecError::Invalid {
            field,
            why: why.to_owned(),
        };
        if self.base.trim().is_empty() {
            return Err(bad("base", "empty"));
        }
        if self.repository.is_empty() || self.repository.starts_with('-') {
            return Err(bad("repository", "empty or starting with `-`"));
        }
        if self.reference.is_empty()
            || self.reference.starts_with('-')
            || self
                .reference
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad(
                "ref",
                "empty, starting with `-` or holding white space",
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(bad("#password", "given without a username"));
        }
        if !self.workdir.starts_with('/') {
            return Err(bad("workdir", "not an absolute path"));
        }
        if self.entrypoint.is_empty() {
            return Err(bad("entrypoint", "empty"));
        }
        Ok(())
    }

    /// The cache key of the image this definition gives on `base_digest` at `commit`: the
    /// inputs that decide the image's content, and the repository (never credentials): a
    /// commit id alone must not hand a cached build of one repository to a definition naming
    /// another (a private one's code to whoever learns its commit id). Hex sha256 of a JSON
    /// document with a fixed shape.
    pub fn cache_key(&self, base_digest: &str, commit: &str) -> String {
        let doc = serde_json::json!({
            "v": 2,
            "repository": self.repository,
            "base": base_digest,
            "commit": commit,
            "commands": self.commands,
            "entrypoint": self.entrypoint,
            "workdir": self.workdir,
            "network": self.network,
        });
        hex::encode(Sha256::digest(doc.to_string().as_bytes()))
    }

    /// A default image name for the build: `localhost/build/<repository name>:<commit
    /// prefix>-<key prefix>`, the name reduced to what a reference allows. The cache key's
    /// prefix keeps two definitions of one commit (other base, commands or entry point) from
    /// replacing each other's image.
    pub fn default_image_name(&self, commit: &str, cache_key: &str) -> String {
        let trimmed = self.repository.trim_end_matches('/');
        let last = trimmed
            .rsplit(['/', ':'])
            .next()
            .unwrap_or(trimmed)
            .trim_end_matches(".git");
        let mut name: String = last
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        name = name
            .trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_owned();
        if name.is_empty() {
            name = "component".to_owned();
        }
        let tag: String = commit
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let key: String = cache_key
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        format!("localhost/build/{name}:{tag}-{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Result<BuildSpec, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn parses_with_defaults_and_hides_the_password() {
        let s = spec(serde_json::json!({
            "base": "busybox", "repository": "https://example.com/team/My_App.git",
            "ref": "v1", "username": "u", "#password": "hunter2-secret",
            "entrypoint": "python '/home/main app.py'",
        }))
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.entrypoint, ["python", "/home/main app.py"]);
        assert_eq!(s.workdir, "/data/");
        assert_eq!(s.network, BuildNetwork::None);
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            s.default_image_name("0123456789abcdef0123", "fedcba9876543210"),
            "localhost/build/my_app:0123456789ab-fedcba98"
        );
    }

    #[test]
    fn refuses_bad_definitions() {
        let base =
            serde_json::json!({"base": "b", "repository": "r", "ref": "v1", "entrypoint": ["x"]});
        let with = |k: &str, v: serde_json::Value| {
            let mut j = base.clone();
            j[k] = v;
            spec(j)
        };
        assert!(with("entrypoint", serde_json::json!([])).is_err());
        assert!(with("entrypoint", serde_json::json!("'open")).is_err());
        assert!(with("bogus", serde_json::json!(1)).is_err());
        let invalid = |k: &str, v: serde_json::Value| with(k, v).unwrap().validate().unwrap_err();
        assert!(
            invalid("ref", "--upload-pack=x".into())
                .to_string()
                .contains("ref")
        );
        assert!(
            invalid("repository", "-oProxy".into())
                .to_string()
                .contains("repository")
        );
        assert!(
            invalid("workdir", "data".into())
                .to_string()
                .contains("workdir")
        );
        assert!(
            invalid("#password", "p".into())
                .to_string()
                .contains("username")
        );
    }

    #[test]
    fn cache_key_follows_content_inputs_and_the_repository() {
        let a = spec(
            serde_json::json!({"base": "b", "repository": "r1", "ref": "v1", "entrypoint": ["x"]}),
        )
        .unwrap();
        let mut b = a.clone();
        b.reference = "main".into();
        b.username = Some("someone".into());
        assert_eq!(a.cache_key("d", "c"), b.cache_key("d", "c"));
        b.repository = "elsewhere".into();
        assert_ne!(a.cache_key("d", "c"), b.cache_key("d", "c"));
        b.repository = a.repository.clone();
        assert_ne!(a.cache_key("d", "c"), a.cache_key("d", "c2"));
        assert_ne!(a.cache_key("d", "c"), a.cache_key("d2", "c"));
        b.commands.push("true".into());
        assert_ne!(a.cache_key("d", "c"), b.cache_key("d", "c"));
    }
}
