//! Where the binary keeps its state: the roots chosen from flags, environment and the
//! caller's uid. The layouts below each root belong to the crates (the content store, the
//! snapshot store, the run slots, the build cache each name their own directory).

use std::path::PathBuf;

use dockless_staging::StorageLocation;

/// Paths every command may need, resolved once from flags and environment.
#[derive(Debug, Clone)]
pub struct Paths {
    /// State directory: image store, snapshots, runtime state.
    pub root: PathBuf,
    /// The Storage: the embedded SQLite file, or a PostgreSQL URL.
    pub storage: StorageLocation,
    /// Runtime state of containers in progress (bundles, libcontainer state, locks).
    pub run_state: PathBuf,
}

impl Paths {
    /// The roots for `--root` and `--storage` (each optional) and `DOCKLESS_RUN_ROOT`.
    pub fn resolve(root: Option<PathBuf>, storage: Option<StorageLocation>) -> Paths {
        let root = root.unwrap_or_else(default_root);
        let storage = storage.unwrap_or_else(|| StorageLocation::Sqlite(root.join("storage.db")));
        let run_state = std::env::var_os("DOCKLESS_RUN_ROOT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(default_run_state);
        Paths {
            root,
            storage,
            run_state,
        }
    }

    /// Creates the state directory if it is missing, before any crate does: 0711 whatever the
    /// umask, so that nobody else can list or read it but a `--userns` container's root (an
    /// unprivileged host uid) can pass through it to its run dir, as it must. Everything
    /// below is created by its owner (the stores, the job dirs) 0700 (0711 for the folders a
    /// `--userns` run passes through) with files 0600. An existing directory is left as it is:
    /// it may be the user's own choice of `--root`.
    pub fn create_root(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if self.root.is_dir() {
            return Ok(());
        }
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.root) {
            Ok(()) => std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o711)),
            // Another dockless created it at the same moment (and sets its mode itself).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The runtime's state: containers in progress, their bundles and locks.
    pub fn containers(&self) -> PathBuf {
        self.run_state.join("containers-v1")
    }

    /// Per-run root filesystems (overlay mounts) and their locks.
    pub fn run_slots(&self) -> dockless_runtime::rootfs::RunSlots {
        dockless_runtime::rootfs::RunSlots::new(&self.root)
    }

    /// The installation's key for the `#` values of stored state (0600, beside the other
    /// state: whoever can read it can read the state, like the Storage itself).
    pub fn state_key(&self) -> PathBuf {
        self.root.join("storage.key")
    }

    /// The job working directories (`<run>-<pid>`, each with its `.lock`).
    pub fn jobs(&self) -> PathBuf {
        self.root.join("jobs-v1")
    }

    /// The `--storage` URL when the Storage is a PostgreSQL database (which also holds the
    /// job queue).
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.storage {
            StorageLocation::Postgres(url) => Some(url),
            _ => None,
        }
    }

    /// The job files of the queued jobs this host's worker runs, one private directory each.
    pub fn queued(&self) -> PathBuf {
        self.root.join("queued")
    }

    /// The content store (blobs, manifests, image index).
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
}

/// The effective uid of this process: the one place the binary asks (defaults, the rootless
/// session, `--userns`, `delegate-cgroups` all decide on it).
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether this process runs as root (of the host or of its own user namespace).
pub fn is_root() -> bool {
    euid() == 0
}

/// `/var/lib/dockless` for root (as podman's /var/lib/containers); `$XDG_DATA_HOME/dockless`
/// (or `~/.local/share/dockless`) for everyone else.
fn default_root() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/dockless");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("dockless");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/dockless")
}

/// Runtime state lives on tmpfs where there is one (`/run/dockless` for root,
/// `$XDG_RUNTIME_DIR/dockless` otherwise), as podman's runroot: it is per boot by nature, and
/// writing bundles and container state there saves ~9 ms per run against this disk. A runner
/// killed mid-run leaves its entries there for `dockless gc`.
fn default_run_state() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/dockless");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("dockless"),
        None => std::env::temp_dir().join(format!("dockless-run-{}", euid())),
    }
}
