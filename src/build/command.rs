//! One build command: a container on a private overlay of the image so far, its overlay
//! upper dir stored as the next layer.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use dockless_builder::BuildNetwork;
use dockless_registry::{ImageRecord, Store};
use dockless_runtime::bundle::{ImageConfig, Limits, NetworkMode, RunSpec};
use dockless_runtime::container::Stream;
use dockless_runtime::rootfs::{DiffOptions, MountMode, write_upper_as_layer};

use super::BuildOptions;
use super::store_layer::{StoredLayer, store_layer};
use crate::paths::Paths;
use crate::stages::container::runner;
use crate::stages::pull::{chains, snapshots, unpack};

/// Mount points the runtime may create in a build command's rootfs: not part of its layer
/// when they are left empty.
const MOUNT_POINTS: [&str; 7] = [
    "proc",
    "sys",
    "dev",
    "tmp",
    "data",
    "etc/resolv.conf",
    "etc/hosts",
];

/// Where the build commands run (where the code is).
const COMMAND_WORKDIR: &str = "/home";

/// One build command and how its layer is written.
pub(super) struct CommandStep<'a> {
    /// The shell command line.
    pub(super) command: &'a str,
    /// From 0, in the definition's order.
    pub(super) index: usize,
    /// The command's network.
    pub(super) network: BuildNetwork,
    /// The time every entry of its layer gets.
    pub(super) mtime: u64,
}

/// Runs one build command on a private overlay of `so_far` and stores its upper dir as a
/// layer; a command that fails leaves nothing but its output in the error.
pub(super) fn run_command(
    paths: &Paths,
    store: &Store,
    so_far: &ImageRecord,
    base_config: &[u8],
    step: &CommandStep<'_>,
    options: &BuildOptions,
) -> anyhow::Result<StoredLayer> {
    let command = step.command;
    let what = format!("build command {} ({command:?})", step.index + 1);
    let chains = chains(so_far)?;
    let snapshots = snapshots(paths)?;
    // The image so far is in no image record yet: leased, so that a `gc` or `rmi` sweeping
    // meanwhile keeps its layers, from the unpack until the run has its own lease.
    let _lease = snapshots.lease(&chains)?;
    unpack(so_far, paths)?;
    let image = ImageConfig::from_image_config_json(base_config).context("base image config")?;
    let runner = runner(paths)?;
    // From the claim on, every path releases the slot and the rootfs.
    let slot = paths.run_slots().claim()?;
    let rootfs = match snapshots.mount_run(&chains, slot.dir(), MountMode::OverlayOnly) {
        Ok(rootfs) => rootfs,
        Err(e) => {
            slot.release(); // the failed mount removed its own directory
            return Err(e).with_context(|| {
                format!("{what}: build commands need an overlay root filesystem")
            });
        }
    };
    let mut spec = RunSpec::new(image);
    spec.entrypoint = Some(vec!["/bin/sh".into(), "-c".into(), command.to_owned()]);
    spec.workdir = Some(COMMAND_WORKDIR.to_owned());
    spec.limits = Limits {
        memory_bytes: options.memory,
        cpus: options.cpus,
        pids: Some(options.pids),
        ..Limits::default()
    };
    spec.timeout = Some(options.timeout);
    spec.network = network_mode(step.network);
    super::proxy::apply(&mut spec, options.http_proxy, options.ca_file.as_deref());
    let spec = crate::rootless::enforceable(&spec);
    let result = runner.run(rootfs.path(), &spec, &mut |_: Stream, bytes: &[u8]| {
        let _ = std::io::stderr().lock().write_all(bytes);
    });
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = release(rootfs, slot);
            return Err(e).with_context(|| format!("cannot run {what}"));
        }
    };
    let failure = if result.timed_out {
        Some(format!("timed out after {:?}", options.timeout))
    } else if result.oom_killed {
        Some(format!(
            "ran out of memory (limit {} bytes)",
            options.memory.unwrap_or(0)
        ))
    } else if result.exit_code != 0 {
        Some(format!("exited with code {}", result.exit_code))
    } else {
        None
    };
    if let Some(failure) = failure {
        release(rootfs, slot)?;
        let output = result.stderr.to_string_lossy();
        let output = if output.trim().is_empty() {
            result.stdout.to_string_lossy()
        } else {
            output
        };
        bail!("{what} {failure}; its output:\n{}", output.trim_end());
    }
    let options = DiffOptions {
        fixed_mtime: Some(step.mtime),
        mount_points: MOUNT_POINTS.iter().map(PathBuf::from).collect(),
        ..DiffOptions::default()
    };
    let layer = rootfs
        .upper_dir()
        .map_err(anyhow::Error::from)
        .and_then(|upper| {
            store_layer(store, &what, |out| {
                write_upper_as_layer(&upper, &options, out)?;
                Ok(())
            })
        });
    let released = release(rootfs, slot);
    let (layer, _) = layer?;
    released?;
    Ok(layer)
}

/// Removes the command's rootfs; its slot is given up only once that worked, so that `gc`
/// finds a rootfs that could not be removed (an abandoned slot) instead of losing track of it.
fn release(
    rootfs: dockless_runtime::rootfs::RunRootfs,
    slot: dockless_runtime::rootfs::RootfsSlot,
) -> anyhow::Result<()> {
    rootfs
        .release()
        .context("cannot remove the build command's root filesystem")?;
    slot.release();
    Ok(())
}

/// The runtime's network mode for a build's `network`.
pub(super) fn network_mode(network: BuildNetwork) -> NetworkMode {
    match network {
        BuildNetwork::None => NetworkMode::None,
        BuildNetwork::Host => NetworkMode::Host,
        BuildNetwork::Bridge => NetworkMode::Bridge,
    }
}
