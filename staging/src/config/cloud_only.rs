//! Values only Keboola's own services can resolve: ciphertexts of its object encryptor
//! (`KBC::ProjectSecure::...` and its other scopes, per cloud) and OAuth credentials kept by
//! its OAuth Broker (`authorization.oauth_api` with an `id` but no `credentials`). Locally
//! neither can be turned into what the component needs, and passing them on would hand the
//! component ciphertext or nothing; so they are refused up front, naming the key and saying
//! what to supply instead. The one place of this rule: [`super::normalize`] applies it to
//! every configuration, [`refuse_at`] to the component's image parameters.

use serde_json::Value;

use crate::error::{Error, Result};

/// The scopes of Keboola's object encryptor; each is a cipher prefix `KBC::<scope><cloud>::`.
const SCOPES: &[&str] = &[
    "Secure",
    "ComponentSecure",
    "ProjectSecure",
    "ConfigSecure",
    "ProjectWideSecure",
    "BranchTypeSecure",
    "BranchTypeConfigSecure",
    "ProjectWideBranchTypeSecure",
];

/// The cloud suffix of a scope: AWS KMS (none), Azure Key Vault, Google Cloud KMS.
const CLOUDS: &[&str] = &["", "KV", "GKMS"];

/// Ciphers of the encryptor's first versions, terminated by `==` rather than `::`.
const LEGACY: &[&str] = &[
    "KBC::Encrypted==",
    "KBC::ComponentEncrypted==",
    "KBC::ComponentProjectEncrypted==",
];

/// The cipher prefix `value` starts with, if it is a Keboola ciphertext.
pub fn cipher_prefix(value: &str) -> Option<String> {
    if let Some(legacy) = LEGACY.iter().find(|p| value.starts_with(**p)) {
        return Some((*legacy).to_string());
    }
    let rest = value.strip_prefix("KBC::")?;
    let (name, _) = rest.split_once("::")?;
    let known = SCOPES.iter().any(|scope| {
        name.strip_prefix(scope)
            .is_some_and(|cloud| CLOUDS.contains(&cloud))
    });
    known.then(|| format!("KBC::{name}::"))
}

/// Refuses the configuration's first Keboola ciphertext and an OAuth reference without
/// credentials, naming the key path.
pub(super) fn refuse(config: &Value) -> Result<()> {
    refuse_oauth_reference(config)?;
    walk(config, "")
}

/// `refuse`'s ciphertext check for another document of the job (`image_parameters`), its
/// keys named below `root`.
pub fn refuse_at(value: &Value, root: &str) -> Result<()> {
    walk(value, root)
}

fn walk(value: &Value, at: &str) -> Result<()> {
    match value {
        Value::String(s) => match cipher_prefix(s) {
            Some(prefix) => Err(encrypted(at, &prefix)),
            None => Ok(()),
        },
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| walk(v, &format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            walk(v, &path)
        }),
        _ => Ok(()),
    }
}

fn encrypted(at: &str, prefix: &str) -> Error {
    let at = if at.is_empty() { "root" } else { at };
    Error::config(
        at,
        format!(
            "the value is encrypted by Keboola ({prefix}...) and only Keboola's stack can \
             decrypt it; supply the plain value locally, under a key starting with \"#\" so \
             that dockless keeps it hidden"
        ),
    )
}

fn refuse_oauth_reference(config: &Value) -> Result<()> {
    let Some(oauth) = config
        .get("authorization")
        .and_then(|a| a.get("oauth_api"))
        .and_then(Value::as_object)
    else {
        return Ok(());
    };
    let reference = ["id", "version"]
        .iter()
        .any(|k| oauth.get(*k).is_some_and(|v| !v.is_null()));
    let has_credentials = oauth.get("credentials").is_some_and(|v| !v.is_null());
    if reference && !has_credentials {
        let id = oauth
            .get("id")
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_default();
        return Err(Error::config(
            "authorization.oauth_api",
            format!(
                "refers to the OAuth credentials {id:?} kept by Keboola's OAuth Broker, which \
                 is not available locally; pass the credentials themselves as \
                 authorization.oauth_api.credentials (appKey, \"#appSecret\", \"#data\" with the \
                 provider's token JSON, as the component receives them in Keboola)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_scope_and_cloud_is_a_cipher() {
        for value in [
            "KBC::ProjectSecure::eJx",
            "KBC::ComponentSecure::a",
            "KBC::ConfigSecure::a",
            "KBC::ProjectWideSecure::a",
            "KBC::BranchTypeSecure::a",
            "KBC::BranchTypeConfigSecure::a",
            "KBC::ProjectWideBranchTypeSecure::a",
            "KBC::Secure::a",
            "KBC::ProjectSecureKV::a",
            "KBC::ConfigSecureGKMS::a",
            "KBC::Encrypted==a",
            "KBC::ComponentProjectEncrypted==a",
        ] {
            assert!(cipher_prefix(value).is_some(), "{value}");
        }
        for value in [
            "KBC::Other::a",
            "KBC::ConfigSecureKVa",
            "kbc::ProjectSecure::a",
            "plain",
            "KBC::ProjectSecureAWS::a",
        ] {
            assert!(cipher_prefix(value).is_none(), "{value}");
        }
    }

    #[test]
    fn a_cipher_anywhere_is_refused_naming_its_path() {
        let config = json!({"parameters": {"db": {"#password": "plain"},
            "hosts": [{"x": 1}, {"#key": "KBC::ComponentSecureKV::abc"}]}});
        let err = refuse(&config).unwrap_err();
        assert!(err.is_user_error());
        let text = err.to_string();
        assert!(text.contains("parameters.hosts[1].#key"), "{text}");
        assert!(text.contains("KBC::ComponentSecureKV::"), "{text}");
        assert!(!text.contains("abc"), "{text}");
        assert!(text.contains("plain value"), "{text}");
        refuse(&json!({"parameters": {"#password": "plain"}})).unwrap();
        let err =
            refuse_at(&json!({"#t": "KBC::ProjectSecure::x"}), "image_parameters").unwrap_err();
        assert!(err.to_string().contains("image_parameters.#t"), "{err}");
    }

    #[test]
    fn an_oauth_reference_without_credentials_is_refused() {
        let err = refuse(&json!({"authorization": {"oauth_api": {"id": "123", "version": 3}}}))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("authorization.oauth_api"), "{text}");
        assert!(text.contains("OAuth Broker"), "{text}");
        assert!(text.contains("credentials"), "{text}");
        refuse(&json!({"authorization": {"oauth_api": {"id": "123",
            "credentials": {"#data": "{}"}}}}))
        .unwrap();
        refuse(&json!({"authorization": {"oauth_api": {}}})).unwrap();
    }
}
