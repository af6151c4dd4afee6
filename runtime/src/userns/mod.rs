//! Rootless: an ordinary user's runner enters a user namespace of its own before it unpacks a
//! layer, mounts an overlay or starts a container.
//!
//! Inside, the user is uid 0 and the user's subordinate ids (`/etc/subuid`, `/etc/subgid`)
//! are uids 1..N, so layers keep the image's owners (image uid 1000 is one subordinate id on
//! the host, never the user itself) and overlayfs, whiteouts and libcontainer work as they do
//! for root. Only the ranges need a privileged hand: the setuid `newuidmap`/`newgidmap` from
//! Debian's `uidmap` write them, and their exit status is checked (libcontainer 0.7 does not).
//!
//! The namespace belongs to the process that calls [`enter`]; its children (the runtime
//! helper, the containers) inherit it, and it ends with them. Mounts made inside it are never
//! seen by the host.

mod cgroups;
mod enter;
mod error;
mod subid;

pub(crate) use cgroups::write_limits;
pub use cgroups::{delegate, delegated_parent, delegated_parent_name, undelegate, v1_hierarchies};
pub use enter::{
    apparmor_restricts_userns, claim_delegated_v2, delegated_v2_controllers, enter,
    in_user_namespace, mount_private_cgroup2,
};
pub use error::UsernsError;
pub use subid::{IdMap, IdRange, SubIdFiles, current_user_map, named_range};
