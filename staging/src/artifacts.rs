//! Keboola's artifacts: files a component leaves for its later runs (or for other
//! configurations, or for the rest of an orchestration), kept as Storage files.
//!
//! A job's `/data/artifacts/out/current` (and, in an orchestration, `out/shared`) is packed
//! into `artifacts.tar.gz` and stored, on success only and in the job's output transaction,
//! tagged as Keboola tags artifacts: `artifact`, `branchId-<branch>`, `componentId-<component>`,
//! `configId-<config>`, `jobId-<job>` (plus `shared`, `orchestrationId-<id>`). The
//! configuration's `artifacts` section chooses what the next job gets before it starts, as
//! Keboola's runner does: `runs` (this configuration's earlier artifacts, `filter.limit` and
//! `filter.date_since`), else `custom` (another configuration's), else `shared` (the
//! orchestration's); each archive is unpacked into `artifacts/in/<kind>/jobId-<job>/`.
//! Unpacking is the caller's, through the same hostile-archive rules as image layers.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::storage::{FileInfo, FileQuery, NewFile, Storage};

/// Keboola's cap on one artifact archive.
pub const MAX_ARCHIVE_BYTES: u64 = 1 << 30;

/// Keboola's cap on the archives one job downloads.
pub const MAX_DOWNLOADS: u64 = 50;

/// The name of a stored archive.
pub const ARCHIVE_NAME: &str = "artifacts.tar.gz";

/// Keboola's branch id when a job runs in no branch.
pub const DEFAULT_BRANCH: &str = "default";

/// Whose artifacts: the running job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `branchId-` tag ([`DEFAULT_BRANCH`] outside a branch).
    pub branch_id: String,
    /// `componentId-` tag.
    pub component_id: String,
    /// `configId-` tag: without a configuration Keboola neither stores nor reads artifacts.
    pub config_id: Option<String>,
    /// `jobId-` tag (the run id).
    pub job_id: String,
    /// The orchestration the job runs in, for shared artifacts.
    pub orchestration_id: Option<String>,
    /// The cap on one stored archive: [`MAX_ARCHIVE_BYTES`], Keboola's, unless the
    /// installation sets another.
    pub max_archive_bytes: u64,
}

/// Which earlier artifacts a job gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This configuration's earlier runs.
    Runs,
    /// Another configuration's runs.
    Custom,
    /// The orchestration's shared artifacts.
    Shared,
}

impl Kind {
    /// The folder under `artifacts/in/`.
    pub fn folder(self) -> &'static str {
        match self {
            Kind::Runs => "runs",
            Kind::Custom => "custom",
            Kind::Shared => "shared",
        }
    }
}

/// The archives a job gets, in Storage's order (newest first).
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// Which.
    pub kind: Kind,
    /// How they are found in Storage.
    pub query: FileQuery,
}

/// One archive to unpack before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The Storage file.
    pub file_id: i64,
    /// Where it goes, relative to `/data`: `artifacts/in/<kind>/jobId-<job>`.
    pub target: PathBuf,
}

