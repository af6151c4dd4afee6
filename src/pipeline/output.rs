//! The container's output on its way out: redacted chunk by chunk, streamed live to our own
//! stdout/stderr, and kept (head and tail, already redacted) for the message and the result.

use std::collections::VecDeque;
use std::io::Write;

use dockless_runtime::container::Stream;

use super::redact::{Secrets, StreamRedactor};

/// Bytes kept of each end of a stream.
pub const KEEP_BYTES: usize = 512 * 1024;

/// Head and tail of one redacted stream.
#[derive(Debug, Default)]
pub struct Kept {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Kept {
    /// Appends one chunk: the first [`KEEP_BYTES`] stay, then a rolling tail of as many.
    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = KEEP_BYTES.saturating_sub(self.head.len());
        let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(to_head);
        self.tail.extend(rest);
        if self.tail.len() > KEEP_BYTES {
            self.tail.drain(..self.tail.len() - KEEP_BYTES);
        }
    }

    /// Nothing was dropped between head and tail.
    pub fn complete(&self) -> bool {
        self.total == (self.head.len() + self.tail.len()) as u64
    }

    /// The kept text; a marker stands where bytes were dropped.
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if !self.complete() {
            let dropped = self.total - (self.head.len() + self.tail.len()) as u64;
            s.push_str(&format!("\n[... {dropped} bytes omitted ...]\n"));
        }
        let (a, b) = self.tail.as_slices();
        s.push_str(&String::from_utf8_lossy(&[a, b].concat()));
        s
    }

    /// The last `n` characters of the kept text.
    pub fn last_chars(&self, n: usize) -> String {
        let text = self.text();
        let count = text.chars().count();
        text.chars().skip(count.saturating_sub(n)).collect()
    }
}

/// Redacts, streams and keeps both output streams of one container.
pub struct Tee<'a> {
    stdout: StreamRedactor<'a>,
    stderr: StreamRedactor<'a>,
    stdout_to: Option<Stream>,
    stderr_to: Option<Stream>,
    /// What was kept of stdout (redacted).
    pub kept_stdout: Kept,
    /// What was kept of stderr (redacted).
    pub kept_stderr: Kept,
}

impl<'a> Tee<'a> {
    /// `stdout_to` / `stderr_to`: which of our streams each of the container's streams is
    /// copied to as it arrives (`None`: kept only).
    pub fn new(secrets: &'a Secrets, stdout_to: Option<Stream>, stderr_to: Option<Stream>) -> Self {
        Tee {
            stdout: StreamRedactor::new(secrets),
            stderr: StreamRedactor::new(secrets),
            stdout_to,
            stderr_to,
            kept_stdout: Kept::default(),
            kept_stderr: Kept::default(),
        }
    }

    /// One chunk as the runtime delivers it.
    pub fn chunk(&mut self, which: Stream, bytes: &[u8]) {
        let shown = match which {
            Stream::Stdout => self.stdout.push(bytes),
            Stream::Stderr => self.stderr.push(bytes),
        };
        self.emit(which, &shown);
    }

    /// The streams ended: release what was held back.
    pub fn finish(&mut self) {
        let out = self.stdout.finish();
        self.emit(Stream::Stdout, &out);
        let err = self.stderr.finish();
        self.emit(Stream::Stderr, &err);
    }

    fn emit(&mut self, which: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let to = match which {
            Stream::Stdout => {
                self.kept_stdout.push(bytes);
                self.stdout_to
            }
            Stream::Stderr => {
                self.kept_stderr.push(bytes);
                self.stderr_to
            }
        };
        // A closed stdout (say, `| head`) must not fail the job: the output is also kept.
        let _ = match to {
            Some(Stream::Stdout) => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Some(Stream::Stderr) => std::io::stderr().lock().write_all(bytes),
            None => Ok(()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail() {
        let mut k = Kept::default();
        k.push(&vec![b'a'; KEEP_BYTES]);
        k.push(b"bbb");
        assert!(k.complete());
        k.push(&vec![b'c'; KEEP_BYTES]);
        assert!(!k.complete());
        let text = k.text();
        assert!(text.contains("[... 3 bytes omitted ...]"));
        assert!(text.ends_with('c'));
        assert_eq!(k.last_chars(2), "cc");
    }
}
