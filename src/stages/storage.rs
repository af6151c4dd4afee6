//! The Storage as every command opens it: the SQLite file or the PostgreSQL database that
//! `--storage` names, wrapped so that the `#` values of component state are encrypted at rest
//! with the installation's key ([`Paths::state_key`]). One opener, so that no reader or writer
//! of state can bypass it.

use dockless_staging::{AnyStorage, SealedStorage, StateCipher};

use crate::paths::Paths;

/// The Storage of `paths`, with state sealed by the key beside it (created, 0600, on first
/// use). Hosts sharing a PostgreSQL Storage must share that key file too, or they cannot read
/// each other's `#` state values.
pub fn open(paths: &Paths) -> dockless_staging::Result<SealedStorage<AnyStorage>> {
    let inner = paths.storage.open()?;
    let cipher = StateCipher::open_or_create(&paths.state_key())?;
    Ok(SealedStorage::new(inner, cipher))
}
