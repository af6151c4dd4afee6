//! Running the job's images in order: before-processors, the main image, after-processors,
//! each its own container with its own config.json and `KBC_COMPONENTID`, `out/` rotated to
//! `in/` between them (contract §9), each exit classified as Keboola does.

use dockless_registry::ImageRecord;
use dockless_runtime::bundle::{ImageConfig, Limits, RunSpec, TmpMount};
use dockless_runtime::container::Stream;
use dockless_staging::{DataDir, Job};
use serde_json::Value;

use super::classify::{self, Class, ContainerEnd};
use super::environment::{self, Identity};
use super::gelf::LoggingType;
use super::gelf::logserver::LogServer;
use super::output::{self, Tee};
use super::processors::{Processor, ProcessorSpec};
use super::result::{ContainerRun, ms};
use super::workdir::WorkDir;
use super::{Failure, Pipeline, TAIL_CHARS};

impl Pipeline<'_> {
    /// Runs the images in order, rotating `out/` to `in/` between them; the first failure
    /// stops the chain.
    pub(super) fn run_steps(
        &mut self,
        job: &Job,
        steps: &[Step<'_>],
        dir: &DataDir,
        work: &WorkDir,
    ) -> Result<(), Failure> {
        let state_name = format!("state.{}", self.settings.format.extension());
        let out_state = dir.data().join("out").join(&state_name);
        let kept_state = work.path().join(format!("main-{state_name}"));
        // `in/state.json` exists only for the main image (Keboola's rule): set aside while
        // before-processors run, gone for after-processors.
        let in_state = dir.data().join("in").join(&state_name);
        let held_in_state = work.path().join(format!("in-{state_name}"));
        let mut main_done = false;
        let mut ran_after_main = false;
        let mut outcome = Ok(());
        for (priority, step) in steps.iter().enumerate() {
            if priority > 0 {
                self.check_signal("between containers")?;
                dir.rotate_out_to_in().map_err(Failure::staging)?;
            }
            outcome = match step {
                Step::Processor(p, image) => {
                    if in_state.exists() {
                        if main_done {
                            std::fs::remove_file(&in_state).map_err(|e| {
                                Failure::application(
                                    &anyhow::Error::new(e)
                                        .context(format!("cannot remove {}", in_state.display())),
                                )
                            })?;
                        } else {
                            move_file(&in_state, &held_in_state)?;
                        }
                    }
                    let own = p.spec.as_ref();
                    let image_parameters =
                        own.map_or_else(|| serde_json::json!({}), |o| o.image_parameters.clone());
                    job.write_processor_config(dir, &p.parameters, &image_parameters)
                        .map_err(Failure::staging)?;
                    self.run_image(p.position.role(), image, &p.component, own, priority, dir)
                }
                Step::Main(image) => {
                    if held_in_state.exists() {
                        move_file(&held_in_state, &in_state)?;
                    }
                    job.write_config(dir).map_err(Failure::staging)?;
                    let mut ran = self.run_image(
                        "main",
                        image,
                        &self.settings.component_id,
                        None,
                        priority,
                        dir,
                    );
                    // Its usage metrics, before an after-processor could move them away.
                    if ran.is_ok() && self.result.class == Class::Success {
                        ran = self.read_usage(dir);
                    }
                    // The main image's state survives the after-processors (Keboola reads it
                    // right after the main image; processors never write state).
                    if priority + 1 < steps.len() {
                        dir.check_dirs().map_err(Failure::staging)?;
                        if out_state.exists() {
                            move_file(&out_state, &kept_state)?;
                        }
                    }
                    main_done = true;
                    ran
                }
            };
            if outcome.is_err() || self.result.class != Class::Success {
                break;
            }
            // What the container left must not lead the state moves below out of the job dir.
            dir.check_dirs().map_err(Failure::staging)?;
            ran_after_main |= main_done && !matches!(step, Step::Main(_));
        }
        if main_done && kept_state.exists() {
            // Whatever an after-processor left as state is not the component's.
            move_file(&kept_state, &out_state)?;
        } else if main_done && ran_after_main {
            // The main image wrote no state (Keboola clears it); an after-processor's file
            // must not take its place.
            let _ = std::fs::remove_file(&out_state);
        } else if !main_done {
            // A processor failed before the main image: no state of its may count.
            let _ = std::fs::remove_file(&out_state);
        }
        outcome
    }

    /// The main image's `out/usage.json` into the result (a malformed one fails the job as
    /// an application error, Keboola's class), and its `out/result.json` (a malformed one is
    /// a warning).
    fn read_usage(&mut self, dir: &DataDir) -> Result<(), Failure> {
        dir.check_dirs().map_err(Failure::staging)?;
        self.result.usage =
            dockless_staging::usage::read(dir, self.settings.format).map_err(Failure::staging)?;
        match dockless_staging::usage::read_result(dir) {
            Ok(document) => self.result.component_result = document,
            Err(e) => self.result.warnings.push(format!(
                "out/result.json ignored: {}",
                super::error_chain(&e)
            )),
        }
        Ok(())
    }

    fn run_image(
        &mut self,
        role: &'static str,
        image: &Image,
        component_id: &str,
        own: Option<&ProcessorSpec>,
        priority: usize,
        dir: &DataDir,
    ) -> Result<(), Failure> {
        if self.settings.debug {
            // Keboola's debug mode: the data folder each container starts with.
            self.store_debug_stage(dir, &format!("stage_{priority}"))?;
        }
        let s = self.settings;
        let main = role == "main";
        let who = Identity {
            run_id: &s.run_id,
            project_id: &s.project_id,
            stack_id: &s.stack_id,
            config_id: s.config_id.as_deref(),
            row_id: s.row_id.as_deref(),
            branch_id: s.branch_id.as_deref(),
            config_version: s.config_version.as_deref(),
            run_mode: if s.debug { "debug" } else { "run" },
            // Processors too get the main component's value, as in Keboola.
            data_type_support: s.data_type_support,
        };
        let mut spec = RunSpec::new(image.config.clone());
        spec.env = s.extra_env.clone();
        // The runner's own variables last: they win (and `-e` may not name one anyway).
        spec.env.extend(environment::variables(
            &who,
            component_id,
            &s.configuration["parameters"],
        ));
        spec.data_dir = Some(dir.data());
        spec.tmp = TmpMount::HostDir(dir.tmp());
        spec.limits = Limits {
            memory_bytes: Some(own.map_or(s.memory.0, |o| o.memory.0)),
            cpus: s.cpus,
            pids: Some(s.pids),
            ..Limits::default()
        };
        let timeout = match own {
            _ if main => s.main_timeout(),
            Some(o) => o.timeout,
            None => s.timeout,
        };
        // The job's timeout covers the whole job: the container gets what is left of it.
        // Messages quote the container's own timeout, as Keboola's do.
        spec.timeout = Some(timeout.min(self.time_left(&format!("running {}", image.name))?));
        spec.network = own.map_or(s.network, |o| o.network);
        spec.read_only_rootfs = s.read_only;
        spec.userns = s.userns;
        // As Keboola's runner: the data folder belongs to whoever the component runs as.
        spec.hand_over_data = true;
        let name = container_name(&s.run_id, s.row_id.as_deref(), priority, component_id);

        let sync = self.action != "run";
        // A sync action's stdout is its answer: kept, not streamed.
        let stdout_to = match (sync, s.stdout_to_stdout) {
            (true, _) => None,
            (false, true) => Some(Stream::Stdout),
            (false, false) => Some(Stream::Stderr),
        };
        let secrets = self.secrets.clone();
        let mut log = if main && s.logging.kind == LoggingType::Gelf {
            Some(LogServer::prepare(
                &s.logging, s.network, &mut spec, &secrets, stdout_to,
            )?)
        } else {
            None
        };
        let mut tee = Tee::new(&secrets, stdout_to, Some(Stream::Stderr));
        let listen = log.as_ref().map_or(Vec::new(), |l| l.listen.clone());
        let ran = crate::stages::container::run_container_listening(
            self.paths,
            &image.record,
            &spec,
            &listen,
            &mut |fds| {
                if let Some(l) = log.as_mut() {
                    l.serve(fds);
                }
            },
            &mut |w, b| tee.chunk(w, b),
        );
        tee.finish();
        let last_error = log.and_then(|l| l.finish(self.result));
        if main {
            self.result.stdout_tail = tee.kept_stdout.last_chars(TAIL_CHARS);
            self.result.stderr_tail = tee.kept_stderr.last_chars(TAIL_CHARS);
        }
        let end = ran.map_err(|e| match crate::signals::received() {
            // A signal while the container was being set up: it was not (or barely) started.
            Some(i) => Failure::terminated(&i, &format!("while starting {}", image.name)),
            None => Failure::application(&e),
        })?;
        if main {
            self.result.exit_code = Some(end.exit_code);
            self.result.oom_killed = end.oom_killed;
            self.result.timed_out = end.timed_out;
        }
        self.result.mount_api = crate::stages::container::mount_api();
        self.result.containers.push(ContainerRun {
            role,
            id: end.id.clone(),
            image: image.name.clone(),
            exit_code: end.exit_code,
            duration_ms: ms(end.duration),
            peak_memory_bytes: end.peak_memory_bytes,
        });
        if end.stopped {
            let signal = crate::signals::received().unwrap_or(crate::signals::Interrupted {
                signal: signal_hook::consts::SIGTERM,
            });
            return Err(Failure::terminated(
                &signal,
                &format!("while {} was running (container stopped)", image.name),
            ));
        }
        let stdout = tee.kept_stdout.text();
        let stderr = tee.kept_stderr.text();
        // Keboola's last resort for a failure's message, after stderr and stdout: the last
        // GELF message of level warning or worse.
        let last_error = last_error.unwrap_or_default();
        let output_or_log = if stdout.trim().is_empty() && stderr.trim().is_empty() {
            &last_error
        } else {
            &stdout
        };
        let (class, message) = classify::classify(&ContainerEnd {
            image: &image.name,
            name: &name,
            exit_code: end.exit_code,
            oom_killed: end.oom_killed,
            timed_out: end.timed_out,
            elapsed: end.duration,
            timeout,
            memory: own.map_or(&s.memory.1, |o| &o.memory.1),
            stderr: &stderr,
            stdout: output_or_log,
        });
        // `no_application_errors`: the component's failures are all the user's.
        let class = match class {
            Class::Application if main && s.logging.no_application_errors => Class::User,
            other => other,
        };
        if let Some(message) = message {
            return Err(Failure::new(class, message));
        }
        if sync {
            if !tee.kept_stdout.complete() {
                return Err(Failure::new(
                    Class::Application,
                    format!(
                        "sync action {:?}: its output is larger than {} bytes",
                        self.action,
                        2 * output::KEEP_BYTES
                    ),
                ));
            }
            match serde_json::from_str::<Value>(&stdout) {
                Ok(answer) => self.result.action_result = Some(answer),
                Err(e) => {
                    return Err(Failure::new(
                        Class::Application,
                        format!(
                            "sync action {:?}: its output is not valid JSON: {e}",
                            self.action
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Renames `from` over `to` (same file system: the job's working dir).
fn move_file(from: &std::path::Path, to: &std::path::Path) -> Result<(), Failure> {
    std::fs::rename(from, to).map_err(|e| {
        Failure::application(&anyhow::Error::new(e).context(format!(
            "cannot move {} to {}",
            from.display(),
            to.display()
        )))
    })
}

/// An image ready to run.
pub(super) struct Image {
    /// As named (command line or processor definition).
    pub(super) name: String,
    pub(super) record: ImageRecord,
    pub(super) config: ImageConfig,
}

/// One container of the job, in run order.
pub(super) enum Step<'a> {
    Processor(&'a Processor, Image),
    Main(Image),
}

/// Keboola's container name: `<run>-<row|norow>-<priority>-<component>` with everything
/// outside `[A-Za-z0-9-]` in the component id replaced by `-`.
fn container_name(
    run_id: &str,
    row_id: Option<&str>,
    priority: usize,
    component_id: &str,
) -> String {
    let component = dockless_staging::sanitize::component_id(component_id);
    format!(
        "{run_id}-{}-{priority}-{component}",
        row_id.unwrap_or("norow")
    )
}
