//! `dockless build`'s pipeline: a component image from a base image and a git commit.
//!
//! Steps: find or pull the base -> resolve the ref to a commit (every time: a moved tag or
//! branch is seen) -> the build cache (`<root>/builds-v1/<key>.json`, key = base digest +
//! commit + commands + entry point + working dir + network) -> on a miss: fetch the commit,
//! write the code layer into the store, run each build command on a private overlay of the
//! image so far and take its upper dir as the next layer -> config, manifest, image record ->
//! cache entry. The image record is written last, so a failed build leaves no image (the
//! layer blobs it stored stay, content-addressed, for the next attempt to reuse).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dockless_build::code_layer::write_code_layer;
use dockless_build::git::Remote;
use dockless_build::image::{
    BaseLayer, ConfigChanges, NewLayer, created_time, derive_config, manifest,
};
use dockless_build::layer::{EncodedLayer, LAYER_MEDIA_TYPE, LayerEncoder};
use dockless_build::{BuildNetwork, BuildSpec};
use dockless_registry::{Digest, ImageRecord, LayerRecord, Store};
use dockless_runtime::bundle::{ImageConfig, Limits, NetworkMode, RunSpec};
use dockless_runtime::container::{Runner, Stream};
use dockless_runtime::rootfs::{DiffOptions, MountMode, write_upper_as_layer};
use serde::{Deserialize, Serialize};

use crate::commands::Paths;
use crate::commands::pull::{pull_and_unpack, unpack};
use crate::settings::RegistryArgs;

/// Layers written by a build are refused beyond this size (the runtime's own layer limit).
const MAX_LAYER_BYTES: u64 = 64 << 30;

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

/// Age after which a fetch directory is known to be a killed build's leftover.
const STALE_FETCH: Duration = Duration::from_secs(24 * 3600);

/// Where the build commands run (where the code is).
const COMMAND_WORKDIR: &str = "/home";

/// How a build runs, besides its definition: naming, pulling, and the limits of the build
/// commands (the same knobs as a run's).
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The image name; default `localhost/build/<repository>:<commit prefix>`.
    pub tag: Option<String>,
    /// Platform of the base image when it must be pulled.
    pub platform: String,
    /// Registry settings for pulling the base.
    pub registry: RegistryArgs,
    /// Memory limit of each build command.
    pub memory: Option<i64>,
    /// CPU quota of each build command.
    pub cpus: Option<f64>,
    /// Wall-clock limit of each build command.
    pub timeout: Duration,
    /// Process limit of each build command.
    pub pids: i64,
    /// No progress lines on stderr (command output is still shown).
    pub quiet: bool,
}

/// What a build gave.
#[derive(Clone, Debug, Serialize)]
pub struct Built {
    /// The image's name in the local store.
    pub name: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// The commit the ref resolved to.
    pub commit: String,
    /// Whether the cache had it (nothing was built).
    pub cached: bool,
    /// The layers dockless made (code first), as stored.
    pub layers: Vec<Digest>,
    /// Seconds per step, in order.
    pub steps: Vec<(String, f64)>,
}

/// One entry of the build cache.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    digest: Digest,
    commit: String,
    layers: Vec<Digest>,
}

