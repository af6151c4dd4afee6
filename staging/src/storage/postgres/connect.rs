//! From a `postgres://` URL to a connected client, the way libpq users expect it.
//!
//! The `postgres` crate parses the URL but reads nothing else, and knows only the `sslmode`s
//! `disable`, `prefer` and `require`. What libpq adds is filled in here: the `PG*` variables
//! for whatever the URL leaves out (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`,
//! `PGPASSFILE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`), the password
//! file (`~/.pgpass`, ignored when group or others can read it, as libpq does), libpq's
//! defaults (the local socket, port 5432, the OS user), and TLS with rustls for every
//! `sslmode` (`verify-ca` and `verify-full` check the server's certificate against
//! `sslrootcert`, a PEM file, or the system's roots with `sslrootcert=system`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

/// How long a connection attempt may take when the URL does not say (libpq waits forever).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// libpq's `sslmode`, all six.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(text: &str) -> Result<TlsMode> {
        Ok(match text {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(Error::PgUrl {
                    reason: format!(
                        "sslmode {other:?} is not one of disable, allow, prefer, require, \
                         verify-ca, verify-full"
                    ),
                });
            }
        })
    }
}

/// A resolved connection: everything needed to (re)connect, without secrets in its `Debug`.
#[derive(Clone)]
pub struct ConnectTarget {
    config: postgres::Config,
    tls: Option<Arc<rustls::ClientConfig>>,
    display: String,
}

impl std::fmt::Debug for ConnectTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectTarget")
            .field("target", &self.display)
            .finish_non_exhaustive()
    }
}

impl ConnectTarget {
    /// Resolves `url` with the environment and the password file (see the module doc).
    pub fn resolve(url: &str) -> Result<ConnectTarget> {
        resolve_with(url, &|name| {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        })
    }

    /// `user@host:port/dbname`, for messages (never the password).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// A new connection, its failure described in one sentence naming the server.
    pub fn connect(&self) -> Result<postgres::Client> {
        let result = match &self.tls {
            None => self.config.connect(postgres::NoTls),
            Some(tls) => self
                .config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                    (**tls).clone(),
                )),
        };
        result.map_err(|e| Error::PgConnect {
            target: self.display.clone(),
            reason: describe_connect_error(&e, &self.config),
        })
    }
}

/// A connection failure as one short reason.
fn describe_connect_error(e: &postgres::Error, config: &postgres::Config) -> String {
    use postgres::error::SqlState;
    let user = config.get_user().unwrap_or("?");
    let db = config.get_dbname().unwrap_or("?");
    if let Some(db_error) = e.as_db_error() {
        return match *db_error.code() {
            SqlState::INVALID_PASSWORD => format!("password authentication failed for user {user}"),
            SqlState::INVALID_CATALOG_NAME => format!("database {db} does not exist"),
            _ => format!("the server refused: {}", db_error.message()),
        };
    }
    let text = crate::error::chain(e);
    if text.contains("password missing") {
        return format!(
            "the server asks for a password for user {user} and none was given (in the URL, \
             PGPASSWORD, PGPASSFILE or ~/.pgpass)"
        );
    }
    if text.contains("server does not support TLS") {
        return "the server does not support TLS, which the sslmode requires".into();
    }
    text.replace("error connecting to server: ", "cannot reach the server: ")
}

