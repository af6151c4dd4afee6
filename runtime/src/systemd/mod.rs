//! systemd as the cgroup manager, as runc's and podman's systemd driver use it: on a host whose
//! PID 1 is systemd, the cgroups of a run live in a transient scope that systemd created for
//! it with `Delegate=yes` (`StartTransientUnit` over D-Bus), never in a tree of our own beside
//! systemd's. systemd then knows the run (`systemctl status`), accounts it in its slice, and
//! removes the scope with everything below it once its last process is gone, so a killed
//! runner leaves no cgroup behind.
//!
//! Layout of a root run's scope (`/system.slice/dockless-<id>.scope`): the runtime helper moves
//! into `supervisor/` (v2 allows controllers below a cgroup only when it holds no process
//! itself), and the container gets `container/`, created by libcontainer's cgroup v2 manager
//! with the limits of the spec. A rootless runner asks the user's systemd for one scope for
//! the whole process instead (see [`Scope::start_for`]), below which its session enables
//! the delegated controllers.

mod bus;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use bus::Bus;
use bus::{Value, Writer};

/// How long systemd may take to move a process into its new scope.
const MOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The slice of root's run scopes (runc's default; podman uses `machine.slice`).
pub const ROOT_SLICE: &str = "system.slice";

/// The cgroup leaf of a root run's scope that holds the runtime helper (and pasta).
pub const SUPERVISOR_LEAF: &str = "supervisor";

/// The cgroup of a root run's scope that holds the container.
pub const CONTAINER_LEAF: &str = "container";

/// Why systemd could not be asked for a scope.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// A socket or cgroup file operation failed.
    #[error("{what} {path:?}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The socket or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bus or systemd answered with an error.
    #[error("{path:?} refused {name}: {message}")]
    Refused {
        /// The socket.
        path: PathBuf,
        /// The D-Bus error name (or the step refused).
        name: String,
        /// Its message.
        message: String,
    },
    /// The peer said something this client does not understand.
    #[error("{path:?} sent {what}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// No bus socket could be found.
    #[error("no D-Bus socket of {which}: {tried}")]
    NoBus {
        /// "the system" or "the user's systemd".
        which: &'static str,
        /// The places looked at, and why each failed.
        tried: String,
    },
    /// The scope was created but the process did not show up in it.
    #[error(
        "systemd did not move process {pid} into {unit} within {MOVE_TIMEOUT:?} (it is in {found:?})"
    )]
    NotMoved {
        /// The process.
        pid: u32,
        /// The unit.
        unit: String,
        /// Its cgroup as last read.
        found: String,
    },
}

/// Whether PID 1 is systemd (`sd_booted`: it creates `/run/systemd/system` at boot).
pub fn booted() -> bool {
    std::fs::symlink_metadata("/run/systemd/system").is_ok_and(|m| m.is_dir())
}

/// Whether `/sys/fs/cgroup` is a pure cgroup v2 hierarchy (what the systemd manager supports
/// here: on a hybrid host libcontainer's v1 paths are not below a scope's).
pub fn unified() -> bool {
    rustix::fs::statfs("/sys/fs/cgroup").is_ok_and(|s| s.f_type == libc::CGROUP2_SUPER_MAGIC)
}

/// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else `/run/dbus/system_bus_socket`)
/// or, for root, straight to systemd's private socket when no bus daemon runs.
pub fn system_bus() -> Result<Bus, SystemdError> {
    let uid = rustix::process::getuid().as_raw();
    let mut tried = Vec::new();
    let path = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .ok()
        .and_then(|a| unix_path(&a))
        .unwrap_or_else(|| PathBuf::from("/run/dbus/system_bus_socket"));
    match Bus::connect(&path, uid, false) {
        Ok(bus) => return Ok(bus),
        Err(e) => tried.push(error_line(&e)),
    }
    if uid == 0 {
        match Bus::connect(Path::new("/run/systemd/private"), 0, true) {
            Ok(bus) => return Ok(bus),
            Err(e) => tried.push(error_line(&e)),
        }
    }
    Err(SystemdError::NoBus {
        which: "the system",
        tried: tried.join("; "),
    })
}

/// Connects to the user's own systemd through the session bus (`DBUS_SESSION_BUS_ADDRESS`,
/// else `$XDG_RUNTIME_DIR/bus`, else `/run/user/<uid>/bus`), authenticating as `uid` (the
/// caller's uid outside any user namespace), or straight to the user manager's private
/// socket (`$XDG_RUNTIME_DIR/systemd/private`) when no session bus runs.
pub fn user_bus(uid: u32) -> Result<Bus, SystemdError> {
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")));
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var("DBUS_SESSION_BUS_ADDRESS")
        .ok()
        .and_then(|a| unix_path(&a))
    {
        candidates.push((path, false));
    }
    candidates.push((runtime_dir.join("bus"), false));
    candidates.push((runtime_dir.join("systemd/private"), true));
    let mut tried = Vec::new();
    for (path, direct) in candidates {
        match Bus::connect(&path, uid, direct) {
            Ok(bus) => return Ok(bus),
            Err(e) => tried.push(error_line(&e)),
        }
    }
    Err(SystemdError::NoBus {
        which: "the user's systemd",
        tried: tried.join("; "),
    })
}

/// The first `unix:path=` of a D-Bus address list.
fn unix_path(address: &str) -> Option<PathBuf> {
    address.split(';').find_map(|a| {
        let rest = a.strip_prefix("unix:")?;
        rest.split(',')
            .find_map(|kv| kv.strip_prefix("path="))
            .map(PathBuf::from)
    })
}