/// Builds (or finds in the cache) the image `spec` describes.
pub fn build(spec: &BuildSpec, options: &BuildOptions, paths: &Paths) -> anyhow::Result<Built> {
    spec.validate()?;
    let mut steps = Steps::new(options.quiet);
    let store = Store::open(paths.store())?;
    let base = base_image(&store, spec, options, paths)?;
    steps.done("base image", &base.name);

    let remote = Remote::new(
        &spec.repository,
        spec.username.clone(),
        spec.password.clone(),
    )?;
    let commit = remote.resolve(&spec.reference)?;
    steps.done("resolve ref", &format!("{} -> {commit}", spec.reference));

    let name = options
        .tag
        .clone()
        .unwrap_or_else(|| spec.default_image_name(&commit));
    let cache = BuildCache::lock(paths, &spec.cache_key(&base.digest.to_string(), &commit))?;
    if let Some((record, entry)) = cache.lookup(&store, &name)? {
        if record.name != name {
            store.record_image(ImageRecord {
                name: name.clone(),
                ..record.clone()
            })?;
        }
        steps.done("cache hit", &record.digest.to_string());
        return Ok(Built {
            name,
            digest: record.digest,
            commit,
            cached: true,
            layers: entry.layers,
            steps: steps.list,
        });
    }

    let fetched = remote.fetch(&commit, &cache.scratch()?)?;
    let commit_time = fetched.commit_time()?;
    steps.done("fetch commit", &remote.display());
    let mtime = u64::try_from(commit_time).unwrap_or(0);
    let (code, report) = store_layer(&store, "code layer", |out| {
        Ok(write_code_layer(&fetched, mtime, &spec.workdir, out)?)
    })?;
    drop(fetched);
    let mut layers = vec![(code, format!("dockless build: {commit} in /home/"))];
    let skipped = match report.skipped_submodules.as_slice() {
        [] => String::new(),
        paths => format!("; submodules left out: {}", paths.join(", ")),
    };
    steps.done(
        "code layer",
        &format!(
            "{} files, {} bytes{skipped}",
            report.files, report.content_bytes
        ),
    );

    let base_config = store.read_metadata(&base.config)?;
    // Not the commit's time: a command's layer must not change when only the code did.
    let command_mtime = created_time(&base_config).map_or(0, |t| u64::try_from(t).unwrap_or(0));
    for (index, command) in spec.commands.iter().enumerate() {
        let so_far = with_layers(&base, layers.iter().map(|(l, _)| l), &name);
        let step = CommandStep {
            command,
            index,
            network: spec.network,
            mtime: command_mtime,
        };
        let layer = run_command(paths, &store, &so_far, &base_config, &step, options)?;
        layers.push((layer, format!("dockless build: /bin/sh -c {command}")));
        steps.done(&format!("command {}", index + 1), command);
    }

    let record = write_image(
        &store,
        (&base, &base_config),
        &layers,
        spec,
        (&commit, commit_time),
        &name,
    )?;
    // Unpacked now, so the first run starts as fast as a pulled image's.
    unpack(&record, paths)?;
    store.record_image(record.clone())?;
    let layers: Vec<Digest> = layers.into_iter().map(|(l, _)| l.digest).collect();
    cache.record(&CacheEntry {
        digest: record.digest.clone(),
        commit: commit.clone(),
        layers: layers.clone(),
    })?;
    steps.done("image", &format!("{name} {}", record.digest));
    Ok(Built {
        name,
        digest: record.digest,
        commit,
        cached: false,
        layers,
        steps: steps.list,
    })
}

/// The base image from the store, or pulled (and unpacked) when it is not there.
fn base_image(
    store: &Store,
    spec: &BuildSpec,
    options: &BuildOptions,
    paths: &Paths,
) -> anyhow::Result<ImageRecord> {
    if let Some(record) = store.find_image(&spec.base)? {
        return Ok(record);
    }
    let progress = crate::progress::for_stderr(options.quiet);
    Ok(pull_and_unpack(
        &spec.base,
        &options.platform,
        &options.registry,
        paths,
        progress,
    )?
    .0)
}