/// [`ConnectTarget::resolve`] with the environment as a function (tests pass their own).
pub(crate) fn resolve_with(
    url: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConnectTarget> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    // The parameters libpq knows and the crate does not (or only in part) are taken out.
    let mut kept = Vec::new();
    let (mut sslmode, mut sslrootcert, mut passfile) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => sslmode = Some(percent_decode(value)?),
            "sslrootcert" => sslrootcert = Some(percent_decode(value)?),
            "passfile" => passfile = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let mut text = base.to_string();
    if !kept.is_empty() {
        text.push('?');
        text.push_str(&kept.join("&"));
    }
    let mut config: postgres::Config = text.parse().map_err(|e: postgres::Error| Error::PgUrl {
        reason: crate::error::chain(&e),
    })?;

    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(hosts) => {
                for host in hosts.split(',') {
                    add_host(&mut config, host);
                }
            }
            None if Path::new("/var/run/postgresql").is_dir() => {
                config.host_path("/var/run/postgresql");
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty() {
        let port = match env("PGPORT") {
            Some(p) => p.parse().map_err(|_| Error::PgUrl {
                reason: format!("PGPORT {p:?} is not a port number"),
            })?,
            None => 5432,
        };
        config.port(port);
    }
    if config.get_user().is_none() {
        let user = env("PGUSER").or_else(os_user).ok_or_else(|| Error::PgUrl {
            reason: "no user in the URL, PGUSER unset and no name for this uid".into(),
        })?;
        config.user(&user);
    }
    let user = config.get_user().unwrap_or_default().to_string();
    if config.get_dbname().is_none() {
        config.dbname(&env("PGDATABASE").unwrap_or_else(|| user.clone()));
    }
    if config.get_application_name().is_none() {
        config.application_name(&env("PGAPPNAME").unwrap_or_else(|| "dockless".into()));
    }
    if config.get_connect_timeout().is_none() {
        let timeout = match env("PGCONNECT_TIMEOUT") {
            Some(t) => Duration::from_secs(t.parse().map_err(|_| Error::PgUrl {
                reason: format!("PGCONNECT_TIMEOUT {t:?} is not a number of seconds"),
            })?),
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        config.connect_timeout(timeout);
    }
    let (host, port) = first_host(&config);
    let db = config.get_dbname().unwrap_or_default().to_string();
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        } else {
            let file = passfile
                .map(PathBuf::from)
                .or_else(|| env("PGPASSFILE").map(PathBuf::from))
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
            if let Some(password) = file.and_then(|f| lookup_passfile(&f, &host, port, &db, &user))
            {
                config.password(password);
            }
        }
    }

    let mode = match sslmode.or_else(|| env("PGSSLMODE")) {
        Some(m) => TlsMode::parse(&m)?,
        None => TlsMode::Prefer,
    };
    let rootcert = sslrootcert.or_else(|| env("PGSSLROOTCERT"));
    let tls = tls_config(mode, rootcert, env("HOME"))?;
    config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        // `allow` tries plain first in libpq; the crate cannot, so it prefers TLS (safer).
        TlsMode::Allow | TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
    });
    let display = format!("{user}@{}:{port}/{db}", host_for_display(&host));
    Ok(ConnectTarget {
        config,
        tls,
        display,
    })
}

fn add_host(config: &mut postgres::Config, host: &str) {
    if host.starts_with('/') {
        config.host_path(host);
    } else {
        config.host(host);
    }
}

/// The first host (a socket folder as its path) and port, for the password file and messages.
fn first_host(config: &postgres::Config) -> (String, u16) {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    (host, config.get_ports().first().copied().unwrap_or(5432))
}

fn host_for_display(host: &str) -> String {
    if host.contains(':') && !host.starts_with('/') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The user name of this process's uid, as libpq's default user.
fn os_user() -> Option<String> {
    let uid = rustix::process::getuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(b) = hex else {
                return Err(Error::PgUrl {
                    reason: "a bad %-escape in a URL parameter".into(),
                });
            };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::PgUrl {
        reason: "a URL parameter is not UTF-8".into(),
    })
}

/// The password of the first matching line of a libpq password file
/// (`host:port:database:user:password`, `*` matches anything, `\` escapes `:` and `\`). A
/// file that group or others can read is ignored, as libpq ignores it.
fn lookup_passfile(path: &Path, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.mode() & 0o077 != 0 {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    // A socket connection matches `localhost` entries, as in libpq.
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(&fields[0], host)
            && matches(&fields[1], &port)
            && matches(&fields[2], db)
            && matches(&fields[3], user)
        {
            return Some(fields[4..].join(":"));
        }
    }
    None
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// The rustls configuration of a mode: `None` for `disable`. Without a root certificate,
/// `prefer`/`require` encrypt without checking who answers (libpq's behaviour); with one
/// (`sslrootcert`, or `~/.postgresql/root.crt` when it exists) `require` checks the chain as
/// `verify-ca` does.
fn tls_config(
    mode: TlsMode,
    rootcert: Option<String>,
    home: Option<String>,
) -> Result<Option<Arc<rustls::ClientConfig>>> {
    if mode == TlsMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let default_root = home.map(|h| Path::new(&h).join(".postgresql/root.crt"));
    let rootcert = match rootcert {
        Some(r) => Some(r),
        None => default_root
            .filter(|p| p.is_file())
            .map(|p| p.display().to_string()),
    };
    let verify = match (mode, &rootcert) {
        (TlsMode::VerifyFull, _) => Verify::Full,
        (TlsMode::VerifyCa, _) | (TlsMode::Require, Some(_)) => Verify::Chain,
        _ => Verify::Nothing,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::PgUrl {
            reason: format!("TLS setup: {e}"),
        })?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        Verify::Chain | Verify::Full => {
            let (roots, certs) = root_store(rootcert.as_deref(), mode)?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| Error::PgUrl {
                reason: format!("TLS setup: {e}"),
            })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(RootVerifier {
                    webpki,
                    pinned: certs,
                    check_name: verify == Verify::Full,
                }))
                .with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    Full,
}

