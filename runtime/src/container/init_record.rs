//! The container's init (and a bridged run's pasta), recorded by pid and start time in its
//! run directory, so that a run whose runner and helper both died can still be ended when it
//! has no cgroup to kill through (rootless without delegation): killing a pid namespace's init
//! takes every process in it, and pasta lives outside the container's cgroup and namespaces.

use std::path::Path;

const FILE: &str = "init";
/// The record of a bridged run's network stack.
pub(crate) const PASTA_FILE: &str = "pasta";

/// The kernel's start time of `pid` (field 22 of `/proc/<pid>/stat`), which tells a process
/// from a later one that reused its pid; `None` once it is gone or a zombie (dead, waiting to
/// be reaped by whoever is its parent now).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count after the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(rest.next(), Some("Z" | "X")) {
        return None;
    }
    rest.nth(18)?.parse().ok()
}

/// Writes `<run_dir>/init`; called by the helper once the init exists.
pub(crate) fn record(run_dir: &Path, pid: i32) -> std::io::Result<()> {
    record_as(run_dir, FILE, pid)
}

/// Writes `<run_dir>/<name>` for process `pid` (the init, or [`PASTA_FILE`]).
pub(crate) fn record_as(run_dir: &Path, name: &str, pid: i32) -> std::io::Result<()> {
    let Some(start) = start_time(pid) else {
        return Err(std::io::Error::other(format!(
            "no /proc entry for the {name} process {pid}"
        )));
    };
    std::fs::write(run_dir.join(name), format!("{pid} {start}\n"))
}

/// What became of a recorded init.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InitFate {
    /// Nothing recorded, or that process is long gone.
    NotAlive,
    /// It was alive and is gone now.
    Killed,
    /// It still lives (no permission to signal it, or it would not die): keep the record.
    StillAlive(i32),
}

/// SIGKILLs the recorded pasta and init of `run_dir` if those very processes still live, and
/// waits (up to five seconds each) until they are gone. The init's fate is returned unless
/// pasta is the one still alive.
pub(crate) fn kill_recorded(run_dir: &Path) -> InitFate {
    let pasta = kill_recorded_as(run_dir, PASTA_FILE);
    match (kill_recorded_as(run_dir, FILE), pasta) {
        (InitFate::StillAlive(pid), _) | (_, InitFate::StillAlive(pid)) => {
            InitFate::StillAlive(pid)
        }
        (init, _) => init,
    }
}

fn kill_recorded_as(run_dir: &Path, name: &str) -> InitFate {
    let Ok(text) = std::fs::read_to_string(run_dir.join(name)) else {
        return InitFate::NotAlive;
    };
    let mut fields = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(start))) = (
        fields.next().map(str::parse::<i32>),
        fields.next().map(str::parse::<u64>),
    ) else {
        return InitFate::NotAlive;
    };
    if pid <= 1 || start_time(pid) != Some(start) {
        return InitFate::NotAlive;
    }
    if let Err(nix::errno::Errno::EPERM) = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    ) {
        // Not ours to signal from here (a rootless session's sibling): no use waiting.
        return InitFate::StillAlive(pid);
    }
    for _ in 0..250 {
        if start_time(pid) != Some(start) {
            return InitFate::Killed;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    InitFate::StillAlive(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pid_is_not_killed() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        // Our own pid with a start time that is not ours: must be left alone.
        std::fs::write(dir.path().join(FILE), format!("{me} 1\n")).unwrap();
        assert_eq!(kill_recorded(dir.path()), InitFate::NotAlive);
        assert!(start_time(me).is_some());
    }

    #[test]
    fn a_live_recorded_process_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        record(dir.path(), child.id() as i32).unwrap();
        assert_eq!(kill_recorded(dir.path()), InitFate::Killed);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    #[test]
    fn a_recorded_network_stack_is_killed_with_the_init() {
        let dir = tempfile::tempdir().unwrap();
        let mut stack = std::process::Command::new("sleep")
            .arg("101")
            .spawn()
            .unwrap();
        record_as(dir.path(), PASTA_FILE, stack.id() as i32).unwrap();
        // No init recorded (it died first): the stack must still go.
        assert_eq!(kill_recorded(dir.path()), InitFate::NotAlive);
        let status = stack.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
}
