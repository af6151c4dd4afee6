//! At-rest encryption of the `#` values of stored state, for every Storage backend.
//!
//! Keboola encrypts the values of `#` keys (`#password`, `#refresh_token`) in configurations
//! and state; a component's state holds such secrets between runs. [`SealedStorage`] wraps
//! any [`Storage`]: on [`Transaction::set_state`] every string or number at or below a `#`
//! key of the state document is replaced by a marked ciphertext
//! (`"DOCKLESS::Secure::v1::<base64 of nonce and ciphertext>"`), and [`Storage::state`]
//! decrypts them again. The only reader of the state is a job staging `in/state.json`, so
//! plain values exist only in memory and in the job's own directory; the backend (a SQLite
//! file, a shared PostgreSQL) never sees them. Being a wrapper, it covers a new backend
//! without a line of code in that backend.
//!
//! The cipher is XChaCha20-Poly1305 (an AEAD: a value changed in the database fails to
//! decrypt instead of decrypting to something else) with a random 24-byte nonce per value,
//! large enough that random nonces never repeat in practice. The component id is bound as
//! associated data, so a value encrypted for one component does not decrypt for another.
//! The key is the installation's: 32 random bytes, base64, in a 0600 key file of the user,
//! created on first use.
//!
//! Values without the marker are returned as they are: state stored before encryption
//! existed still reads, and is encrypted the next time the job stores it.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::id::TableId;
use crate::queue::{Claim, Step};
use crate::storage::{
    DeleteFilter, ExportOptions, Exported, FileInfo, FileQuery, NewFile, Prepared, RowSource,
    Slice, StateKey, Storage, TableInfo, Transaction,
};

/// Prefix of an encrypted value in stored state; a value that has it is never encrypted again.
pub const MARKER: &str = "DOCKLESS::Secure::v1::";

const NONCE_LEN: usize = 24;
/// Associated data of every value: a version tag, then the component id.
const AAD_PREFIX: &[u8] = b"dockless state v1\0";
/// A key file is one line of base64; anything larger is not a key file.
const MAX_KEY_FILE: u64 = 4096;

/// The installation's state key, read from (or created as) its key file. Its `Debug` shows
/// the key file, never the key.
pub struct StateCipher {
    aead: XChaCha20Poly1305,
    key_file: PathBuf,
}

