//! HTTP to one registry: endpoint choice, authentication, retries.
//!
//! oci-client does the token exchange (`Client::auth`, which also surfaces token errors
//! that its implicit path swallows); the manifest and blob requests themselves go through
//! our own reqwest calls because we need what oci-client hides: `Retry-After` on 429,
//! `Content-Range` on resumed blobs, the descriptor size enforced while bytes arrive, and
//! a stop at the first stream error.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use crate::auth::{AuthFiles, Credentials};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::reference::{DOCKER_HUB, ImageRef, is_insecure};
use crate::retry::{RetryPolicy, retry_after};

/// Settings resolved once by the caller (flags, environment, config) and shared by pulls.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Hosts (`HOST[:PORT]`) allowed over plain HTTP besides loopback.
    pub insecure_registries: Vec<String>,
    /// Docker Hub mirrors (`https://mirror.example` or `host:port`), tried before Hub.
    pub mirrors: Vec<String>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before the attempt counts as failed.
    pub read_timeout: Duration,
    /// Retry policy for transport errors, 5xx and 429.
    pub retry: RetryPolicy,
    /// Layers fetched at the same time.
    pub concurrent_layers: usize,
    /// Where credentials are looked up.
    pub auth_files: AuthFiles,
    /// Caps on what a registry may make us download, and the stall rule.
    pub limits: Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            insecure_registries: Vec::new(),
            mirrors: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            concurrent_layers: 3,
            auth_files: AuthFiles::default(),
            limits: Limits::default(),
        }
    }
}

/// A pulling client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) settings: Settings,
}

impl Client {
    /// Builds the HTTP client (system trust store through rustls' platform verifier).
    pub fn new(settings: Settings) -> Result<Client> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("dockless/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .build()
            .map_err(Error::HttpClient)?;
        Ok(Client { http, settings })
    }

    /// The hosts to try for an image, in order: mirrors first for Docker Hub images.
    pub(crate) fn endpoints(&self, image: &ImageRef) -> Vec<String> {
        let mut hosts = Vec::new();
        if image.registry() == DOCKER_HUB {
            hosts.extend(self.settings.mirrors.iter().map(|m| {
                let m = m
                    .strip_prefix("https://")
                    .or_else(|| m.strip_prefix("http://"))
                    .unwrap_or(m);
                m.trim_end_matches('/').to_string()
            }));
        }
        hosts.push(image.endpoint().to_string());
        hosts
    }

    /// Opens an authenticated session for `image`'s repository on `host`.
    pub(crate) async fn session(&self, image: &ImageRef, host: &str) -> Result<Session> {
        let scheme = if is_insecure(host, &self.settings.insecure_registries) {
            "http"
        } else {
            "https"
        };
        // A mirror gets its own credentials (if any), never those of the registry it mirrors.
        let credentials = if host == image.endpoint() {
            self.settings.auth_files.lookup(image.registry())?
        } else {
            self.settings.auth_files.lookup(host)?
        };
        let mut session = Session {
            client: self.clone(),
            image: image.to_string(),
            host: host.to_string(),
            base: format!("{scheme}://{host}/v2/{}", image.repository()),
            credentials,
            authorization: None,
            oci_ref: image.for_host(host),
        };
        session.authenticate().await?;
        Ok(session)
    }
}

/// One repository on one registry host, with the Authorization header to send.
#[derive(Clone)]
pub(crate) struct Session {
    client: Client,
    /// The image as the user named it, for errors.
    pub image: String,
    /// The registry host we talk to.
    pub host: String,
    base: String,
    credentials: Option<Credentials>,
    authorization: Option<HeaderValue>,
    oci_ref: oci_client::Reference,
}

impl Session {
    /// Pings `/v2/` and answers its challenge: Bearer through oci-client's token exchange,
    /// Basic with our credentials, or nothing.
    async fn authenticate(&mut self) -> Result<()> {
        let ping = self
            .base
            .rsplit_once("/v2/")
            .map(|(b, _)| format!("{b}/v2/"))
            .unwrap_or_default();
        let response = self
            .send_with_retries(Method::GET, &ping, HeaderMap::new(), false, "/v2/")
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let scheme = challenge
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match scheme.as_str() {
            "bearer"
                if self
                    .credentials
                    .as_ref()
                    .is_some_and(Credentials::is_identity_token) =>
            {
                self.exchange_identity_token(&challenge).await
            }
            "bearer" => self.fetch_token().await,
            "basic" => match &self.credentials {
                Some(c) => {
                    self.authorization = Some(basic_header(c));
                    Ok(())
                }
                None => Err(self.unauthorized(format!(
                    "the registry requires credentials and none are configured for {} \
                     (dockless login, REGISTRY_AUTH_FILE, DOCKER_CONFIG or ~/.docker/config.json)",
                    self.host
                ))),
            },
            _ => Err(self.unauthorized(format!(
                "unsupported authentication challenge {challenge:?}"
            ))),
        }
    }

