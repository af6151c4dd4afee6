//! dockless-registry: reference -> manifest -> blobs, into a verified content store.
//!
//! The first stage of the data path. It resolves an image reference as docker does, talks to
//! Docker Hub or any OCI distribution registry (oci-client for the token exchange, reqwest for
//! the transfers), picks the platform manifest out of an index, and streams every blob into
//! [`Store`] with its size and digest checked before it becomes visible. A hostile registry is
//! bounded by [`Limits`]: layer count and declared sizes are capped before any blob is fetched,
//! a free-space reserve is kept, and a trickling transfer fails as stalled. It knows nothing of
//! containers: the runtime later gets blob readers and diff ids from the binary.
//!
//! ```no_run
//! # async fn demo() -> dockless_registry::Result<()> {
//! use std::sync::Arc;
//! use dockless_registry::{Client, ImageRef, NoProgress, Platform, Settings, Store};
//!
//! let client = Client::new(Settings::default())?;
//! let store = Store::open("/var/lib/dockless")?;
//! let image = ImageRef::parse("127.0.0.1:5000/busybox:latest")?;
//! let record = client.pull(&image, &Platform::linux_amd64(), &store, Arc::new(NoProgress)).await?;
//! for (layer, diff_id) in record.layers.iter().zip(&record.diff_ids) {
//!     let _reader = store.open_blob(&layer.digest)?; // handed to the runtime with `diff_id`
//! #   let _ = diff_id;
//! }
//! # Ok(()) }
//! ```

pub mod auth;
mod client;
mod cred_helper;
pub mod digest;
mod error;
pub mod follow;
pub mod limits;
pub mod load;
mod login;
pub mod manifest;
pub mod platform;
mod pull;
pub mod reference;
pub mod retry;
pub mod store;

pub use auth::{AuthFiles, Credentials, login_file, remove_login, store_login};
pub use client::{Client, Settings};
pub use digest::Digest;
pub use error::{Error, ReferenceError, Result};
pub use limits::{Limits, Stall};
pub use platform::Platform;
pub use pull::{NoProgress, Progress};
pub use reference::ImageRef;
pub use retry::RetryPolicy;
pub use store::{ImageRecord, LayerRecord, Store};