/// Config and manifest of the base with `layers` (and their history lines) on top, with the
/// definition's entry point and working dir, `commit` as revision and `created` as time; both
/// stored. Returns the image's record (not yet recorded).
fn write_image(
    store: &Store,
    (base, base_config): (&ImageRecord, &[u8]),
    layers: &[(StoredLayer, String)],
    spec: &BuildSpec,
    (commit, created): (&str, i64),
    name: &str,
) -> anyhow::Result<ImageRecord> {
    let new_layers: Vec<NewLayer> = layers
        .iter()
        .map(|(l, created_by)| NewLayer {
            digest: l.digest.to_string(),
            size: l.size,
            diff_id: l.diff_id.to_string(),
            created_by: created_by.clone(),
        })
        .collect();
    let config = derive_config(
        base_config,
        &ConfigChanges {
            entrypoint: &spec.entrypoint,
            workdir: &spec.workdir,
            created,
            revision: commit,
            layers: &new_layers,
        },
    )?;
    let config_digest = store.put_metadata(&config)?;
    let base_layers: Vec<BaseLayer> = base
        .layers
        .iter()
        .map(|l| BaseLayer {
            digest: l.digest.to_string(),
            size: l.size,
            media_type: l.media_type.clone(),
        })
        .collect();
    let manifest = manifest(
        &config_digest.to_string(),
        config.len() as u64,
        &base_layers,
        &new_layers,
    );
    let mut record = with_layers(base, layers.iter().map(|(l, _)| l), name);
    record.digest = store.put_metadata(&manifest)?;
    record.config = config_digest;
    Ok(record)
}

/// The build cache directory, held locked for one key: one build per key at a time (the
/// second waits, then finds the first one's image).
struct BuildCache {
    dir: PathBuf,
    entry: PathBuf,
    _lock: std::fs::File,
}

impl BuildCache {
    fn lock(paths: &Paths, key: &str) -> anyhow::Result<BuildCache> {
        let dir = paths.root.join("builds-v1");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let lock_path = dir.join(format!("{key}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        Ok(BuildCache {
            entry: dir.join(format!("{key}.json")),
            dir,
            _lock: lock,
        })
    }

    /// Where fetches make their private repositories (each removed when its build ends).
    /// Those a killed build left are removed once a day old: no fetch lives that long.
    fn scratch(&self) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join("tmp");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_FETCH);
            if stale && let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(
                    path = %entry.path().display(),
                    error = %e,
                    "cannot remove what a killed build left"
                );
            }
        }
        Ok(dir)
    }

    /// The cached image, when the entry exists and its image is still stored (preferably
    /// under `name`). By digest over the index, not with `find_image`, whose reference
    /// parsing costs ~50 ms of regex compilation: a hit must cost no more than a lookup.
    fn lookup(
        &self,
        store: &Store,
        name: &str,
    ) -> anyhow::Result<Option<(ImageRecord, CacheEntry)>> {
        let bytes = match std::fs::read(&self.entry) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.entry.display()));
            }
        };
        // A damaged entry is a miss: the build makes it again.
        let Ok(entry) = serde_json::from_slice::<CacheEntry>(&bytes) else {
            return Ok(None);
        };
        let images = store.images()?;
        let found = images
            .get(name)
            .filter(|r| r.digest == entry.digest)
            .or_else(|| images.values().find(|r| r.digest == entry.digest))
            .cloned();
        Ok(found.map(|r| (r, entry)))
    }

    /// Writes the entry atomically (temp file + rename).
    fn record(&self, entry: &CacheEntry) -> anyhow::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)
            .with_context(|| format!("cannot create a temp file in {}", self.dir.display()))?;
        tmp.write_all(&serde_json::to_vec_pretty(entry)?)
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
        tmp.persist(&self.entry)
            .with_context(|| format!("cannot write {}", self.entry.display()))?;
        Ok(())
    }
}

/// A layer written by the build, as stored.
struct StoredLayer {
    digest: Digest,
    size: u64,
    diff_id: Digest,
}

/// The base image with `layers` on top, under `name` (digest and config still the base's:
/// good for unpacking and mounting; [`write_image`] sets its own).
fn with_layers<'a>(
    base: &ImageRecord,
    layers: impl Iterator<Item = &'a StoredLayer>,
    name: &str,
) -> ImageRecord {
    let mut record = base.clone();
    record.name = name.to_owned();
    record.index_digest = None;
    record.created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for l in layers {
        record.layers.push(LayerRecord {
            digest: l.digest.clone(),
            size: l.size,
            media_type: LAYER_MEDIA_TYPE.to_owned(),
        });
        record.diff_ids.push(l.diff_id.clone());
    }
    record
}