/// The trust anchors of `sslrootcert`, and the certificates as they are in the file.
fn root_store(
    rootcert: Option<&str>,
    mode: TlsMode,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>)> {
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    match rootcert {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| Error::PgUrl {
                reason: format!("cannot read sslrootcert {path}: {e}"),
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| Error::PgUrl {
                    reason: format!("cannot read sslrootcert {path}: {e}"),
                })?;
                pinned.push(cert.clone());
                roots.add(cert).map_err(|e| Error::PgUrl {
                    reason: format!("sslrootcert {path}: {e}"),
                })?;
            }
        }
        None => {
            let mut text = String::new();
            let _ = write!(
                text,
                "sslmode {} needs a root certificate: set sslrootcert (a PEM file, or \
                 \"system\" for the system's roots) or create ~/.postgresql/root.crt",
                if mode == TlsMode::VerifyFull {
                    "verify-full"
                } else {
                    "verify-ca"
                }
            );
            return Err(Error::PgUrl { reason: text });
        }
    }
    if roots.is_empty() {
        return Err(Error::PgUrl {
            reason: format!(
                "sslrootcert {} holds no certificate",
                rootcert.unwrap_or_default()
            ),
        });
    }
    Ok((roots, pinned))
}

/// `prefer`/`require` without a root certificate: encrypted, the server not authenticated
/// (what libpq does); the handshake signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` and `verify-full`: the chain must lead to a root of `sslrootcert`; with
/// `verify-full` the certificate must also name the host. A server certificate that is itself
/// in the root file is trusted as it is, as libpq (OpenSSL) trusts it: the common self-signed
/// set-up, which webpki alone refuses (a CA certificate used as the server's).
#[derive(Debug)]
struct RootVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    check_name: bool,
}

impl ServerCertVerifier for RootVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let name_only = |e: &rustls::Error| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            )
        };
        match verified {
            Ok(v) => Ok(v),
            Err(e) if name_only(&e) && !self.check_name => Ok(ServerCertVerified::assertion()),
            Err(e) if name_only(&e) => Err(e),
            Err(e) => {
                if !self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref())
                {
                    return Err(e);
                }
                if self.check_name {
                    let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                    rustls::client::verify_server_name(&parsed, server_name)?;
                }
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_url_wins_and_pg_variables_fill_the_gaps() {
        let t = resolve_with(
            "postgres://u:secret@db.example:6000/app?sslmode=disable",
            &env(&[("PGUSER", "other"), ("PGPORT", "7000")]),
        )
        .unwrap();
        assert_eq!(t.display(), "u@db.example:6000/app");
        assert_eq!(t.config.get_password(), Some(&b"secret"[..]));
        assert!(t.tls.is_none());
        assert!(!format!("{t:?}").contains("secret"));

        let t = resolve_with(
            "postgresql://",
            &env(&[
                ("PGHOST", "h"),
                ("PGPORT", "7000"),
                ("PGUSER", "pu"),
                ("PGDATABASE", "pd"),
                ("PGPASSWORD", "pw"),
                ("PGSSLMODE", "require"),
            ]),
        )
        .unwrap();
        assert_eq!(t.display(), "pu@h:7000/pd");
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert!(t.tls.is_some());
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:no\nh:7000:*:u:pa\\:ss\\\\word\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            lookup_passfile(&file, "h", 7000, "db", "u").as_deref(),
            Some("pa:ss\\word")
        );
        assert_eq!(
            lookup_passfile(&file, "x", 1, "db", "u").as_deref(),
            Some("fallback")
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup_passfile(&file, "h", 7000, "db", "u"), None);
    }

    #[test]
    fn bad_values_are_named_without_the_password() {
        let err = resolve_with("postgres://u:topsecret@h/db?sslmode=maybe", &env(&[]))
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains("sslmode \"maybe\""), "{text}");
        assert!(!text.contains("topsecret"));
        let err = resolve_with("postgres://u:topsecret@h/db?sslmode=verify-full", &env(&[]))
            .err()
            .unwrap();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        let err = resolve_with("postgres://u:topsecret@h/db?bogus=1", &env(&[]))
            .err()
            .unwrap();
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }
}