fn error_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        line.push_str(": ");
        line.push_str(&e.to_string());
        source = e.source();
    }
    line
}

/// A transient scope systemd made for us.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The unit's name (`dockless-<id>.scope`).
    pub unit: String,
    /// Its cgroup, relative to the cgroup2 root (`/system.slice/dockless-<id>.scope`).
    pub cgroup: String,
}

impl Scope {
    /// Asks systemd (through `bus`) for the transient scope `unit` in `slice` (the manager's
    /// default where `None`) with `Delegate=yes`, holding `pid`, and waits until the process
    /// is in it. The scope goes away by itself once empty (`CollectMode=inactive-or-failed`
    /// also collects a failed one).
    pub fn start_for(
        bus: &mut Bus,
        unit: &str,
        slice: Option<&str>,
        pid: u32,
        description: &str,
    ) -> Result<Self, SystemdError> {
        let mut body = Writer::default();
        body.string(unit);
        body.string("fail");
        body.array(8, |w| {
            w.property("Description", &Value::Str(description.to_owned()));
            w.property("PIDs", &Value::U32Array(vec![pid]));
            w.property("Delegate", &Value::Bool(true));
            w.property("CollectMode", &Value::Str("inactive-or-failed".to_owned()));
            // No ordering against shutdown targets: the runner ends the run itself.
            w.property("DefaultDependencies", &Value::Bool(false));
            if let Some(slice) = slice {
                w.property("Slice", &Value::Str(slice.to_owned()));
            }
        });
        // No auxiliary units: a(sa(sv)) with nothing in it.
        body.array(8, |_| {});
        let asked = Instant::now();
        bus.call(
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            &body.buf,
        )?;
        // The method returns once the start job is queued; the move follows at once.
        let answered = Instant::now();
        let until = answered + MOVE_TIMEOUT;
        let suffix = format!("/{unit}");
        loop {
            let found = own_cgroup_of(pid).unwrap_or_default();
            if found.ends_with(&suffix) {
                tracing::debug!(
                    unit,
                    call_ms = (answered - asked).as_secs_f64() * 1e3,
                    move_ms = answered.elapsed().as_secs_f64() * 1e3,
                    "systemd started the scope"
                );
                return Ok(Self {
                    unit: unit.to_owned(),
                    cgroup: found,
                });
            }
            if Instant::now() >= until {
                return Err(SystemdError::NotMoved {
                    pid,
                    unit: unit.to_owned(),
                    found,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The scope's directory in the host's cgroup2 mount.
    pub fn dir(&self) -> PathBuf {
        Path::new("/sys/fs/cgroup").join(self.cgroup.trim_start_matches('/'))
    }

    /// Root's run layout: moves `pid` (the runtime helper) into the scope's
    /// [`SUPERVISOR_LEAF`], so that the scope holds no process itself and its controllers
    /// can be enabled for the container's cgroup beside it.
    pub fn move_to_supervisor(&self, pid: u32) -> Result<(), SystemdError> {
        let leaf = self.dir().join(SUPERVISOR_LEAF);
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| SystemdError::Io { what, path, source }
        };
        match std::fs::create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("cannot create", &leaf)(e)),
        }
        let procs = leaf.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(io("cannot write", &procs))
    }

    /// The container's cgroup path in a root run's scope.
    pub fn container_cgroup(&self) -> String {
        format!("{}/{CONTAINER_LEAF}", self.cgroup)
    }
}

/// The cgroup2 path of `pid` (the `0::` line of `/proc/<pid>/cgroup`).
pub fn own_cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Root's per-run scopes: one system bus connection kept across the runs of a process (a
/// broken one is replaced once per call).
#[derive(Debug, Clone, Default)]
pub struct RunScopes {
    bus: Arc<Mutex<Option<Bus>>>,
}

impl RunScopes {
    /// Connects now, so that a host whose systemd does not answer is found before any run.
    pub fn connect() -> Result<Self, SystemdError> {
        let bus = system_bus()?;
        Ok(Self {
            bus: Arc::new(Mutex::new(Some(bus))),
        })
    }

    /// The scope of run `id`, holding `helper` (moved into its supervisor leaf).
    pub fn start(&self, id: &str, helper: u32) -> Result<Scope, SystemdError> {
        let unit = format!("dockless-{id}.scope");
        let description = format!("dockless run {id}");
        let mut guard = self.bus.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        for _ in 0..2 {
            let bus = match guard.as_mut() {
                Some(bus) => bus,
                None => guard.insert(system_bus()?),
            };
            match Scope::start_for(bus, &unit, Some(ROOT_SLICE), helper, &description) {
                Ok(scope) => {
                    scope.move_to_supervisor(helper)?;
                    return Ok(scope);
                }
                // A connection systemd closed (it was restarted, or timed us out): once more
                // on a new one.
                Err(e @ SystemdError::Io { .. }) => {
                    *guard = None;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| SystemdError::NoBus {
            which: "the system",
            tried: String::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unix_path_of_an_address_list() {
        assert_eq!(
            unix_path("unix:path=/run/user/1000/bus"),
            Some(PathBuf::from("/run/user/1000/bus"))
        );
        assert_eq!(
            unix_path("tcp:host=x;unix:guid=1,path=/a/b"),
            Some(PathBuf::from("/a/b"))
        );
        assert_eq!(unix_path("unix:abstract=/tmp/x"), None);
    }
}
