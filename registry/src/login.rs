//! Checking credentials before `dockless login` stores them, as podman does: ping `/v2/`;
//! a registry that wants Basic auth gets the credentials on a second ping, one with a Bearer
//! challenge has its token server asked for a token (no repository scope, as `podman login`
//! asks). A refusal is [`Error::Unauthorized`]; nothing is stored then.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};

use crate::auth::Credentials;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::reference::{DOCKER_HUB, DOCKER_HUB_ENDPOINT, is_insecure};

impl Client {
    /// Checks that `registry` (`HOST[:PORT]`, `docker.io` for Docker Hub) accepts
    /// `credentials`.
    pub async fn check_login(&self, registry: &str, credentials: &Credentials) -> Result<()> {
        let host = if registry == DOCKER_HUB || registry == "index.docker.io" {
            DOCKER_HUB_ENDPOINT
        } else {
            registry
        };
        let scheme = if is_insecure(host, &self.settings.insecure_registries) {
            "http"
        } else {
            "https"
        };
        let ping = format!("{scheme}://{host}/v2/");
        let unreachable = |source| Error::Unreachable {
            image: format!("login to {registry}"),
            registry: host.to_string(),
            attempts: 1,
            source,
        };
        let refused = |reason: String| Error::Unauthorized {
            image: format!("login to {registry}"),
            registry: host.to_string(),
            reason,
            source: None,
        };
        let basic = crate::client::basic_header(credentials);
        let first = self.http.get(&ping).send().await.map_err(unreachable)?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        let challenge = first
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (scheme_name, params) = challenge.split_once(' ').unwrap_or((&challenge, ""));
        let answer = match scheme_name.to_ascii_lowercase().as_str() {
            "basic" => self
                .http
                .get(&ping)
                .header(AUTHORIZATION, basic)
                .send()
                .await
                .map_err(unreachable)?,
            "bearer" => {
                let param = |name: &str| challenge_param(params, name);
                let realm = param("realm")
                    .ok_or_else(|| refused("the Bearer challenge names no token server".into()))?;
                let mut request = self.http.get(&realm).header(AUTHORIZATION, basic);
                if let Some(service) = param("service") {
                    request = request.query(&[("service", service)]);
                }
                request.send().await.map_err(unreachable)?
            }
            _ => {
                return Err(refused(format!(
                    "unsupported authentication challenge {challenge:?}"
                )));
            }
        };
        match answer.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(refused("invalid username or password".into()))
            }
            other => Err(refused(format!("the registry answered {other}"))),
        }
    }
}

/// The value of `name="value"` (or `name=value`) in a challenge's parameters.
fn challenge_param(params: &str, name: &str) -> Option<String> {
    let mut rest = params;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim();
        let after = &rest[eq + 1..];
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(value.to_string());
        }
        rest = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::challenge_param;

    #[test]
    fn challenge_parameters() {
        let p = r#"realm="https://auth.example/token",service="registry.example",scope="x""#;
        assert_eq!(
            challenge_param(p, "realm").as_deref(),
            Some("https://auth.example/token")
        );
        assert_eq!(
            challenge_param(p, "service").as_deref(),
            Some("registry.example")
        );
        assert_eq!(
            challenge_param("realm=plain", "realm").as_deref(),
            Some("plain")
        );
        assert_eq!(challenge_param(p, "missing"), None);
    }
}
