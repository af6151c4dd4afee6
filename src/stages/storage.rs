//! The embedded Storage as every command opens it: the SQLite file wrapped so that the `#`
//! values of component state are encrypted at rest with the installation's key
//! ([`Paths::state_key`]). One opener, so that no reader or writer of state can bypass it.

use dockless_staging::{SealedStorage, SqliteStorage, StateCipher};

use crate::paths::Paths;

/// The Storage of `paths`, with state sealed by the key beside it (created, 0600, on first
/// use).
pub fn open(paths: &Paths) -> dockless_staging::Result<SealedStorage<SqliteStorage>> {
    let inner = SqliteStorage::open(&paths.storage)?;
    let cipher = StateCipher::open_or_create(&paths.state_key())?;
    Ok(SealedStorage::new(inner, cipher))
}
