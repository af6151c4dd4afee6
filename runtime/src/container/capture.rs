//! Bounded capture of a stream: the first and the last bytes are kept, the middle is only
//! counted, so a container printing gigabytes costs at most `2 * limit` bytes of memory.

use std::collections::VecDeque;

/// Which of the container's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

/// What was kept of one stream: `head` then `tail`; when `total_bytes` exceeds their sum the
/// bytes in between were dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes of the stream.
    pub head: Vec<u8>,
    /// The last bytes of the stream (directly after `head` when nothing was dropped).
    pub tail: Vec<u8>,
    /// How many bytes the stream carried in total.
    pub total_bytes: u64,
}

impl Captured {
    /// Whether bytes between `head` and `tail` were dropped.
    pub fn truncated(&self) -> bool {
        self.total_bytes > (self.head.len() + self.tail.len()) as u64
    }

    /// The kept bytes as text, with a marker where bytes were dropped.
    pub fn to_string_lossy(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if self.truncated() {
            let dropped = self.total_bytes - (self.head.len() + self.tail.len()) as u64;
            s.push_str(&format!("\n[... {dropped} bytes omitted ...]\n"));
        }
        s.push_str(&String::from_utf8_lossy(&self.tail));
        s
    }
}

/// Accumulates a stream into a [`Captured`] with at most `limit` bytes of head and of tail.
#[derive(Debug)]
pub struct BoundedCapture {
    limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl BoundedCapture {
    /// A capture keeping up to `limit` bytes at each end.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    /// Appends a chunk.
    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.limit - self.head.len();
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.len() >= self.limit {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.limit..]);
            return;
        }
        let overflow = (self.tail.len() + data.len()).saturating_sub(self.limit);
        self.tail.drain(..overflow);
        self.tail.extend(data);
    }

    /// The kept bytes.
    pub fn finish(self) -> Captured {
        Captured {
            head: self.head,
            tail: self.tail.into(),
            total_bytes: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_streams_are_kept_whole() {
        let mut c = BoundedCapture::new(8);
        c.push(b"hello ");
        c.push(b"world!");
        let out = c.finish();
        assert!(!out.truncated());
        assert_eq!(out.to_string_lossy(), "hello world!");
    }

    #[test]
    fn long_streams_keep_head_and_tail() {
        let mut c = BoundedCapture::new(4);
        for chunk in [&b"abc"[..], b"defgh", b"ijklmnopq", b"rs", b"t"] {
            c.push(chunk);
        }
        let out = c.finish();
        assert_eq!(out.head, b"abcd");
        assert_eq!(out.tail, b"qrst");
        assert_eq!(out.total_bytes, 20);
        assert!(out.truncated());
        assert_eq!(
            out.to_string_lossy(),
            "abcd\n[... 12 bytes omitted ...]\nqrst"
        );
    }
}
