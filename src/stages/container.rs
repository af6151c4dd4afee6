//! Running one container: a private rootfs for the run (overlay over the snapshots, in a
//! locked slot) -> bundle + container through the runtime's helper process -> output handed
//! on as it arrives -> rootfs and slot removed. Shared by `dockless run`, the job pipeline and
//! the build commands' runner.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::Context as _;
use dockless_runtime::bundle::{NetworkMode, RunSpec};
use dockless_runtime::container::{ListenSocket, RunResult, Runner, Stream};
use dockless_runtime::rootfs::{MountMode, RootfsKind, SnapshotStore};

use super::pull::{chains, snapshots, unpack_shifted};
use crate::paths::Paths;

/// The hidden subcommand that makes this binary the runtime's single-threaded helper: the
/// runner re-executes the binary with it, the CLI declares it.
pub const HELPER_COMMAND: &str = "__runtime-helper";

/// Gives the run its own rootfs, runs the container, removes the rootfs; shared with the job
/// pipeline. With `stream`, the container's output goes to ours as it arrives.
pub fn run_container(
    paths: &Paths,
    record: &dockless_registry::ImageRecord,
    spec: &RunSpec,
    stream: bool,
) -> anyhow::Result<RunResult> {
    run_container_with(paths, record, spec, &mut |which: Stream, bytes: &[u8]| {
        if !stream {
            return;
        }
        let _ = match which {
            Stream::Stdout => std::io::stdout().lock().write_all(bytes),
            Stream::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    })
}

/// [`run_container`] with the output handed to `on_output` chunk by chunk as it arrives.
pub fn run_container_with(
    paths: &Paths,
    record: &dockless_registry::ImageRecord,
    spec: &RunSpec,
    on_output: &mut dyn FnMut(Stream, &[u8]),
) -> anyhow::Result<RunResult> {
    run_container_listening(paths, record, spec, &[], &mut |_| {}, on_output)
}

/// [`run_container_with`] with `listen` sockets made in the container's network namespace
/// before it starts and handed to `on_listening` (see [`Runner::run_listening`]).
pub fn run_container_listening(
    paths: &Paths,
    record: &dockless_registry::ImageRecord,
    spec: &RunSpec,
    listen: &[ListenSocket],
    on_listening: &mut dyn FnMut(Vec<OwnedFd>),
    on_output: &mut dyn FnMut(Stream, &[u8]),
) -> anyhow::Result<RunResult> {
    let chains = chains(record)?;
    let slots = paths.run_slots();
    let snapshots = match spec.userns {
        Some(shift) => {
            // Everything that could refuse the run first: the user's --data is only handed
            // to the range (by the runtime, just before the container starts) for a run that
            // goes ahead.
            anyhow::ensure!(
                spec.network != NetworkMode::Host,
                "--userns cannot be combined with --network host: the host's network \
                 namespace belongs to the host's user namespace"
            );
            // The run dir's parents (the same for every slot).
            let slot_example = slots.dir().join("run");
            for dir in [
                Some(slot_example.as_path()),
                spec.data_dir.as_deref(),
                host_tmp(spec),
            ]
            .into_iter()
            .flatten()
            {
                crate::rootless::check_searchable(dir, shift.base)?;
            }
            // The same layers with owners shifted into the namespace's range, once per range.
            unpack_shifted(record, paths, shift)?;
            SnapshotStore::open_shifted(&paths.root, shift)?
        }
        None => snapshots(paths)?,
    };
    let slot = slots.claim()?;
    let rootfs = snapshots
        .mount_run(&chains, slot.dir(), MountMode::OverlayOrCopy)
        .context("cannot prepare the container's root filesystem")?;
    if let RootfsKind::Copy { reason } = rootfs.kind() {
        eprintln!(
            "dockless: overlay unavailable ({reason}); running on a flattened copy of the image"
        );
    }
    let api = rootfs.mount_api().map_or("copy", |api| api.name());
    let _ = LAST_MOUNT_API.set(api);
    tracing::debug!(
        mount_api = api,
        cgroup_manager = crate::cgroups::name(),
        "container rootfs and cgroups"
    );
    let result = runner(paths)?.run_listening(
        rootfs.path(),
        &crate::rootless::enforceable(spec),
        listen,
        on_listening,
        on_output,
    );
    let released = rootfs.release();
    if released.is_ok() {
        // Also when the run failed: the rootfs is gone, so the slot is free.
        slot.release();
    }
    let result = result.with_context(|| format!("cannot run {}", record.name))?;
    released.context("cannot remove the container's root filesystem")?;
    Ok(result)
}

/// How this process's first run mounted its rootfs (`fsconfig`, `mount(2)`, ..., `copy`):
/// the kernel decides, so every run of a process takes the same way.
static LAST_MOUNT_API: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The way the runs of this process mounted their rootfs (see [`dockless_runtime::MountApi`]),
/// once one ran; for `--json`.
pub fn mount_api() -> Option<&'static str> {
    LAST_MOUNT_API.get().copied()
}

/// The runtime's runner for this process: the binary re-executed as the helper, and, in a
/// rootless session with a delegated cgroup subtree, its cgroups placed there. Pair every
/// spec with [`crate::rootless::enforceable`].
pub fn runner(paths: &Paths) -> anyhow::Result<Runner> {
    let exe = std::env::current_exe().context("cannot find the dockless executable")?;
    // `DOCKLESS_PASTA` names the pasta of `--network bridge` runs (default: found on PATH).
    let mut runner = Runner::new(exe, [HELPER_COMMAND], paths.containers())
        .with_pasta(std::env::var_os("DOCKLESS_PASTA").map(std::path::PathBuf::from))
        .with_systemd_scopes(crate::cgroups::run_scopes());
    if let Some((fd, grace)) = crate::signals::stop() {
        // `dockless run` handles SIGTERM, SIGINT and SIGHUP: the container is stopped.
        runner = runner.with_stop(fd, grace);
    }
    Ok(match crate::rootless::delegated_cgroup_parent() {
        Some(parent) => runner.with_cgroup_parent(parent).with_own_v1_limits(true),
        None => runner,
    })
}

/// The host directory bound at `/tmp`, if any.
fn host_tmp(spec: &RunSpec) -> Option<&Path> {
    match &spec.tmp {
        dockless_runtime::bundle::TmpMount::HostDir(dir) => Some(dir),
        dockless_runtime::bundle::TmpMount::Tmpfs => None,
    }
}
