//! `dockless build`'s pipeline: a component image from a base image and a git commit.
//!
//! Steps: find or pull the base -> resolve the ref to a commit (every time: a moved tag or
//! branch is seen) -> the build cache (`<root>/builds-v1/<key>.json`, key = base digest +
//! commit + commands + entry point + working dir + network) -> on a miss: fetch the commit,
//! write the code layer into the store, run each build command on a private overlay of the
//! image so far and take its upper dir as the next layer -> config, manifest, image record ->
//! cache entry. The image record is written last, so a failed build leaves no image (the
//! layer blobs it stored stay, content-addressed, for the next attempt to reuse).

mod command;
pub mod proxy;
mod store_layer;

use std::time::{Duration, Instant};

use dockless_builder::BuildSpec;
use dockless_builder::cache::{BuildCache, CacheEntry};
use dockless_builder::code_layer::write_code_layer;
use dockless_builder::git::Remote;
use dockless_builder::image::{
    BaseLayer, ConfigChanges, NewLayer, created_time, derive_config, manifest,
};
use dockless_builder::layer::LAYER_MEDIA_TYPE;
use dockless_registry::{Digest, ImageRecord, LayerRecord, Store};
use serde::Serialize;

use crate::paths::Paths;
use crate::stages::pull::{pull_and_unpack, snapshots, unpack};
use command::{CommandStep, run_command};
use store_layer::{StoredLayer, store_layer};

/// How a build runs, besides its definition: naming, pulling, and the limits of the build
/// commands (the same knobs as a run's).
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The image name; default `localhost/build/<repository>:<commit prefix>`.
    pub tag: Option<String>,
    /// Platform of the base image when it must be pulled.
    pub platform: String,
    /// Registry settings for pulling the base.
    pub registry: dockless_registry::Settings,
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
    /// Pass the host's proxy variables to build commands that have a network.
    pub http_proxy: bool,
    /// A CA bundle (absolute, see [`proxy::ca_file`]) bound into the build commands.
    pub ca_file: Option<std::path::PathBuf>,
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
    /// The build commands' network: `none`, `bridge` or `host`.
    pub network: &'static str,
    /// The layers dockless made (code first), as stored.
    pub layers: Vec<Digest>,
    /// Seconds per step, in order.
    pub steps: Vec<(String, f64)>,
}

/// Builds (or finds in the cache) the image `spec` describes.
pub fn build(spec: &BuildSpec, options: &BuildOptions, paths: &Paths) -> anyhow::Result<Built> {
    spec.validate()?;
    let mut steps = Steps::new(options.quiet);
    let store = Store::open(paths.store())?;
    let base = base_image(&store, spec, options, paths)?;
    // Its snapshots tell which working-dir components it has already.
    let snapshots = snapshots(paths)?;
    let base_layers: Vec<std::path::PathBuf> = unpack(&base, paths)?
        .iter()
        .map(|l| snapshots.snapshot_dir(&l.chain_id))
        .collect();
    steps.done("base image", &base.name);

    let remote = Remote::new(
        &spec.repository,
        spec.username.clone(),
        spec.password.clone(),
    )?;
    let commit = remote.resolve(&spec.reference)?;
    steps.done("resolve ref", &format!("{} -> {commit}", spec.reference));

    let key = spec.cache_key(&base.digest.to_string(), &commit);
    let name = options
        .tag
        .clone()
        .unwrap_or_else(|| spec.default_image_name(&commit, &key));
    let cache = BuildCache::lock(&paths.root, &key)?;
    if let Some((record, layers)) = cached_image(&cache, &store, &name)? {
        if remote.is_pinned_id(&spec.reference) {
            // A commit id given as it is was not checked against the remote: a hit must still
            // prove that the repository serves it to these credentials.
            remote.fetch(&commit, &cache.scratch()?)?;
        }
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
            network: command::network_mode(spec.network).name(),
            layers,
            steps: steps.list,
        });
    }

    let fetched = remote.fetch(&commit, &cache.scratch()?)?;
    // A tag object's id given as the ref names its commit from here on (label, history).
    let commit = fetched.commit().to_owned();
    let commit_time = fetched.commit_time()?;
    steps.done("fetch commit", &remote.display());
    let mtime = u64::try_from(commit_time).unwrap_or(0);
    let (code, report) = store_layer(&store, "code layer", |out| {
        Ok(write_code_layer(
            &fetched,
            mtime,
            &spec.workdir,
            &|path| in_image(&base_layers, path),
            out,
        )?)
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
    let layers: Vec<Digest> = layers.into_iter().map(|(l, _)| l.digest).collect();
    // The cache entry first: a build that fails must not leave an image behind, and an entry
    // whose image is missing is only a miss.
    cache.record(&CacheEntry {
        digest: record.digest.to_string(),
        commit: commit.clone(),
        layers: layers.iter().map(Digest::to_string).collect(),
    })?;
    store.record_image(record.clone())?;
    steps.done("image", &format!("{name} {}", record.digest));
    Ok(Built {
        name,
        digest: record.digest,
        commit,
        cached: false,
        network: command::network_mode(spec.network).name(),
        layers,
        steps: steps.list,
    })
}

/// The image the cache names for this key, when it is still stored (preferably under
/// `name`), with the layers the build made. By digest over the index, not with `find_image`,
/// whose reference parsing costs ~50 ms of regex compilation: a hit must cost no more than a
/// lookup. An entry whose digests do not parse is damaged: a miss, as one that is not JSON.
fn cached_image(
    cache: &BuildCache,
    store: &Store,
    name: &str,
) -> anyhow::Result<Option<(ImageRecord, Vec<Digest>)>> {
    let Some(entry) = cache.entry()? else {
        return Ok(None);
    };
    let (Ok(digest), Ok(layers)) = (
        Digest::parse(&entry.digest),
        entry
            .layers
            .iter()
            .map(|l| Digest::parse(l))
            .collect::<Result<Vec<_>, _>>(),
    ) else {
        return Ok(None);
    };
    let images = store.images()?;
    let found = images
        .get(name)
        .filter(|r| r.digest == digest)
        .or_else(|| images.values().find(|r| r.digest == digest))
        .cloned();
    Ok(found.map(|r| (r, layers)))
}

/// Whether `path` (relative, no leading `/`) exists in the image whose snapshot directories
/// are `layers` (bottom up) as they merge, so that
/// the code layer does not write a directory over it. Each layer is looked at component by
/// component, from the top layer down, never resolving a link on the host: a whiteout at any
/// component means absent; a link or a non-directory at a component counts as present (the
/// base has something there that a directory entry must not replace); a component a layer
/// lacks leaves the question to the layers below. (Opaque directories are not consulted: a
/// path one of them hid is taken as present, and the working dir is then not created.)
fn in_image(layers: &[std::path::PathBuf], path: &str) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for layer in layers.iter().rev() {
        let mut at = layer.clone();
        for (i, component) in components.iter().enumerate() {
            at.push(component);
            let Ok(meta) = std::fs::symlink_metadata(&at) else {
                break; // not in this layer: the layers below decide
            };
            let file_type = meta.file_type();
            if file_type.is_char_device() && meta.rdev() == 0 {
                return false; // whited out here
            }
            if !file_type.is_dir() || i + 1 == components.len() {
                return true;
            }
        }
    }
    false
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
