//! One claimed job as its own process: `dockless run --job FILE --json --queue-claim CLAIM`,
//! with the job's files in a private directory, its stderr (the job's redacted log) streamed
//! to the worker line by line, and its stdout (the result object) read at the end.
//!
//! The process is in a process group of its own (a Ctrl-C at the worker's terminal reaches
//! the worker alone, which then decides), and it stops as a terminated job by itself when its
//! worker disappears (`crate::signals::stop_when_orphaned`).

use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use anyhow::Context as _;
use dockless_staging::queue::Claim;
use dockless_staging::storage::postgres::Claimed;
use serde_json::Value;

use crate::paths::Paths;
use crate::stages::queue::Queue;

/// The result object is small; anything beyond this is not one.
const MAX_RESULT_BYTES: u64 = 16 << 20;
/// Characters of stderr kept for a process that ended without a result.
const TAIL_CHARS: usize = 2000;

/// A running job process.
pub struct JobProcess {
    child: Child,
    terminated: bool,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<String>>,
    /// The job's files; removed when the process has ended.
    _dir: tempfile::TempDir,
    /// An exclusive lock on that folder for as long as this worker lives: a folder whose lock
    /// can be taken was left by a killed worker ([`collect_abandoned`]).
    _lock: std::fs::File,
}

/// Removes the job folders that killed workers left under `parent` (their lock can be
/// taken); returns how many.
pub fn collect_abandoned(parent: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let free = std::fs::File::open(&path).is_ok_and(|f| f.try_lock().is_ok());
        if free && entry.file_type().is_ok_and(|t| t.is_dir()) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "cannot remove an abandoned queued job folder"),
            }
        }
    }
    removed
}

/// How a job process ended.
#[derive(Debug)]
pub struct Outcome {
    /// Its exit status, in words.
    pub exit: String,
    /// The result object it printed, if it printed one.
    pub result: Option<Value>,
    /// The end of what it printed on stderr.
    pub stderr_tail: String,
}

impl JobProcess {
    /// Unseals the claimed job, writes its files into a private directory under the state
    /// directory and starts its process; what it prints on stderr goes to `logs`.
    pub fn start(
        claimed: &Claimed,
        queue: &Queue,
        url: &str,
        paths: &Paths,
        logs: Sender<(Claim, String)>,
    ) -> anyhow::Result<JobProcess> {
        let claim = &claimed.claim;
        let document = queue.cipher.unseal_document(
            &claimed.component_id,
            &claimed.document,
            &format!("queued job {}", claim.job_id),
        )?;
        let parent = paths.queued();
        match std::fs::DirBuilder::new().mode(0o700).create(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", parent.display()));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("job-{}-", claim.job_id))
            .tempdir_in(&parent)
            .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
        let lock = std::fs::File::open(dir.path())
            .and_then(|f| f.lock().map(|()| f))
            .with_context(|| format!("cannot lock {}", dir.path().display()))?;
        let job_file = super::document::unpack(&document, dir.path())?;
        let exe = std::env::current_exe().context("cannot find the dockless binary")?;
        let mut child = Command::new(exe)
            .arg("run")
            .arg("--job")
            .arg(&job_file)
            .arg("--json")
            .arg("--queue-claim")
            .arg(claim.to_string())
            // In the environment, not on the command line: the URL may hold a password.
            .env("DOCKLESS_STORAGE", url)
            .env("DOCKLESS_ROOT", &paths.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .context("cannot start the job's process")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let stdout = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.take(MAX_RESULT_BYTES).read_to_end(&mut bytes);
            bytes
        });
        let claim = claim.clone();
        let stderr = std::thread::spawn(move || {
            let mut tail = String::new();
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while let Ok(n) = reader.read_until(b'\n', &mut line) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                tail.push_str(&text);
                if tail.len() > 2 * TAIL_CHARS {
                    let cut = tail.len() - TAIL_CHARS;
                    let cut = (cut..tail.len())
                        .find(|i| tail.is_char_boundary(*i))
                        .unwrap_or(0);
                    tail.drain(..cut);
                }
                let _ = logs.send((claim.clone(), text));
                line.clear();
            }
            tail
        });
        Ok(JobProcess {
            child,
            terminated: false,
            stdout: Some(stdout),
            stderr: Some(stderr),
            _dir: dir,
            _lock: lock,
        })
    }

    /// Asks the job to stop (SIGTERM: it stops its containers, stores nothing and exits).
    pub fn terminate(&mut self) {
        if self.terminated {
            return;
        }
        self.terminated = true;
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    /// The outcome once the process has ended, `None` while it runs.
    pub fn try_finish(&mut self) -> anyhow::Result<Option<Outcome>> {
        let Some(status) = self
            .child
            .try_wait()
            .context("cannot wait for a job's process")?
        else {
            return Ok(None);
        };
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr_tail = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let result = serde_json::from_slice::<Value>(&stdout)
            .ok()
            .filter(Value::is_object);
        Ok(Some(Outcome {
            exit: status.to_string(),
            result,
            stderr_tail,
        }))
    }
}
