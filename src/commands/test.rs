//! `dockless test [IMAGE] DIR`: the cases of a functional test folder against an image (built
//! first with `--build`); see [`crate::functional`]. Exit 0 only when every case passed, 1
//! otherwise, 128 + the signal when stopped.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dockless_registry::Store;

use crate::build::BuildOptions;
use crate::cli::test::TestArgs;
use crate::functional::report::{Counts, Report, case_line, summary};
use crate::functional::{self, Outcome, Settings, cases};
use crate::paths::Paths;
use crate::stages::pull::{image_config, pull_and_unpack, unpack};

/// Finds the cases, builds or finds the image, runs the cases, reports.
pub fn run(args: TestArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let (image, dir) = args.image_and_dir().map_err(anyhow::Error::msg)?;
    if let Some(grace) = args.stop_timeout {
        crate::signals::set_grace(grace);
    }
    anyhow::ensure!(
        args.build || args.source.is_none(),
        "--base, --repo, --ref and --entrypoint describe a build: add --build"
    );
    // Before a build: a wrong folder or case name should not cost one.
    let cases = cases::discover(&dir, &args.cases)?;
    let registry = args.registry.resolve()?;
    let image = match image {
        Some(image) => image,
        None => {
            let source = args
                .source
                .context("--build needs --base, --repo, --ref and --entrypoint")?;
            let (spec, tag) = super::build::spec(source, args.build_network)?;
            let options = BuildOptions {
                tag,
                platform: args.platform.clone(),
                registry: registry.clone(),
                memory: None,
                cpus: None,
                timeout: args.build_timeout,
                pids: args.pids_limit,
                quiet: false,
                http_proxy: args.proxy.http_proxy,
                ca_file: super::build::ca_file(&args.proxy)?,
            };
            let built = crate::build::build(&spec, &options, paths)?;
            eprintln!("dockless: testing {} ({})", built.name, built.digest);
            built.name
        }
    };
    crate::stages::gc::collect_before_run(paths);
    let settings = Settings {
        component_id: args
            .component_id
            .clone()
            .unwrap_or_else(|| super::job::repository_name(&image)),
        env: args.env.clone(),
        run_id: super::job::new_run_id(),
        memory: args.memory.unwrap_or(256 << 20),
        cpus: args.cpus,
        pids: args.pids_limit,
        timeout: args.timeout.unwrap_or(Duration::from_secs(3600)),
        network: args.network.into(),
        userns: crate::rootless::userns_range(args.userns)?,
        keep: args.keep,
        jobs: usize::from(args.jobs),
    };
    anyhow::ensure!(
        !settings.timeout.is_zero(),
        "--timeout must be a positive number of seconds, not 0"
    );
    let json = args.json;
    let show = |outcome: &Outcome| {
        // Lines go where the JSON does not; a closed stream must not stop the run.
        let line = case_line(outcome);
        let _ = if json {
            std::io::stderr().lock().write_all(line.as_bytes())
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        };
    };
    let started = Instant::now();
    let outcomes = match find_image(&image, &args.platform, &registry, paths) {
        Ok((record, config)) => functional::run(&settings, &cases, &record, &config, paths, &show),
        Err(e) => {
            // Every case reports why none could run.
            let message = format!("image {image}: {e:#}");
            cases
                .iter()
                .map(|case| {
                    let outcome = functional::not_run(&case.name, &message);
                    show(&outcome);
                    outcome
                })
                .collect()
        }
    };
    let counts = Counts::of(&outcomes);
    let text = summary(counts, started.elapsed().as_secs_f64());
    if json {
        let report = Report {
            image: &image,
            cases: &outcomes,
            counts,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
        let _ = writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&report)?
        );
    } else {
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
    if let Some(signal) = crate::signals::received() {
        return Ok(ExitCode::from(signal.exit_status()));
    }
    Ok(if counts.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The stored image (pulled when not stored), unpacked, and its config.
fn find_image(
    image: &str,
    platform: &str,
    registry: &dockless_registry::Settings,
    paths: &Paths,
) -> anyhow::Result<(
    dockless_registry::ImageRecord,
    dockless_runtime::bundle::ImageConfig,
)> {
    let store = Store::open(paths.store())?;
    let record = match store.find_image(image)? {
        Some(record) => {
            unpack(&record, paths)?;
            record
        }
        None => {
            let progress = crate::progress::for_stderr(false);
            pull_and_unpack(image, platform, registry, paths, progress)?.0
        }
    };
    let config = image_config(&store, &record)?;
    Ok((record, config))
}
