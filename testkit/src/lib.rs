//! Test-only helpers shared by the crates' integration tests and the end-to-end tests.
//!
//! Everything here talks to real parts: the registries and images that `scripts/test-env up`
//! starts and pushes. [`FaultProxy`] sits in front of the real registry to produce what it
//! cannot do on demand (a cut connection, a tampered byte, a 429). [`TestDatabase`] is a fresh
//! database of its own on the test PostgreSQL cluster.

mod env;
mod fault_proxy;
mod leftovers;
pub mod postgres;

pub use env::{TestEnv, test_env};
pub use fault_proxy::{ENDLESS_CAP, Fault, FaultProxy, Logged, Rule};
pub use leftovers::{assert_clean, mounts_below};
pub use postgres::TestDatabase;
