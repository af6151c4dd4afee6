//! `--network bridge`: a container's own network namespace given outbound access through a
//! user-mode network stack, `pasta` (Debian's `passt` package), instead of a bridge, veth
//! pair or firewall rule on the host. Nothing here changes the host's network.
//!
//! - `files`: the container's `/etc/resolv.conf` (the host's resolvers, with a local stub
//!   such as systemd-resolved's replaced by its upstreams) and `/etc/hosts`, written beside
//!   the run's rootfs and bound read-only.
//! - `block`: the host's other addresses made unreachable in the container's namespace
//!   (pasta would otherwise connect to them like to any outside address).
//! - `pasta`: finding the binary (a missing one names the package), and starting it on the
//!   container's namespace from the runtime helper, between create and start, as the helper's
//!   child: no gateway mapping and no port forwarding, so the host's loopback services and the
//!   host's own address stay out of reach.

pub mod block;
pub mod files;
pub(crate) mod pasta;

pub use block::host_addresses;
pub use files::{files_dir, nameservers, resolv_conf_for_container, write_files};
pub use pasta::{PASTA_PACKAGE, find_pasta};

/// Why the network stack of a `bridge` run could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No `pasta` binary: `bridge` never falls back to another mode.
    #[error(
        "--network bridge needs pasta, which was not found ({searched}): install Debian's \
         {PASTA_PACKAGE} package (apt-get install {PASTA_PACKAGE})"
    )]
    PastaMissing {
        /// Where it was looked for.
        searched: String,
    },
    /// The host's addresses could not be listed.
    #[error("cannot list the host's addresses (to keep them out of the container's reach)")]
    HostAddresses(#[source] std::io::Error),
    /// The container's resolv.conf or hosts could not be written.
    #[error("cannot write the container's network file {path:?}")]
    Files {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
