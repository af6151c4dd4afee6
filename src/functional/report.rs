//! How `dockless test` shows its results: a line per case as it ends, a summary, and the
//! JSON document of `--json`.

use serde::Serialize;

use super::{Outcome, Status};

/// The case's line: `PASS name (0.41 s)`, or `FAIL`/`ERROR` with why, then where its data
/// folder was kept, then (not passed) the end of its stderr, indented.
pub fn case_line(outcome: &Outcome) -> String {
    let word = match outcome.status {
        Status::Pass => "PASS ",
        Status::Fail => "FAIL ",
        Status::Error => "ERROR",
    };
    let mut line = format!(
        "{word} {} ({:.2} s)",
        outcome.name,
        outcome.duration_ms as f64 / 1000.0
    );
    if let Some(message) = &outcome.message {
        line.push_str(": ");
        line.push_str(message);
    }
    line.push('\n');
    if let Some(kept) = &outcome.kept {
        line.push_str(&format!("      data folder kept in {}\n", kept.display()));
    }
    if outcome.status != Status::Pass {
        let tail: Vec<&str> = outcome.stderr_tail.trim_end().lines().collect();
        let shown = &tail[tail.len().saturating_sub(STDERR_LINES)..];
        if !shown.is_empty() {
            line.push_str("      stderr (end):\n");
            for l in shown {
                line.push_str(&format!("      | {l}\n"));
            }
        }
    }
    line
}

/// Lines of a failed case's stderr shown under its line.
const STDERR_LINES: usize = 10;

/// Counts of a whole run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that ran and did not pass.
    pub failed: usize,
    /// Cases that could not run.
    pub errors: usize,
}

impl Counts {
    /// Of `outcomes`.
    pub fn of(outcomes: &[Outcome]) -> Counts {
        let count = |s| outcomes.iter().filter(|o| o.status == s).count();
        Counts {
            passed: count(Status::Pass),
            failed: count(Status::Fail),
            errors: count(Status::Error),
        }
    }

    /// All passed (and there was at least one).
    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.errors == 0 && self.passed > 0
    }
}

/// `3 cases: 2 passed, 1 failed, 0 errors (1.23 s)`.
pub fn summary(counts: Counts, seconds: f64) -> String {
    let total = counts.passed + counts.failed + counts.errors;
    format!(
        "{total} case{}: {} passed, {} failed, {} error{} ({seconds:.2} s)\n",
        if total == 1 { "" } else { "s" },
        counts.passed,
        counts.failed,
        counts.errors,
        if counts.errors == 1 { "" } else { "s" },
    )
}

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// The image tested.
    pub image: &'a str,
    /// Every case, in name order.
    pub cases: &'a [Outcome],
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// Wall time of the whole run.
    pub duration_ms: u64,
}
