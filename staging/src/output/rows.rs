//! Streaming the records of an output table: one file or the slices of a folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::plan::TablePlan;
use crate::error::{Error, Result};
use crate::out_dir::{self};
use crate::storage::RowSource;

/// Streams the records of one table source: a single file (maybe gzipped, maybe with a
/// header) or the slices of a folder one after the other.
pub(super) struct CsvRows {
    pub(super) pending: std::vec::IntoIter<PathBuf>,
    pub(super) current: Option<(csv::Reader<Box<dyn std::io::Read>>, PathBuf)>,
    pub(super) delimiter: u8,
    pub(super) enclosure: Option<u8>,
    pub(super) width: usize,
    pub(super) progress: Option<Arc<AtomicU64>>,
}

impl CsvRows {
    fn reader(&self, path: &Path) -> Result<csv::Reader<Box<dyn std::io::Read>>> {
        let mut builder = csv::ReaderBuilder::new();
        builder
            .has_headers(false)
            .flexible(true)
            .delimiter(self.delimiter)
            .double_quote(true)
            .escape(None)
            .buffer_capacity(1 << 18);
        match self.enclosure {
            Some(q) => builder.quote(q),
            None => builder.quoting(false),
        };
        Ok(builder.from_reader(out_dir::open_data(path, self.progress.clone())?))
    }

    /// Opens the source; returns the header when the first line is one.
    pub(super) fn open(plan: &TablePlan, header: bool) -> Result<(CsvRows, Option<Vec<String>>)> {
        let parts = match &plan.entry.slices {
            Some(slices) => slices.clone(),
            None => vec![plan.entry.path.clone()],
        };
        let mut rows = CsvRows {
            pending: parts.into_iter(),
            current: None,
            delimiter: plan.delimiter,
            enclosure: plan.enclosure,
            width: 0,
            progress: plan.progress.clone(),
        };
        let mut names = None;
        if header {
            let path = rows.pending.next().unwrap_or_default();
            let mut reader = rows.reader(&path)?;
            let mut record = csv::StringRecord::new();
            let got = reader
                .read_record(&mut record)
                .map_err(|source| Error::Csv {
                    line: source.position().map_or(1, |p| p.line()),
                    path: path.clone(),
                    source,
                })?;
            if !got {
                return Err(Error::mapping(
                    path.display().to_string(),
                    "the file is empty: a header row is required",
                ));
            }
            let mut list: Vec<String> = record.iter().map(str::to_string).collect();
            if let Some(first) = list.first_mut()
                && let Some(rest) = first.strip_prefix('\u{feff}')
            {
                *first = rest.to_string();
            }
            names = Some(list);
            rows.current = Some((reader, path));
        }
        Ok((rows, names))
    }
}

impl RowSource for CsvRows {
    fn next_record(&mut self, record: &mut csv::StringRecord) -> Result<bool> {
        loop {
            if self.current.is_none() {
                match self.pending.next() {
                    Some(path) => {
                        let reader = self.reader(&path)?;
                        self.current = Some((reader, path));
                    }
                    None => return Ok(false),
                }
            }
            let Some((reader, path)) = self.current.as_mut() else {
                return Ok(false);
            };
            let got = reader.read_record(record).map_err(|source| Error::Csv {
                line: source.position().map_or(0, |p| p.line()),
                path: path.clone(),
                source,
            })?;
            if !got {
                self.current = None;
                continue;
            }
            if record.len() != self.width {
                return Err(Error::RowWidth {
                    path: path.clone(),
                    line: record.position().map_or(0, |p| p.line()),
                    found: record.len(),
                    expected: self.width,
                });
            }
            return Ok(true);
        }
    }
}
