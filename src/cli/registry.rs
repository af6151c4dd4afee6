//! Registry flags and `DOCKLESS_*` variables, resolved once into the registry crate's own
//! [`Settings`] before any I/O.

use std::time::Duration;

use clap::Args;
use dockless_registry::{AuthFiles, Settings};

/// Registry flags shared by every command that may pull.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Allow plain HTTP to this registry (`HOST[:PORT]`); loopback registries always are.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST[:PORT]",
        env = "DOCKLESS_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,

    /// A Docker Hub mirror tried before Docker Hub itself (URL or `HOST[:PORT]`).
    #[arg(
        long = "registry-mirror",
        value_name = "URL",
        env = "DOCKLESS_REGISTRY_MIRRORS",
        value_delimiter = ','
    )]
    pub mirrors: Vec<String>,

    /// Attempts per request on transport errors, 5xx and 429.
    #[arg(long, default_value_t = 5, env = "DOCKLESS_PULL_RETRIES")]
    pub pull_retries: u32,
}

impl RegistryArgs {
    /// The registry crate's settings for these flags and this process's environment (the
    /// pull caps come from `DOCKLESS_MAX_LAYERS` and friends: a bad value is refused).
    pub fn resolve(&self) -> Result<Settings, dockless_registry::Error> {
        let mut settings = Settings {
            insecure_registries: self.insecure_registries.clone(),
            mirrors: self.mirrors.clone(),
            auth_files: AuthFiles::from_env(),
            limits: dockless_registry::Limits::from_env()?,
            ..Settings::default()
        };
        settings.retry.attempts = self.pull_retries.max(1);
        // Tests shrink the backoff so fault cases run in milliseconds.
        if let Some(ms) = std::env::var("DOCKLESS_RETRY_BASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            settings.retry.base_delay = Duration::from_millis(ms);
        }
        Ok(settings)
    }
}
