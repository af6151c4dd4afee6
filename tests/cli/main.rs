//! The `dockless` binary end to end, one module per command family, in one test binary (one
//! link step instead of six). The rootless tests are a binary of their own (`tests/rootless`).
//!
//! Most tests need root, the local registries (`scripts/test-env up`) or real containers: they
//! are `#[ignore = "needs root and scripts/test-env"]` and run by `scripts/test`. Plain
//! `cargo test` runs the rest.

#[path = "../support/mod.rs"]
mod support;

mod artifacts;
mod build;
mod components;
mod functional;
mod gelf;
mod job;
mod job_env;
mod kbc_config;
mod kbc_project;
mod login;
mod postgres;
mod pull;
mod run;
mod state_dir;
mod storage;
mod test_python;
mod types;
mod userns;