/// The artifacts the configuration asks for, as a Storage query; `None` when it asks for none
/// (or cannot have any: no configuration id, or shared ones outside an orchestration).
/// `now` (unix seconds) anchors a relative `date_since`.
pub fn wanted(configuration: &Value, owner: &Owner, now: i64) -> Result<Option<Wanted>> {
    let section = &configuration["artifacts"];
    if section.is_null() {
        return Ok(None);
    }
    if !section.is_object() {
        return Err(Error::config("artifacts", "must be an object"));
    }
    let Some(config_id) = &owner.config_id else {
        return Ok(None);
    };
    let enabled = |kind: &str| -> Result<bool> {
        match &section[kind]["enabled"] {
            Value::Null => Ok(false),
            Value::Bool(b) => Ok(*b),
            _ => Err(Error::config(
                format!("artifacts.{kind}.enabled"),
                "must be true or false",
            )),
        }
    };
    // Keboola's order: the first enabled kind wins.
    if enabled("runs")? {
        let filter = &section["runs"]["filter"];
        let query = runs_query(
            &owner.branch_id,
            &owner.component_id,
            config_id,
            filter,
            "artifacts.runs.filter",
            now,
        )?;
        return Ok(Some(Wanted {
            kind: Kind::Runs,
            query,
        }));
    }
    if enabled("custom")? {
        let filter = &section["custom"]["filter"];
        let text = |key: &str| -> Result<String> {
            match &filter[key] {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(Error::config(
                    format!("artifacts.custom.filter.{key}"),
                    "must be a non-empty string",
                )),
            }
        };
        let branch = match &filter["branch_id"] {
            Value::Null => DEFAULT_BRANCH.to_string(),
            _ => text("branch_id")?,
        };
        let query = runs_query(
            &branch,
            &text("component_id")?,
            &text("config_id")?,
            filter,
            "artifacts.custom.filter",
            now,
        )?;
        return Ok(Some(Wanted {
            kind: Kind::Custom,
            query,
        }));
    }
    if enabled("shared")? {
        let Some(orchestration) = &owner.orchestration_id else {
            return Ok(None);
        };
        return Ok(Some(Wanted {
            kind: Kind::Shared,
            query: FileQuery {
                include_tags: vec![
                    "artifact".into(),
                    "shared".into(),
                    format!("branchId-{}", owner.branch_id),
                    format!("orchestrationId-{orchestration}"),
                ],
                ..FileQuery::default()
            },
        }));
    }
    Ok(None)
}

fn runs_query(
    branch: &str,
    component: &str,
    config: &str,
    filter: &Value,
    at: &str,
    now: i64,
) -> Result<FileQuery> {
    let limit = match &filter["limit"] {
        Value::Null => MAX_DOWNLOADS,
        v => match v.as_u64() {
            Some(n) if n > 0 => n.min(MAX_DOWNLOADS),
            _ => {
                return Err(Error::config(
                    format!("{at}.limit"),
                    "must be a positive whole number",
                ));
            }
        },
    };
    let created_since = match &filter["date_since"] {
        Value::Null => None,
        Value::String(text) => Some(
            day_since(text, now).ok_or_else(|| {
                Error::config(
                    format!("{at}.date_since"),
                    format!(
                        "{text:?} is not a date (YYYY-MM-DD, an RFC 3339 time, or a relative \
                             time such as \"-7 days\")"
                    ),
                )
            })? * 1_000_000,
        ),
        _ => {
            return Err(Error::config(
                format!("{at}.date_since"),
                "must be a string",
            ));
        }
    };
    Ok(FileQuery {
        include_tags: vec![
            "artifact".into(),
            format!("branchId-{branch}"),
            format!("componentId-{component}"),
            format!("configId-{config}"),
        ],
        exclude_tags: vec!["shared".into()],
        created_since,
        limit: Some(limit),
        ..FileQuery::default()
    })
}

/// The start (unix seconds, UTC) of the day `text` names: Keboola keeps artifacts created
/// after the date part of `date_since` (`-7 days`, `2024-05-01`, an RFC 3339 time).
fn day_since(text: &str, now: i64) -> Option<i64> {
    let text = text.trim();
    let at = if let Some(relative) = text.strip_prefix('-') {
        let mut words = relative.split_whitespace();
        let count: i64 = words.next()?.parse().ok()?;
        let unit = words.next()?.trim_end_matches('s');
        if words.next().is_some() {
            return None;
        }
        let seconds = match unit {
            "second" | "sec" => 1,
            "minute" | "min" => 60,
            "hour" => 3600,
            "day" => 86_400,
            "week" => 7 * 86_400,
            "month" => 30 * 86_400,
            "year" => 365 * 86_400,
            _ => return None,
        };
        now.checked_sub(count.checked_mul(seconds)?)?
    } else if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        time.timestamp()
    } else {
        let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        date.and_hms_opt(0, 0, 0)?.and_utc().timestamp()
    };
    Some(at - at.rem_euclid(86_400))
}