/// Writes a layer's tar (from `write`, on a thread) gzipped into the store through a pipe:
/// the blob is hashed as it is staged, the tar as it is written; nothing enters the store
/// unless both sides finished.
fn store_layer<R: Send>(
    store: &Store,
    what: &str,
    write: impl FnOnce(&mut LayerEncoder<std::io::PipeWriter>) -> anyhow::Result<R> + Send,
) -> anyhow::Result<(StoredLayer, R)> {
    let (mut reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || -> anyhow::Result<(EncodedLayer, R)> {
            let mut encoder = LayerEncoder::new(writer);
            let made = write(&mut encoder)?;
            let (encoded, writer) = encoder.finish().context("cannot end the gzip stream")?;
            drop(writer); // EOF for the stager
            Ok((encoded, made))
        });
        let staged = store.stage(&mut reader, MAX_LAYER_BYTES, what);
        drop(reader); // a writer still going gets EPIPE instead of blocking
        let produced = producer
            .join()
            .map_err(|_| anyhow::anyhow!("the {what} writer panicked"))?;
        // Checked first: a writer that failed closed the pipe early, so the staged blob is
        // a truncated one (dropped here, never committed).
        let (encoded, made) = produced.with_context(|| format!("cannot write the {what}"))?;
        let staged = staged?;
        let size = staged.size;
        let digest = staged.commit(store)?;
        Ok((
            StoredLayer {
                digest,
                size,
                diff_id: Digest::parse(&encoded.diff_id)?,
            },
            made,
        ))
    })
}

/// One build command and how its layer is written.
struct CommandStep<'a> {
    command: &'a str,
    /// From 0, in the definition's order.
    index: usize,
    network: BuildNetwork,
    /// The time every entry of its layer gets.
    mtime: u64,
}

/// Runs one build command on a private overlay of `so_far` and stores its upper dir as a
/// layer; a command that fails leaves nothing but its output in the error.
fn run_command(
    paths: &Paths,
    store: &Store,
    so_far: &ImageRecord,
    base_config: &[u8],
    step: &CommandStep<'_>,
    options: &BuildOptions,
) -> anyhow::Result<StoredLayer> {
    let command = step.command;
    let what = format!("build command {} ({command:?})", step.index + 1);
    unpack(so_far, paths)?;
    let chains = crate::commands::images::chains(so_far)?;
    let image = ImageConfig::from_image_config_json(base_config).context("base image config")?;
    let snapshots = crate::commands::pull::snapshots(paths)?;
    let slot = crate::commands::gc::RootfsSlot::claim(paths)?;
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
    spec.network = match step.network {
        BuildNetwork::None => NetworkMode::None,
        BuildNetwork::Host => NetworkMode::Host,
    };
    let exe = std::env::current_exe().context("cannot find the dockless executable")?;
    let runner = Runner::new(exe, [crate::commands::HELPER_COMMAND], paths.containers());
    let result = runner.run(rootfs.path(), &spec, &mut |_: Stream, bytes: &[u8]| {
        let _ = std::io::stderr().lock().write_all(bytes);
    });
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = rootfs.release();
            slot.release();
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
        let released = rootfs.release();
        slot.release();
        released.context("cannot remove the build command's root filesystem")?;
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
    let released = rootfs.release();
    slot.release();
    let (layer, _) = layer?;
    released.context("cannot remove the build command's root filesystem")?;
    Ok(layer)
}

/// Progress lines and step times.
struct Steps {
    quiet: bool,
    last: Instant,
    list: Vec<(String, f64)>,
}

impl Steps {
    fn new(quiet: bool) -> Steps {
        Steps {
            quiet,
            last: Instant::now(),
            list: Vec::new(),
        }
    }

    fn done(&mut self, step: &str, detail: &str) {
        let secs = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        if !self.quiet {
            eprintln!("build: {step}: {detail} ({secs:.2} s)");
        }
        self.list.push((step.to_owned(), secs));
    }
}
