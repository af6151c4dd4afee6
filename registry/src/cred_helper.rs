//! Docker's credential helpers (`credsStore`, `credHelpers` of an auth file): the program
//! `docker-credential-<name>` on `PATH`, run as docker runs it: `get` with the server URL on
//! standard input, a JSON `{"ServerURL", "Username", "Secret"}` on standard output, or a
//! non-zero exit saying `credentials not found` when it has none. Keboola's components live in
//! AWS ECR, whose credentials come this way (`docker-credential-ecr-login`).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::auth::Credentials;
use crate::error::{Error, Result};

/// The message helpers print when they have no credentials for a server (docker's
/// `credentials.NewErrCredentialsNotFound`).
const NOT_FOUND: &str = "credentials not found";

/// The user name a helper answers with when `Secret` is an identity (refresh) token.
const IDENTITY_TOKEN_USER: &str = "<token>";

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Asks helper `name` (named in `file`) for `server`'s credentials; `None` when it has none.
pub(crate) fn get(file: &Path, name: &str, server: &str) -> Result<Option<Credentials>> {
    let fail = |reason: String| Error::CredentialHelper {
        path: file.to_path_buf(),
        helper: name.to_string(),
        reason,
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(fail("not a helper name".into()));
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program} (is it on PATH?): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit and output below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("cannot wait for {program}: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let said = if said.is_empty() {
            String::from_utf8_lossy(&out.stderr).trim().to_string()
        } else {
            said
        };
        if said.contains(NOT_FOUND) {
            return Ok(None);
        }
        let said: String = said.chars().take(300).collect();
        return Err(fail(format!("`get` failed ({}): {said}", out.status)));
    }
    let answer: Answer = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("`get` did not answer with JSON credentials: {e}")))?;
    if answer.username == IDENTITY_TOKEN_USER {
        return Ok(Some(Credentials::identity_token(answer.secret)));
    }
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::new(answer.username, answer.secret)))
}