    async fn fetch_token(&mut self) -> Result<()> {
        let insecure = self.base.starts_with("http://");
        let config = oci_client::client::ClientConfig {
            protocol: if insecure {
                oci_client::client::ClientProtocol::HttpsExcept(vec![self.host.clone()])
            } else {
                oci_client::client::ClientProtocol::Https
            },
            connect_timeout: Some(self.client.settings.connect_timeout),
            read_timeout: Some(self.client.settings.read_timeout),
            ..Default::default()
        };
        let oci = oci_client::Client::try_from(config)
            .map_err(|e| self.unauthorized_by("cannot set up the token client".into(), e))?;
        let auth = match &self.credentials {
            Some(c) => oci_client::secrets::RegistryAuth::Basic(
                c.username.clone(),
                c.password().to_string(),
            ),
            None => oci_client::secrets::RegistryAuth::Anonymous,
        };
        match oci
            .auth(&self.oci_ref, &auth, oci_client::RegistryOperation::Pull)
            .await
        {
            Ok(Some(token)) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        self.unauthorized("the token server returned an unusable token".into())
                    })?;
                value.set_sensitive(true);
                self.authorization = Some(value);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(oci_client::errors::OciDistributionError::AuthenticationFailure(reason)) => {
                Err(self.unauthorized(format!("token server refused: {}", first_line(&reason))))
            }
            Err(e) => Err(self.unauthorized_by("token exchange failed".into(), e)),
        }
    }

    /// Docker's identity token: an OAuth2 refresh token posted to the challenge's realm
    /// (`grant_type=refresh_token`, the service, the pull scope) for an access token.
    async fn exchange_identity_token(&mut self, challenge: &str) -> Result<()> {
        let param = |name: &str| challenge_param(challenge, name);
        let realm = param("realm").ok_or_else(|| {
            self.unauthorized(format!("a Bearer challenge without a realm: {challenge:?}"))
        })?;
        let token = self
            .credentials
            .as_ref()
            .map(|c| c.password().to_string())
            .unwrap_or_default();
        let scope = format!("repository:{}:pull", self.oci_ref.repository());
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", token),
            ("client_id", "dockless".to_string()),
            ("scope", scope),
        ];
        if let Some(service) = param("service") {
            form.push(("service", service));
        }
        let response = self
            .client
            .http
            .post(&realm)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form_encode(&form))
            .send()
            .await
            .map_err(|e| {
                self.unauthorized(format!("identity token exchange with {realm} failed: {e}"))
            })?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(self.unauthorized(format!(
                "token server refused the identity token ({status}): {}",
                first_line(&body.to_string())
            )));
        }
        let access = body["access_token"]
            .as_str()
            .or_else(|| body["token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.unauthorized("the token server answered without a token".into()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {access}"))
            .map_err(|_| self.unauthorized("the token server returned an unusable token".into()))?;
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(())
    }

    fn unauthorized(&self, reason: String) -> Error {
        Error::Unauthorized {
            image: self.image.clone(),
            registry: self.host.clone(),
            reason,
            source: None,
        }
    }

    /// An auth failure caused by the token client's own error, kept as the source.
    fn unauthorized_by(
        &self,
        reason: String,
        source: oci_client::errors::OciDistributionError,
    ) -> Error {
        Error::Unauthorized {
            image: self.image.clone(),
            registry: self.host.clone(),
            reason,
            source: Some(Box::new(source)),
        }
    }

    /// Attempts allowed for one blob download (resumes included).
    pub fn retry_attempts(&self) -> u32 {
        self.client.settings.retry.attempts
    }

    /// The caps and the stall rule of this pull.
    pub fn limits(&self) -> &Limits {
        &self.client.settings.limits
    }

    /// Backoff before attempt `n`.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        self.client.settings.retry.delay(attempt)
    }

    /// `<base>/manifests/<key>` or `<base>/blobs/<digest>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Sends a request with retries on transport errors, 5xx and 429, and one re-auth on a
    /// 401 (expired token). Returns the first response that is neither; 404 and other
    /// statuses are mapped to errors by [`Session::check`].
    pub async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        what: &str,
    ) -> Result<Response> {
        let mut reauthed = false;
        loop {
            let response = self
                .send_with_retries(method.clone(), url, headers.clone(), true, what)
                .await?;
            if response.status() == StatusCode::UNAUTHORIZED && !reauthed {
                reauthed = true;
                self.authorization = None;
                self.authenticate().await?;
                continue;
            }
            return self.check(response, what).await;
        }
    }

    async fn send_with_retries(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        with_auth: bool,
        what: &str,
    ) -> Result<Response> {
        let policy = &self.client.settings.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .client
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if with_auth && let Some(a) = &self.authorization {
                request = request.header(AUTHORIZATION, a.clone());
            }
            match request.send().await {
                Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after(r.headers());
                    if attempt >= policy.attempts || wait.is_some_and(|w| w > policy.max_wait) {
                        return Err(Error::RateLimited {
                            image: self.image.clone(),
                            registry: self.host.clone(),
                            retry_after: wait,
                        });
                    }
                    let delay = wait.unwrap_or_else(|| policy.delay(attempt + 1));
                    tracing::warn!(what, attempt, ?delay, "rate limited (429), waiting");
                    tokio::time::sleep(delay).await;
                }
                Ok(r) if r.status().is_server_error() && attempt < policy.attempts => {
                    let delay = retry_after(r.headers())
                        .unwrap_or_else(|| policy.delay(attempt + 1))
                        .min(policy.max_wait);
                    tracing::warn!(
                        what,
                        attempt,
                        status = r.status().as_u16(),
                        ?delay,
                        "server error, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Ok(r) => return Ok(r),
                Err(e) if attempt < policy.attempts => {
                    let delay = policy.delay(attempt + 1);
                    tracing::warn!(what, attempt, error = %e, ?delay, "transport error, retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(source) => {
                    return Err(Error::Unreachable {
                        image: self.image.clone(),
                        registry: self.host.clone(),
                        attempts: attempt,
                        source,
                    });
                }
            }
        }
    }

    /// Maps a final response to success or a typed error.
    async fn check(&self, response: Response, what: &str) -> Result<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let image = self.image.clone();
        let registry = self.host.clone();
        let body = read_error_body(response).await;
        match status {
            StatusCode::NOT_FOUND => Err(Error::NotFound { image, registry }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let reason = if self.credentials.is_some() {
                    format!("credentials for {} were refused: {body}", self.host)
                } else {
                    format!(
                        "access denied (the repository may not exist or may require credentials): {body}"
                    )
                };
                Err(Error::Unauthorized {
                    image,
                    registry,
                    reason,
                    source: None,
                })
            }
            _ => Err(Error::Status {
                image,
                registry,
                what: what.to_string(),
                status: status.as_u16(),
                body,
            }),
        }
    }
}

pub(crate) fn basic_header(c: &Credentials) -> HeaderValue {
    use base64::Engine as _;
    let raw = format!("{}:{}", c.username, c.password());
    let mut v = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
    .expect("base64 is a valid header value");
    v.set_sensitive(true);
    v
}

/// The registry's error envelope (or the start of whatever it sent), one line, bounded.
async fn read_error_body(response: Response) -> String {
    let text = response.text().await.unwrap_or_default();
    if let Ok(env) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(errors) = env.get("errors").and_then(|e| e.as_array())
    {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                format!("{code} {msg}").trim().to_string()
            })
            .collect();
        return parts.join("; ");
    }
    first_line(&text).chars().take(200).collect()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// `application/x-www-form-urlencoded` of `pairs` (RFC 3986 unreserved bytes kept, the rest
/// percent-encoded).
fn form_encode(pairs: &[(&str, String)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// One `name="value"` parameter of a `WWW-Authenticate` challenge.
fn challenge_param(challenge: &str, name: &str) -> Option<String> {
    let rest = challenge.split_once(' ').map_or("", |(_, r)| r);
    rest.split(',').find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        (key.trim().eq_ignore_ascii_case(name)).then(|| value.trim().trim_matches('"').to_string())
    })
}
