//! `dockless pull IMAGE`: fetch an image into the local store.

use std::process::ExitCode;

use dockless_registry::Store;

use crate::cli::pull::PullArgs;
use crate::paths::Paths;
use crate::stages::pull::{pull, pull_and_unpack};

/// Pulls (and unpacks, unless asked not to) and prints the manifest digest on stdout.
pub fn run(args: PullArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let progress = crate::progress::for_stderr(args.quiet);
    let store = Store::open(paths.store())?;
    let registry = args.registry.resolve()?;
    if args.no_unpack {
        let record = pull(&args.image, &args.platform, &registry, &store, progress)?;
        println!("{}", record.digest);
        return Ok(ExitCode::SUCCESS);
    }
    let (record, unpacked) =
        pull_and_unpack(&args.image, &args.platform, &registry, paths, progress)?;
    if !args.quiet {
        eprintln!(
            "{}: {} of {} layers unpacked, {:.2} s in all",
            record.name,
            unpacked.iter().filter(|l| l.unpacked.is_some()).count(),
            unpacked.len(),
            started.elapsed().as_secs_f64()
        );
    }
    println!("{}", record.digest);
    Ok(ExitCode::SUCCESS)
}
