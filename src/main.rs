//! The `dockless` binary: CLI and job pipeline over the registry, runtime and staging crates.
fn main() {}