/// The archives `wanted` finds, each with its folder. A file without exactly one `jobId-`
/// tag, or whose job id is not a plain name (it becomes a folder), is skipped with a warning
/// as Keboola skips it.
pub fn downloads(storage: &dyn Storage, wanted: &Wanted) -> Result<(Vec<Download>, Vec<String>)> {
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    for file in storage.files(&wanted.query)? {
        match job_folder(&file) {
            Ok(folder) => found.push(Download {
                file_id: file.id,
                target: Path::new("artifacts/in")
                    .join(wanted.kind.folder())
                    .join(folder),
            }),
            Err(why) => warnings.push(format!(
                "Error downloading artifact file id \"{}\": {why}",
                file.id
            )),
        }
    }
    Ok((found, warnings))
}

fn job_folder(file: &FileInfo) -> std::result::Result<String, String> {
    let tags: Vec<&String> = file.tags.iter().filter(|t| t.contains("jobId")).collect();
    match tags.as_slice() {
        [] => Err(format!(
            "Missing jobId tag on artifact file \"{}\"",
            file.id
        )),
        [tag] => {
            let plain = tag.strip_prefix("jobId-").is_some_and(|id| {
                !id.is_empty()
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    && !id.starts_with('.')
            });
            if plain {
                Ok((*tag).clone())
            } else {
                Err(format!("the jobId tag {tag:?} is not a plain job id"))
            }
        }
        _ => Err(format!(
            "There is more than one jobId tag on artifact file \"{}\"",
            file.id
        )),
    }
}

/// The tags of an archive `owner` stores (`shared`: the orchestration's).
pub fn upload_tags(owner: &Owner, shared: bool) -> Vec<String> {
    let mut tags = vec![
        "artifact".to_string(),
        format!("branchId-{}", owner.branch_id),
        format!("componentId-{}", owner.component_id),
        format!(
            "configId-{}",
            owner.config_id.as_deref().unwrap_or_default()
        ),
        format!("jobId-{}", owner.job_id),
    ];
    if shared {
        tags.push("shared".into());
        tags.push(format!(
            "orchestrationId-{}",
            owner.orchestration_id.as_deref().unwrap_or_default()
        ));
    }
    tags
}

/// The options of a stored archive.
pub fn new_file(owner: &Owner, shared: bool) -> NewFile {
    NewFile {
        name: ARCHIVE_NAME.to_string(),
        tags: upload_tags(owner, shared),
        is_public: false,
        is_permanent: false,
        is_encrypted: true,
    }
}

