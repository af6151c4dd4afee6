//! A minimal embedder of the runtime, for integration tests and the warm-run benchmark:
//! `probe __helper` is the helper process; `probe run [OPTIONS] -- CMD...` runs CMD in a
//! rootfs directory through [`Runner`], re-executing itself as the helper (exactly what the
//! `dockless` binary does with its hidden subcommand).
//!
//! Options: `--rootfs DIR` (required), `--state DIR` (required), `--cgroup-parent NAME`,
//! `--data DIR`, `--timeout-ms N`, `--memory BYTES`, `--pids N`, `--network none|host`,
//! `--read-only`, `--seccomp-profile FILE`, `--seccomp-compat-arches`.
//! `probe spec [OPTIONS] -- CMD...` prints the config.json such a run would use. Prints the container's output as it comes and exits with its exit code.

#![allow(clippy::print_stderr)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use dockless_runtime::bundle::{ImageConfig, NetworkMode, RunSpec};
use dockless_runtime::container::{Runner, Stream, helper_main};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__helper") => helper_main(),
        Some("spec") => match print_spec(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("probe: {msg}");
                ExitCode::from(125)
            }
        },
        Some("run") => match run(&args[1..]) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("probe: {msg}");
                ExitCode::from(125)
            }
        },
        _ => {
            eprintln!("usage: dockless-runtime-probe run --rootfs DIR --state DIR [...] -- CMD...");
            ExitCode::from(125)
        }
    }
}

/// `spec [OPTIONS] -- CMD...`: prints the config.json a run would use (with cgroups path
/// `/<cgroup-parent>/spec`), so other runtimes can be benchmarked on the same bundle.
fn print_spec(args: &[String]) -> Result<(), String> {
    let (rootfs, _, parent, spec) = parse(args)?;
    let oci = dockless_runtime::bundle::build_spec(&rootfs, &spec, &format!("/{parent}/spec"))
        .map_err(|e| with_causes(&e))?;
    let json = serde_json::to_string_pretty(&oci).map_err(|e| with_causes(&e))?;
    #[allow(clippy::print_stdout)]
    {
        println!("{json}");
    }
    Ok(())
}

type Parsed = (PathBuf, Option<PathBuf>, String, RunSpec);

fn parse(args: &[String]) -> Result<Parsed, String> {
    let split = args
        .iter()
        .position(|a| a == "--")
        .ok_or("missing -- CMD")?;
    let (opts, cmd) = (&args[..split], &args[split + 1..]);
    let mut rootfs = None;
    let mut state = None;
    let mut parent = "dockless".to_owned();
    let mut spec = RunSpec::new(ImageConfig::default());
    spec.command = Some(cmd.to_vec());
    let mut it = opts.iter();
    while let Some(opt) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{opt} needs a value"));
        match opt.as_str() {
            "--rootfs" => rootfs = Some(PathBuf::from(value()?)),
            "--state" => state = Some(PathBuf::from(value()?)),
            "--cgroup-parent" => parent = value()?,
            "--data" => spec.data_dir = Some(PathBuf::from(value()?)),
            "--timeout-ms" => {
                spec.timeout = Some(Duration::from_millis(
                    value()?.parse().map_err(|e| format!("--timeout-ms: {e}"))?,
                ))
            }
            "--memory" => {
                spec.limits.memory_bytes =
                    Some(value()?.parse().map_err(|e| format!("--memory: {e}"))?)
            }
            "--pids" => {
                spec.limits.pids = Some(value()?.parse().map_err(|e| format!("--pids: {e}"))?)
            }
            "--network" => {
                spec.network = match value()?.as_str() {
                    "none" => NetworkMode::None,
                    "host" => NetworkMode::Host,
                    "bridge" => NetworkMode::Bridge,
                    other => return Err(format!("unknown network mode {other}")),
                }
            }
            "--read-only" => spec.read_only_rootfs = true,
            "--seccomp-profile" => spec.seccomp_profile = Some(PathBuf::from(value()?)),
            "--seccomp-compat-arches" => spec.seccomp_compat_arches = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    let rootfs = rootfs.ok_or("--rootfs is required")?;
    Ok((rootfs, state, parent, spec))
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let (rootfs, state, parent, spec) = parse(args)?;
    let state = state.ok_or("--state is required")?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let runner = Runner::new(exe, ["__helper"], state).with_cgroup_parent(parent);
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let result = runner
        .run(&rootfs, &spec, &mut |stream, chunk| {
            let _ = match stream {
                Stream::Stdout => out.write_all(chunk),
                Stream::Stderr => err.write_all(chunk),
            };
        })
        .map_err(|e| with_causes(&e))?;
    if result.timed_out {
        eprintln!("probe: timed out");
    }
    if result.oom_killed {
        eprintln!("probe: oom killed");
    }
    Ok(ExitCode::from(result.exit_code.clamp(0, 255) as u8))
}

/// `err` and its causes, outermost first, for the one line this probe prints on failure.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}
