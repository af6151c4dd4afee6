//! The parsed form of one tar entry, as handed from the parser thread to the writer.

/// What an entry creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file; its bytes follow as [`Op::Data`] chunks, then [`Op::End`].
    File {
        /// Final size (the apparent size for sparse files).
        size: u64,
        /// GNU sparse: all-zero chunks become holes.
        sparse: bool,
    },
    /// A directory (merged with an existing one).
    Dir,
    /// A symlink with its target stored verbatim.
    Symlink(Vec<u8>),
    /// A hardlink to the cleaned path of an earlier entry.
    Hardlink(Vec<u8>),
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
    /// `.wh.<name>`: the entry path is the victim.
    Whiteout,
    /// `.wh..wh..opq`: the entry path is the directory (empty = root).
    Opaque,
}

/// Owner, permissions, time and extended attributes of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Permission bits including setuid/setgid/sticky.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Seconds and nanoseconds since the epoch.
    pub(crate) mtime: (i64, u32),
    /// Allowed extended attributes (name, value).
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One entry, its cleaned path and what the tar called it (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) raw_name: String,
    pub(crate) path: Vec<u8>,
    pub(crate) kind: Kind,
    pub(crate) meta: Meta,
}

/// A message from the parser to the writer.
#[derive(Debug)]
pub(crate) enum Op {
    Entry(Box<Spec>),
    Data(Vec<u8>),
    End,
}