/// Packs the folder `from` (written by the component) into a gzip tar at `to`; `Ok(false)`
/// when there is nothing to pack. Only regular files and real folders are taken, each opened
/// without following a link (a link, device or FIFO is refused, as in `out/`); entries are
/// owned 0:0 with their mode bits (no setuid), in name order. Over `max_bytes` compressed is
/// an error, with Keboola's message.
pub fn pack(from: &Path, to: &Path, max_bytes: u64) -> Result<bool> {
    match std::fs::symlink_metadata(from) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(from)(e)),
        Ok(_) => crate::out_dir::require_dir(from)?,
    }
    if std::fs::read_dir(from)
        .map_err(Error::io(from))?
        .next()
        .is_none()
    {
        return Ok(false);
    }
    let file = std::fs::File::create(to).map_err(Error::io(to))?;
    let counted = Capped {
        inner: std::io::BufWriter::new(file),
        written: 0,
        max: max_bytes,
    };
    let gz = flate2::write::GzEncoder::new(counted, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let packed = add_dir(&mut tar, from, Path::new("")).and_then(|()| {
        let gz = tar.into_inner().map_err(Error::io(to))?;
        let mut counted = gz.finish().map_err(Error::io(to))?;
        counted.flush().map_err(Error::io(to))
    });
    match packed {
        Ok(()) => Ok(true),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::FileTooLarge => {
            Err(Error::config(
                "artifacts/out",
                format!(
                    "Artifact exceeds maximum allowed size of {}",
                    human_size(max_bytes)
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

fn add_dir<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, prefix: &Path) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .map(|e| e.map(|e| e.file_name()).map_err(Error::io(dir)))
        .collect::<Result<_>>()?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let inside = prefix.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(
            meta.modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
        );
        use std::os::unix::fs::PermissionsExt as _;
        header.set_mode(meta.permissions().mode() & 0o777);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, &inside, std::io::empty())
                .map_err(Error::io(&path))?;
            add_dir(tar, &path, &inside)?;
        } else {
            let file = crate::out_dir::open_regular(&path)?;
            let len = file.metadata().map_err(Error::io(&path))?.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(len);
            // Exactly `len` bytes, whatever the file does meanwhile.
            tar.append_data(&mut header, &inside, file.take(len))
                .map_err(Error::io(&path))?;
        }
    }
    Ok(())
}

/// Keboola's size wording: `5.00 B`, `1.00 GB`.
fn human_size(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", units[unit])
}

/// Counts what is written and fails once `max` would be passed.
struct Capped<W> {
    inner: W,
    written: u64,
    max: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "artifact archive over the size limit",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owner() -> Owner {
        Owner {
            branch_id: DEFAULT_BRANCH.into(),
            component_id: "demo".into(),
            config_id: Some("cfg".into()),
            job_id: "42".into(),
            orchestration_id: None,
            max_archive_bytes: MAX_ARCHIVE_BYTES,
        }
    }

    #[test]
    fn the_first_enabled_kind_becomes_a_query() {
        let now = 1_717_200_000; // 2024-06-01 00:00:00 UTC
        let config = json!({"artifacts": {"runs": {"enabled": true, "filter": {"limit": 2, "date_since": "-7 days"}}, "shared": {"enabled": true}}});
        let w = wanted(&config, &owner(), now).unwrap().unwrap();
        assert_eq!(w.kind, Kind::Runs);
        assert_eq!(
            w.query.include_tags,
            [
                "artifact",
                "branchId-default",
                "componentId-demo",
                "configId-cfg"
            ]
        );
        assert_eq!(w.query.exclude_tags, ["shared"]);
        assert_eq!(w.query.limit, Some(2));
        assert_eq!(w.query.created_since, Some((now - 7 * 86_400) * 1_000_000));
        let config = json!({"artifacts": {"custom": {"enabled": true, "filter": {"component_id": "other", "config_id": 7}}}});
        let w = wanted(&config, &owner(), now).unwrap().unwrap();
        assert_eq!(w.kind, Kind::Custom);
        assert_eq!(
            w.query.include_tags[2..],
            ["componentId-other", "configId-7"]
        );
        assert_eq!(w.query.limit, Some(MAX_DOWNLOADS));
        // Shared artifacts exist only in an orchestration; no configuration id, no artifacts.
        let shared = json!({"artifacts": {"shared": {"enabled": true}}});
        assert_eq!(wanted(&shared, &owner(), now).unwrap(), None);
        let in_orchestration = Owner {
            orchestration_id: Some("9".into()),
            ..owner()
        };
        let w = wanted(&shared, &in_orchestration, now).unwrap().unwrap();
        assert_eq!(w.query.include_tags[3], "orchestrationId-9");
        let no_config = Owner {
            config_id: None,
            ..owner()
        };
        assert_eq!(wanted(&config, &no_config, now).unwrap(), None);
    }

    #[test]
    fn bad_filters_name_their_key() {
        for (config, key) in [
            (
                json!({"artifacts": {"runs": {"enabled": "yes"}}}),
                "artifacts.runs.enabled",
            ),
            (
                json!({"artifacts": {"runs": {"enabled": true, "filter": {"limit": 0}}}}),
                "artifacts.runs.filter.limit",
            ),
            (
                json!({"artifacts": {"runs": {"enabled": true, "filter": {"date_since": "yesterday-ish"}}}}),
                "artifacts.runs.filter.date_since",
            ),
            (
                json!({"artifacts": {"custom": {"enabled": true, "filter": {"config_id": "1"}}}}),
                "artifacts.custom.filter.component_id",
            ),
        ] {
            let err = wanted(&config, &owner(), 0).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn dates_become_the_start_of_their_day() {
        let now = 1_717_243_200; // 2024-06-01 12:00:00 UTC
        assert_eq!(day_since("2024-05-30", now), Some(1_717_027_200));
        assert_eq!(day_since("2024-05-30T23:59:00Z", now), Some(1_717_027_200));
        assert_eq!(day_since("-1 day", now), Some(1_717_113_600));
        assert_eq!(day_since("-2 weeks", now), Some(1_715_990_400));
        assert_eq!(day_since("soon", now), None);
    }

    #[test]
    fn tags_and_job_folders() {
        let mut o = owner();
        assert_eq!(
            upload_tags(&o, false),
            [
                "artifact",
                "branchId-default",
                "componentId-demo",
                "configId-cfg",
                "jobId-42"
            ]
        );
        o.orchestration_id = Some("9".into());
        assert_eq!(upload_tags(&o, true)[5..], ["shared", "orchestrationId-9"]);
        let file = |tags: &[&str]| FileInfo {
            id: 3,
            name: ARCHIVE_NAME.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            created: 0,
            size: 0,
            is_public: false,
            is_permanent: false,
            is_encrypted: true,
            is_sliced: false,
            slices: vec![],
        };
        assert_eq!(
            job_folder(&file(&["artifact", "jobId-12"])).unwrap(),
            "jobId-12"
        );
        assert!(
            job_folder(&file(&["artifact"]))
                .unwrap_err()
                .contains("Missing jobId tag")
        );
        assert!(
            job_folder(&file(&["jobId-1", "jobId-2"]))
                .unwrap_err()
                .contains("more than one")
        );
        assert!(job_folder(&file(&["jobId-../../etc"])).is_err());
        assert!(job_folder(&file(&["jobId-.."])).is_err());
    }

    #[test]
    fn packs_files_and_folders_and_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("current");
        std::fs::create_dir_all(from.join("model")).unwrap();
        std::fs::write(from.join("model/weights.bin"), b"abc").unwrap();
        std::fs::write(from.join("notes.txt"), b"hello").unwrap();
        let to = dir.path().join("a.tar.gz");
        assert!(pack(&from, &to, MAX_ARCHIVE_BYTES).unwrap());
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&to).unwrap(),
        ));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["model", "model/weights.bin", "notes.txt"]);
        // Nothing to pack.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(!pack(&empty, &dir.path().join("b.tar.gz"), MAX_ARCHIVE_BYTES).unwrap());
        assert!(
            !pack(
                &dir.path().join("absent"),
                &dir.path().join("c.tar.gz"),
                MAX_ARCHIVE_BYTES
            )
            .unwrap()
        );
        // Over the cap: Keboola's message.
        let err = pack(&from, &dir.path().join("e.tar.gz"), 5)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Artifact exceeds maximum allowed size of 5.00 B"),
            "{err}"
        );
        assert_eq!(human_size(1 << 30), "1.00 GB");
        // A link planted by the component is refused, never followed.
        std::os::unix::fs::symlink("/etc/passwd", from.join("passwd")).unwrap();
        let err = pack(&from, &dir.path().join("d.tar.gz"), MAX_ARCHIVE_BYTES)
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing symlink"), "{err}");
    }
}
