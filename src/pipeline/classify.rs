//! Keboola's classes of a job's outcome, and the message each failure carries.
//!
//! The order of the checks is Keboola's (`Container::handleContainerFailure`): OOM first (even
//! with exit 0), then success, then 137/125 (timeout when the time ran out, else "possibly
//! out of memory"), then exit 1 (user error), then anything else (application error).

use std::time::Duration;

use serde::Serialize;

/// The class of a finished job; each maps to one exit status of `dockless run --config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// The job succeeded.
    Success,
    /// The user's fault: exit 1, OOM, timeout, a bad configuration, manifest or mapping, an
    /// image that does not exist.
    User,
    /// Anything else: other exit codes, an unreachable registry, a failing runner.
    Application,
    /// Ended by SIGTERM, SIGINT or SIGHUP (Keboola's `terminated` job): containers stopped,
    /// no output mapping, no state.
    Terminated,
}

impl Class {
    /// The exit status of `dockless run --config` for this class (125 is kept for dockless
    /// failing itself).
    pub fn exit_status(self) -> u8 {
        match self {
            Class::Success => 0,
            Class::User => 1,
            Class::Application => 2,
            // 128 + SIGTERM; `dockless run` exits 128 + the signal actually received.
            Class::Terminated => 143,
        }
    }
}

/// What the container did, as far as classification needs it.
#[derive(Debug, Clone)]
pub struct ContainerEnd<'a> {
    /// The image as named on the command line.
    pub image: &'a str,
    /// The container's name (for application errors).
    pub name: &'a str,
    /// Exit code (128 + signal when killed).
    pub exit_code: i32,
    /// The kernel's OOM killer fired in the container's cgroup.
    pub oom_killed: bool,
    /// The runtime killed it when the timeout passed.
    pub timed_out: bool,
    /// How long it ran.
    pub elapsed: Duration,
    /// The timeout it had.
    pub timeout: Duration,
    /// The memory limit as given (`256m`), for the OOM message.
    pub memory: &'a str,
    /// Redacted stderr (head and tail) and stdout.
    pub stderr: &'a str,
    /// Redacted stdout (head and tail).
    pub stdout: &'a str,
}

/// The class and, for a failure, the message (Keboola's wording).
pub fn classify(end: &ContainerEnd<'_>) -> (Class, Option<String>) {
    if end.oom_killed {
        let message = format!("Component out of memory (exceeded {})", end.memory);
        return (Class::User, Some(message));
    }
    if end.exit_code == 0 {
        return (Class::Success, None);
    }
    let message = failure_message(end.stderr, end.stdout);
    if end.timed_out
        || ((end.exit_code == 137 || end.exit_code == 125) && end.elapsed >= end.timeout)
    {
        let message = format!(
            "Running {} container exceeded the timeout of {} seconds.",
            end.image,
            end.timeout.as_secs()
        );
        return (Class::User, Some(message));
    }
    match end.exit_code {
        137 | 125 => (
            Class::User,
            Some("Component terminated. Possibly due to out of memory error".to_string()),
        ),
        1 => (Class::User, Some(message)),
        code => (
            Class::Application,
            Some(format!(
                "{} container '{}' failed: ({code}) {message}",
                end.image, end.name
            )),
        ),
    }
}

/// Longest message a failure carries, in characters (Keboola's event limit).
pub const MESSAGE_LIMIT: usize = 4000;

/// The first non-empty of stderr and stdout (trimmed), else "No error message.", cut to
/// [`MESSAGE_LIMIT`] characters keeping the head and the tail.
pub fn failure_message(stderr: &str, stdout: &str) -> String {
    let text = [stderr.trim(), stdout.trim()]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or("No error message.");
    cut(text, MESSAGE_LIMIT)
}

/// `text` if it has at most `limit` characters, else its first and last `limit / 2`
/// characters joined by `" ... "`.
pub fn cut(text: &str, limit: usize) -> String {
    let count = text.chars().count();
    if count <= limit {
        return text.to_string();
    }
    let half = limit / 2;
    let head: String = text.chars().take(half).collect();
    let tail: String = text.chars().skip(count - half).collect();
    format!("{head} ... {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(code: i32) -> ContainerEnd<'static> {
        ContainerEnd {
            image: "demo:1",
            name: "run-1-main",
            exit_code: code,
            oom_killed: false,
            timed_out: false,
            elapsed: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
            memory: "256m",
            stderr: "",
            stdout: "out text\n",
        }
    }

    #[test]
    fn keboola_order_of_checks() {
        assert_eq!(classify(&end(0)), (Class::Success, None));
        assert_eq!(classify(&end(1)), (Class::User, Some("out text".into())));
        let (class, msg) = classify(&end(2));
        assert_eq!(class, Class::Application);
        assert_eq!(
            msg.unwrap(),
            "demo:1 container 'run-1-main' failed: (2) out text"
        );
        let oom = ContainerEnd {
            oom_killed: true,
            ..end(0)
        };
        assert_eq!(
            classify(&oom),
            (
                Class::User,
                Some("Component out of memory (exceeded 256m)".into())
            )
        );
        let timeout = ContainerEnd {
            timed_out: true,
            ..end(137)
        };
        assert_eq!(
            classify(&timeout).1.unwrap(),
            "Running demo:1 container exceeded the timeout of 60 seconds."
        );
        assert_eq!(
            classify(&end(137)),
            (
                Class::User,
                Some("Component terminated. Possibly due to out of memory error".into())
            )
        );
    }

    #[test]
    fn message_source_and_cut() {
        assert_eq!(failure_message(" err \n", "out"), "err");
        assert_eq!(failure_message("", ""), "No error message.");
        let long = format!(
            "{}{}{}",
            "a".repeat(3000),
            "b".repeat(3000),
            "c".repeat(3000)
        );
        let cut = failure_message(&long, "");
        assert_eq!(cut.chars().count(), 4005);
        assert!(cut.starts_with(&"a".repeat(2000)));
        assert!(cut.ends_with(&"c".repeat(2000)));
        assert!(cut.contains("a ... c"));
        assert_eq!(cut_chars_multibyte(), "žž ... žž");
    }

    fn cut_chars_multibyte() -> String {
        cut(&"ž".repeat(10), 4)
    }
}
