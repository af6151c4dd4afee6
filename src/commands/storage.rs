//! `dockless storage ...`: the embedded Storage from the command line.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dockless_staging::storage::{ColumnFilter, Operator, Slice};
use dockless_staging::time::{format_iso, now_micros, parse_time_expr};
use dockless_staging::{
    ExportOptions, FileQuery, ImportOptions, NewFile, PostgresStorage, Storage, StorageLocation,
    TableId, import_file,
};

use crate::cli::storage::StorageCommand;
use crate::paths::Paths;

/// Runs one storage subcommand against `paths.storage`.
pub fn run(cmd: StorageCommand, paths: &Paths) -> anyhow::Result<ExitCode> {
    if let StorageCommand::Migrate = cmd {
        return migrate(paths);
    }
    let mut storage = crate::stages::storage::open(paths)
        .with_context(|| format!("opening storage {}", paths.storage))?;
    match cmd {
        StorageCommand::Import {
            file,
            table_id,
            primary_key,
            incremental,
            delimiter,
            enclosure,
        } => {
            let id: TableId = table_id.parse()?;
            let path = std::fs::canonicalize(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let total = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let count = Arc::new(AtomicU64::new(0));
            let options = ImportOptions {
                primary_key,
                incremental,
                delimiter: one_byte(&delimiter, "--delimiter")?
                    .context("--delimiter cannot be empty")?,
                enclosure: one_byte(&enclosure, "--enclosure")?,
                progress: Some(count.clone()),
            };
            let started = Instant::now();
            let loaded = with_progress(&count, total, "imported", || {
                import_file(&mut storage, &path, &id, &options, "dockless-cli")
            })?;
            eprintln!(
                "{} {} rows into {} ({}) in {:.1}s",
                if loaded.created { "created" } else { "loaded" },
                loaded.rows,
                loaded.destination,
                if loaded.incremental {
                    "incremental"
                } else {
                    "full load"
                },
                started.elapsed().as_secs_f64()
            );
        }
        StorageCommand::Export {
            table_id,
            output,
            columns,
            filter,
            changed_since,
            limit,
        } => {
            let id: TableId = table_id.parse()?;
            let options = ExportOptions {
                columns,
                changed_since: changed_since
                    .map(|e| parse_time_expr(&e, now_micros()))
                    .transpose()?,
                filter: filter.as_deref().map(parse_filter).transpose()?,
                limit,
            };
            let count = Arc::new(AtomicU64::new(0));
            let sink: Box<dyn Write + Send> = match &output {
                Some(path) => Box::new(
                    File::create(path).with_context(|| format!("creating {}", path.display()))?,
                ),
                None => Box::new(std::io::stdout()),
            };
            let mut out = BufWriter::with_capacity(
                1 << 20,
                Counting {
                    inner: sink,
                    count: count.clone(),
                },
            );
            let exported = with_progress(&count, 0, "exported", || {
                storage.export_table(&id, &options, &mut out)
            })?;
            out.flush().context("writing the export")?;
            eprintln!("exported {} rows of {id}", exported.rows);
        }
        StorageCommand::Tables => {
            for t in storage.tables()? {
                println!(
                    "{}\t{} rows\t{} columns\tchanged {}",
                    t.id,
                    t.rows,
                    t.columns.len(),
                    format_iso(t.last_change)
                );
            }
        }
        StorageCommand::Table { table_id } => {
            let id: TableId = table_id.parse()?;
            let Some(t) = storage.table(&id)? else {
                bail!("table {id} not found")
            };
            println!("id:          {}", t.id);
            println!("columns:     {}", t.columns.join(", "));
            println!("primary key: {}", t.primary_key.join(", "));
            println!("rows:        {}", t.rows);
            println!("created:     {}", format_iso(t.created));
            println!("last change: {}", format_iso(t.last_change));
            println!("last import: {}", format_iso(t.last_import));
            for m in &t.metadata {
                println!("metadata:    {} = {} ({})", m.key, m.value, m.provider);
            }
            for (column, column_type) in &t.column_types {
                println!("type:        {column} {}", type_text(column_type));
            }
        }
        StorageCommand::Files { tag } => {
            let query = FileQuery {
                include_tags: tag,
                ..FileQuery::default()
            };
            for f in storage.files(&query)? {
                println!(
                    "{}\t{}\t{} bytes\t{}\t[{}]",
                    f.id,
                    f.name,
                    f.size,
                    format_iso(f.created),
                    f.tags.join(", ")
                );
            }
        }
        StorageCommand::Upload {
            file,
            tag,
            permanent,
        } => {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .context("the file has no name")?;
            let reader: Box<dyn Read> =
                Box::new(File::open(&file).with_context(|| format!("opening {}", file.display()))?);
            let new = NewFile {
                name: name.clone(),
                tags: tag,
                is_public: false,
                is_permanent: permanent,
                is_encrypted: true,
            };
            let mut tx = storage.begin()?;
            let mut slices = std::iter::once(Slice {
                name,
                reader,
                origin: file.clone(),
            });
            let id = tx.add_file(&new, &mut slices)?;
            tx.commit()?;
            println!("{id}");
        }
        StorageCommand::Download { id, output } => {
            let readers = storage.open_file(id)?;
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(
                    File::create(path).with_context(|| format!("creating {}", path.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            for mut r in readers {
                std::io::copy(&mut r, &mut out).context("writing the file")?;
            }
            out.flush().context("writing the file")?;
        }
        StorageCommand::Migrate => unreachable!("handled before the Storage is opened"),
        StorageCommand::Rm { target } => {
            let mut tx = storage.begin()?;
            match target.parse::<i64>() {
                Ok(id) => tx.delete_file(id)?,
                Err(_) => tx.drop_table(&target.parse()?)?,
            }
            tx.commit()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dockless storage migrate`.
fn migrate(paths: &Paths) -> anyhow::Result<ExitCode> {
    match &paths.storage {
        StorageLocation::Postgres(url) => {
            let (before, after) = PostgresStorage::migrate(url)
                .with_context(|| format!("migrating storage {}", paths.storage))?;
            if before == after {
                eprintln!("schema of {} is at version {after}", paths.storage);
            } else {
                eprintln!(
                    "migrated the schema of {} from version {before} to {after}",
                    paths.storage
                );
            }
        }
        StorageLocation::Sqlite(_) => {
            // Opening a SQLite Storage migrates it.
            crate::stages::storage::open(paths)
                .with_context(|| format!("opening storage {}", paths.storage))?;
            eprintln!("schema of {} is up to date", paths.storage);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn one_byte(value: &str, flag: &str) -> anyhow::Result<Option<u8>> {
    match value.as_bytes() {
        [] => Ok(None),
        [b] => Ok(Some(*b)),
        _ => bail!("{flag} must be a single ASCII character, got {value:?}"),
    }
}

fn parse_filter(text: &str) -> anyhow::Result<ColumnFilter> {
    let (column, operator, values) = if let Some((c, v)) = text.split_once("!=") {
        (c, Operator::Ne, v)
    } else if let Some((c, v)) = text.split_once('=') {
        (c, Operator::Eq, v)
    } else {
        bail!("--where expects column=v1,v2 or column!=v1,v2, got {text:?}");
    };
    Ok(ColumnFilter {
        column: column.to_string(),
        values: values.split(',').map(str::to_string).collect(),
        operator,
    })
}

/// Counts bytes written, for progress reports.
struct Counting<W> {
    inner: W,
    count: Arc<AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Runs `work` while a thread reports `count` on stderr every two seconds (long runs only).
fn with_progress<T>(count: &Arc<AtomicU64>, total: u64, verb: &str, work: impl FnOnce() -> T) -> T {
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (count, done, verb) = (count.clone(), done.clone(), verb.to_string());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut last = started;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < Duration::from_secs(2) || done.load(Ordering::Relaxed) {
                    continue;
                }
                last = Instant::now();
                let mb = count.load(Ordering::Relaxed) as f64 / 1e6;
                let rate = mb / started.elapsed().as_secs_f64();
                if total > 0 {
                    eprintln!(
                        "{verb} {mb:.0} / {:.0} MB ({rate:.0} MB/s)",
                        total as f64 / 1e6
                    );
                } else {
                    eprintln!("{verb} {mb:.0} MB ({rate:.0} MB/s)");
                }
            }
        })
    };
    let result = work();
    done.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    result
}

/// A column type on one line: base type with length, nullability, default, then each
/// backend's native type (`INTEGER(11) NOT NULL DEFAULT "0" [snowflake: NUMBER(38,0)]`).
fn type_text(t: &dockless_staging::ColumnType) -> String {
    let sized = |name: &str, length: &Option<String>| match length {
        Some(l) => format!("{name}({l})"),
        None => name.to_string(),
    };
    let mut text = sized(t.base.as_str(), &t.length);
    if !t.nullable {
        text.push_str(" NOT NULL");
    }
    if let Some(d) = &t.default {
        text.push_str(&format!(" DEFAULT {d:?}"));
    }
    for (backend, native) in &t.backends {
        text.push_str(&format!(
            " [{backend}: {}]",
            sized(&native.type_name, &native.length)
        ));
    }
    text
}
