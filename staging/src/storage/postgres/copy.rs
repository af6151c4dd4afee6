//! The two streams of bulk data: rows into a table through binary `COPY ... FROM STDIN`, and
//! a table out as Keboola's CSV through `COPY ... TO STDOUT (FORMAT csv, FORCE_QUOTE *)`.

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::storage::RowSource;

/// Signature, flags and header extension length of a binary COPY stream.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Bytes collected before one write to the server.
const CHUNK: usize = 1 << 20;

/// Streams every record of `rows` into `copy` (a binary `COPY t (cols..[, _timestamp])`),
/// with `timestamp` as an extra last `int8` field when given. Returns the records sent.
pub(super) fn copy_rows(
    copy: &mut dyn Write,
    rows: &mut dyn RowSource,
    width: usize,
    timestamp: Option<i64>,
    table: &str,
) -> Result<u64> {
    let io_err = |source| Error::Io {
        path: PathBuf::from(format!("<copy into {table}>")),
        source,
    };
    let fields = width + usize::from(timestamp.is_some());
    let count = i16::try_from(fields).map_err(|_| Error::Columns {
        what: table.to_string(),
        reason: format!("{fields} columns are more than a COPY row holds"),
    })?;
    let mut buf = Vec::with_capacity(CHUNK + (1 << 16));
    buf.extend_from_slice(HEADER);
    let mut record = csv::StringRecord::new();
    let mut n = 0u64;
    while rows.next_record(&mut record)? {
        buf.extend_from_slice(&count.to_be_bytes());
        for field in record.iter() {
            let bytes = field.as_bytes();
            if memchr::memchr(0, bytes).is_some() {
                return Err(Error::Columns {
                    what: table.to_string(),
                    reason: format!(
                        "record {} holds a NUL character, which PostgreSQL text cannot store",
                        n + 1
                    ),
                });
            }
            let len = i32::try_from(bytes.len()).map_err(|_| Error::Columns {
                what: table.to_string(),
                reason: format!("a value of record {} is larger than 2 GiB", n + 1),
            })?;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(bytes);
        }
        if let Some(ts) = timestamp {
            buf.extend_from_slice(&8i32.to_be_bytes());
            buf.extend_from_slice(&ts.to_be_bytes());
        }
        n += 1;
        if buf.len() >= CHUNK {
            copy.write_all(&buf).map_err(io_err)?;
            buf.clear();
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    copy.write_all(&buf).map_err(io_err)?;
    Ok(n)
}

/// Copies the server's CSV (every field quoted, quotes doubled, LF) to `out` as it comes and
/// counts the records: an LF outside quotes ends one.
pub(super) fn pass_csv(
    from: &mut dyn Read,
    out: &mut (dyn Write + Send),
    what: &str,
) -> Result<u64> {
    let io_err = |source| Error::Io {
        path: PathBuf::from(format!("<export of {what}>")),
        source,
    };
    let mut buf = vec![0u8; CHUNK];
    let (mut rows, mut quoted) = (0u64, false);
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        for at in memchr::memchr2_iter(b'"', b'\n', &buf[..n]) {
            if buf[at] == b'"' {
                quoted = !quoted;
            } else if !quoted {
                rows += 1;
            }
        }
        out.write_all(&buf[..n]).map_err(io_err)?;
    }
    out.flush().map_err(io_err)?;
    Ok(rows)
}