impl fmt::Debug for StateCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCipher")
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl StateCipher {
    /// Reads the key at `key_file`, creating it (and its missing parent folders, 0700) with a
    /// new random key when there is none. The file is refused, with an error saying why and
    /// what to do, when it is a symbolic link, not a regular file, owned by another user,
    /// accessible to group or others (it must be 0600), or not a key.
    ///
    /// Creation is atomic: the key is written to a private temporary file that is then linked
    /// to `key_file`, which never replaces an existing file (like `O_EXCL`); when two jobs
    /// create it at once, both end up with the one that was linked first.
    pub fn open_or_create(key_file: &Path) -> Result<StateCipher> {
        if let Some(cipher) = Self::read(key_file)? {
            return Ok(cipher);
        }
        Self::create(key_file)?;
        Self::read(key_file)?.ok_or_else(|| Error::StateKeyFile {
            path: key_file.to_path_buf(),
            reason: "disappeared right after it was created".into(),
        })
    }

    /// The key file this cipher was read from (named in errors).
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// Encrypts, in place, every string and number at or below a `#` key of the state of
    /// `key`, bound to that state (component, configuration and row: a ciphertext copied into
    /// another state does not decrypt). Every such value is encrypted, one that already looks
    /// like a ciphertext too (a component could otherwise plant one that breaks its
    /// configuration's state, or keep a secret in plain text by prefixing it).
    pub fn seal(&self, key: &StateKey, state: &mut Value) -> Result<()> {
        let aad = aad(key);
        self.seal_value(state, false, &aad)
    }

    /// Decrypts, in place, every marked value at or below a `#` key of the state of `key`.
    /// Unmarked values (state stored before encryption) are kept as they are.
    pub fn unseal(&self, key: &StateKey, state: &mut Value) -> Result<()> {
        let aad = aad(key);
        self.unseal_value(state, false, &aad).map_err(|mut at| {
            at.reverse();
            Error::StateDecrypt {
                state: owner(key),
                at: at.concat(),
                key_file: self.key_file.clone(),
            }
        })
    }

    fn seal_value(&self, value: &mut Value, secret: bool, aad: &[u8]) -> Result<()> {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.seal_value(v, secret || k.starts_with('#'), aad)?;
                }
            }
            Value::Array(list) => {
                for v in list {
                    self.seal_value(v, secret, aad)?;
                }
            }
            Value::String(_) | Value::Number(_) if secret => {
                let plain = value.to_string();
                *value = Value::String(self.encrypt(plain.as_bytes(), aad)?);
            }
            _ => {}
        }
        Ok(())
    }

    /// On failure returns the path to the bad value, innermost segment first.
    fn unseal_value(&self, value: &mut Value, secret: bool, aad: &[u8]) -> Result<(), Vec<String>> {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.unseal_value(v, secret || k.starts_with('#'), aad)
                        .map_err(|mut at| {
                            at.push(format!(".{k}"));
                            at
                        })?;
                }
            }
            Value::Array(list) => {
                for (i, v) in list.iter_mut().enumerate() {
                    self.unseal_value(v, secret, aad).map_err(|mut at| {
                        at.push(format!("[{i}]"));
                        at
                    })?;
                }
            }
            Value::String(s) if secret && s.starts_with(MARKER) => {
                *value = self.decrypt(&s[MARKER.len()..], aad).ok_or_else(Vec::new)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn encrypt(&self, plain: &[u8], aad: &[u8]) -> Result<String> {
        let nonce = XNonce::try_generate().map_err(|e| Error::StateKeyFile {
            path: self.key_file.clone(),
            reason: format!("no random nonce from the system: {e}"),
        })?;
        let sealed = self
            .aead
            .encrypt(&nonce, Payload { msg: plain, aad })
            .map_err(|_| Error::StateKeyFile {
                path: self.key_file.clone(),
                reason: "encryption failed".into(),
            })?;
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        Ok(format!("{MARKER}{}", STANDARD.encode(raw)))
    }

    /// The plain value, or `None` when the text is not a ciphertext of this key and
    /// component (wrong key, altered, truncated).
    fn decrypt(&self, text: &str, aad: &[u8]) -> Option<Value> {
        let plain = self.decrypt_raw(text, aad)?;
        match serde_json::from_slice(&plain).ok()? {
            v @ (Value::String(_) | Value::Number(_)) => Some(v),
            _ => None,
        }
    }

    fn decrypt_raw(&self, text: &str, aad: &[u8]) -> Option<Vec<u8>> {
        let raw = STANDARD.decode(text).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).ok()?;
        self.aead.decrypt(&nonce, Payload { msg: sealed, aad }).ok()
    }

    /// Encrypts a whole document, bound to `context` (e.g. a queued job's component id): a
    /// job waiting in a shared database carries its configuration, variables and vault values,
    /// and the database must see none of them. Every host that reads it back needs this key.
    pub fn seal_document(&self, context: &str, doc: &Value) -> Result<String> {
        let plain = serde_json::to_vec(doc).map_err(|source| Error::Serialize {
            path: self.key_file.clone(),
            source: source.into(),
        })?;
        let text = self.encrypt(&plain, &document_aad(context))?;
        Ok(text[MARKER.len()..].to_string())
    }

    /// Decrypts what [`StateCipher::seal_document`] sealed for the same `context`; `what`
    /// names the document in the error.
    pub fn unseal_document(&self, context: &str, text: &str, what: &str) -> Result<Value> {
        self.decrypt_raw(text, &document_aad(context))
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or_else(|| Error::DocumentDecrypt {
                what: what.to_string(),
                key_file: self.key_file.clone(),
            })
    }

    /// The key in `path`, `None` when there is no file; every check of
    /// [`StateCipher::open_or_create`] is here.
    fn read(path: &Path) -> Result<Option<StateCipher>> {
        let refuse = |reason: String| Error::StateKeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let link = || {
            refuse(
                "is a symbolic link; the key must be a regular file of its own \
                 (replace the link with the file it points to)"
                    .into(),
            )
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(link()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path)(e)),
        }
        // O_NOFOLLOW: a link planted after the check above is refused too; the checks below
        // are on the open file itself.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    link()
                } else {
                    Error::io(path)(e)
                }
            })?;
        let meta = file.metadata().map_err(Error::io(path))?;
        if !meta.is_file() {
            return Err(refuse("is not a regular file".into()));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(refuse(format!(
                "is owned by uid {}, not by this user (uid {me})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(refuse(format!(
                "has mode {:04o}: group or others can read it; it must be 0600 \
                 (chmod 600 {})",
                meta.mode() & 0o7777,
                path.display()
            )));
        }
        let mut text = String::new();
        file.take(MAX_KEY_FILE)
            .read_to_string(&mut text)
            .map_err(Error::io(path))?;
        let key = STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|raw| Key::try_from(raw.as_slice()).ok())
            .ok_or_else(|| {
                refuse("does not hold a state key (one line of base64 encoding 32 bytes)".into())
            })?;
        Ok(Some(StateCipher {
            aead: XChaCha20Poly1305::new(&key),
            key_file: path.to_path_buf(),
        }))
    }

    fn create(path: &Path) -> Result<()> {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::private::create_dir_all(parent)?;
        let key = Key::try_generate().map_err(|e| Error::StateKeyFile {
            path: path.to_path_buf(),
            reason: format!("no random key from the system: {e}"),
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".state-key-")
            .permissions(std::fs::Permissions::from_mode(crate::private::FILE_MODE))
            .tempfile_in(parent)
            .map_err(Error::io(parent))?;
        let file = tmp.as_file_mut();
        // The umask may have narrowed the mode further; the key file is exactly 0600.
        file.set_permissions(std::fs::Permissions::from_mode(crate::private::FILE_MODE))
            .and_then(|()| file.write_all(format!("{}\n", STANDARD.encode(key)).as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(Error::io(tmp.path()))?;
        match std::fs::hard_link(tmp.path(), path) {
            Ok(()) => {}
            // Another job linked its key first: that one is the installation's key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(path)(e)),
        }
        // Make the new name durable; the temporary name goes when `tmp` is dropped.
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// The associated data of a sealed document: its own tag (a document never decrypts as a
/// state value, nor the reverse), then the context.
fn document_aad(context: &str) -> Vec<u8> {
    let mut aad = b"dockless document v1\0".to_vec();
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// The associated data: whose state a value belongs to, each part length-prefixed so that no
/// two owners give the same bytes.
fn aad(key: &StateKey) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    let row = key.row.as_deref();
    for part in [Some(key.component.as_str()), Some(key.config.as_str()), row] {
        match part {
            Some(p) => {
                aad.extend_from_slice(&(p.len() as u64).to_be_bytes());
                aad.extend_from_slice(p.as_bytes());
            }
            None => aad.extend_from_slice(&u64::MAX.to_be_bytes()),
        }
    }
    aad
}

/// `component/config` or `component/config/row`, for errors.
fn owner(key: &StateKey) -> String {
    match &key.row {
        Some(row) => format!("{}/{}/{row}", key.component, key.config),
        None => format!("{}/{}", key.component, key.config),
    }
}

/// A [`Storage`] whose state keeps `#` values encrypted at rest (see the module docs). Tables
/// and files pass through unchanged.
#[derive(Debug)]
pub struct SealedStorage<S> {
    inner: S,
    cipher: StateCipher,
}

impl<S: Storage> SealedStorage<S> {
    /// Wraps `inner`; every state written through the result is sealed with `cipher`.
    pub fn new(inner: S, cipher: StateCipher) -> SealedStorage<S> {
        SealedStorage { inner, cipher }
    }

    /// The wrapped backend, read-only (e.g. for its path); writing state through it directly
    /// would store plain values.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The cipher, e.g. for its key file.
    pub fn cipher(&self) -> &StateCipher {
        &self.cipher
    }
}

impl<S: Storage> Storage for SealedStorage<S> {
    fn tables(&self) -> Result<Vec<TableInfo>> {
        self.inner.tables()
    }

    fn table(&self, id: &TableId) -> Result<Option<TableInfo>> {
        self.inner.table(id)
    }

    fn export_table(
        &self,
        id: &TableId,
        options: &ExportOptions,
        out: &mut (dyn Write + Send),
    ) -> Result<Exported> {
        self.inner.export_table(id, options, out)
    }

    fn files(&self, query: &FileQuery) -> Result<Vec<FileInfo>> {
        self.inner.files(query)
    }

    fn file(&self, id: i64) -> Result<Option<FileInfo>> {
        self.inner.file(id)
    }

    fn open_file(&self, id: i64) -> Result<Vec<Box<dyn Read + Send>>> {
        self.inner.open_file(id)
    }

    fn state(&self, key: &StateKey) -> Result<Option<Value>> {
        let Some(mut state) = self.inner.state(key)? else {
            return Ok(None);
        };
        self.cipher.unseal(key, &mut state)?;
        Ok(Some(state))
    }

    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>> {
        Ok(Box::new(SealedTransaction {
            inner: self.inner.begin()?,
            cipher: &self.cipher,
        }))
    }
}

/// The write transaction of a [`SealedStorage`]: seals the state, passes the rest through.
struct SealedTransaction<'a> {
    inner: Box<dyn Transaction + 'a>,
    cipher: &'a StateCipher,
}

impl Transaction for SealedTransaction<'_> {
    fn table(&self, id: &TableId) -> Result<Option<TableInfo>> {
        self.inner.table(id)
    }

    fn prepare_table(
        &mut self,
        id: &TableId,
        columns: &[String],
        primary_key: &[String],
    ) -> Result<Prepared> {
        self.inner.prepare_table(id, columns, primary_key)
    }

    fn delete_rows(&mut self, id: &TableId, filter: &DeleteFilter) -> Result<u64> {
        self.inner.delete_rows(id, filter)
    }

    fn load_rows(
        &mut self,
        id: &TableId,
        columns: &[String],
        incremental: bool,
        rows: &mut dyn RowSource,
    ) -> Result<u64> {
        self.inner.load_rows(id, columns, incremental, rows)
    }

    fn set_table_metadata(
        &mut self,
        id: &TableId,
        provider: &str,
        entries: &[(String, String)],
    ) -> Result<()> {
        self.inner.set_table_metadata(id, provider, entries)
    }

    fn set_column_metadata(
        &mut self,
        id: &TableId,
        column: &str,
        provider: &str,
        entries: &[(String, String)],
    ) -> Result<()> {
        self.inner
            .set_column_metadata(id, column, provider, entries)
    }

    fn set_column_types(
        &mut self,
        id: &TableId,
        types: &[(String, crate::types::ColumnType)],
    ) -> Result<()> {
        self.inner.set_column_types(id, types)
    }

    fn drop_table(&mut self, id: &TableId) -> Result<()> {
        self.inner.drop_table(id)
    }

    fn add_file(&mut self, file: &NewFile, slices: &mut dyn Iterator<Item = Slice>) -> Result<i64> {
        self.inner.add_file(file, slices)
    }

    fn add_file_tags(&mut self, id: i64, tags: &[String]) -> Result<()> {
        self.inner.add_file_tags(id, tags)
    }

    fn delete_file(&mut self, id: i64) -> Result<()> {
        self.inner.delete_file(id)
    }

    fn set_state(&mut self, key: &StateKey, state: &Value) -> Result<()> {
        let mut sealed = state.clone();
        self.cipher.seal(key, &mut sealed)?;
        self.inner.set_state(key, &sealed)
    }

    fn queue_step(&mut self, claim: &Claim, step: Step<'_>) -> Result<()> {
        // A row's held-back state waits in the queue as it would in the state table: sealed.
        if let Step::RowDone {
            row_id,
            state: Some((key, state)),
        } = step
        {
            let mut sealed = state.clone();
            self.cipher.seal(key, &mut sealed)?;
            return self.inner.queue_step(
                claim,
                Step::RowDone {
                    row_id,
                    state: Some((key, &sealed)),
                },
            );
        }
        self.inner.queue_step(claim, step)
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.inner.commit()
    }
}
