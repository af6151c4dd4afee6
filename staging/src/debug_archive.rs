//! Keboola's debug mode keeps the data folder as it was at each stage: a zip of `/data`
//! stored in Storage before every container (`stage_<priority>.zip`) and after the last one
//! (`stage_output.zip`), tagged `debug`, the component id, `jobId:<run id>` and
//! `rowId:<row id or nothing>`, not permanent. The files that hold secrets (`config.json`,
//! `in/state.json`, `out/state.json`) go in redacted.
//!
//! The folder is what a container wrote: only regular files (opened without following a
//! link) and real folders are taken; a link, device or FIFO is left out, never followed.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::storage::{NewFile, Slice, Storage};

/// The files redacted in an archive (paths relative to `/data`), both configuration formats.
const MASKED: [&str; 6] = [
    "config.json",
    "in/state.json",
    "out/state.json",
    "config.yml",
    "in/state.yml",
    "out/state.yml",
];

/// Bytes of a masked file read to redact it (config and state are small documents).
const MAX_MASKED_BYTES: u64 = 64 << 20;

/// Keboola's tags of a debug archive.
pub fn tags(component_id: &str, run_id: &str, row_id: Option<&str>) -> Vec<String> {
    vec![
        "debug".to_string(),
        component_id.to_string(),
        format!("jobId:{run_id}"),
        format!("rowId:{}", row_id.unwrap_or_default()),
    ]
}

/// Zips the folder `data` into `to`, the masked files passed through `redact` first.
pub fn pack(data: &Path, to: &Path, redact: &dyn Fn(&[u8]) -> Vec<u8>) -> Result<()> {
    let file = std::fs::File::create(to).map_err(Error::io(to))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    add_dir(&mut zip, data, "", redact)?;
    let mut inner = zip.finish().map_err(|e| zip_err(to, e))?;
    inner.flush().map_err(Error::io(to))
}

fn zip_err(path: &Path, e: zip::result::ZipError) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    }
}

fn add_dir<W: Write + std::io::Seek>(
    zip: &mut zip::ZipWriter<W>,
    dir: &Path,
    prefix: &str,
    redact: &dyn Fn(&[u8]) -> Vec<u8>,
) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .map(|e| e.map(|e| e.file_name()).map_err(Error::io(dir)))
        .collect::<Result<_>>()?;
    names.sort();
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for name in names {
        let path = dir.join(&name);
        let inside = format!("{prefix}{}", name.to_string_lossy());
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        if meta.is_dir() {
            zip.add_directory(inside.as_str(), options)
                .map_err(|e| zip_err(&path, e))?;
            add_dir(zip, &path, &format!("{inside}/"), redact)?;
        } else if meta.is_file() {
            let mut file = crate::out_dir::open_regular(&path)?;
            zip.start_file(inside.as_str(), options)
                .map_err(|e| zip_err(&path, e))?;
            if MASKED.contains(&inside.as_str()) {
                let mut bytes = Vec::new();
                file.take(MAX_MASKED_BYTES)
                    .read_to_end(&mut bytes)
                    .map_err(Error::io(&path))?;
                zip.write_all(&redact(&bytes)).map_err(Error::io(&path))?;
            } else {
                std::io::copy(&mut file, zip).map_err(Error::io(&path))?;
            }
        }
    }
    Ok(())
}

/// Stores `archive` as `<name>.zip` with `tags` in a transaction of its own (a debug archive
/// is kept whatever the job does after); returns the file id.
pub fn store(
    storage: &mut dyn Storage,
    archive: &Path,
    name: &str,
    tags: Vec<String>,
) -> Result<i64> {
    let file = NewFile {
        name: format!("{name}.zip"),
        tags,
        is_public: false,
        is_permanent: false,
        is_encrypted: true,
    };
    let reader = std::fs::File::open(archive).map_err(Error::io(archive))?;
    let mut tx = storage.begin()?;
    let id = tx.add_file(
        &file,
        &mut std::iter::once(Slice {
            name: file.name.clone(),
            reader: Box::new(reader),
            origin: archive.to_path_buf(),
        }),
    )?;
    tx.commit()?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zips_the_folder_with_secrets_redacted_and_links_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("in/tables")).unwrap();
        std::fs::write(data.join("config.json"), r##"{"#token": "s3cret"}"##).unwrap();
        std::fs::write(data.join("in/tables/a.csv"), "x\ns3cret\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", data.join("in/passwd")).unwrap();
        let to = dir.path().join("stage_0.zip");
        let redact = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .replace("s3cret", "[hidden]")
                .into_bytes()
        };
        pack(&data, &to, &redact).unwrap();
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&to).unwrap()).unwrap();
        let mut names: Vec<String> = zip.file_names().map(str::to_string).collect();
        names.sort();
        assert_eq!(
            names,
            ["config.json", "in/", "in/tables/", "in/tables/a.csv"]
        );
        let mut text = String::new();
        zip.by_name("config.json")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, r##"{"#token": "[hidden]"}"##);
        // Only the masked files are redacted: data is data.
        let mut text = String::new();
        zip.by_name("in/tables/a.csv")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "x\ns3cret\n");
        assert_eq!(
            tags("demo", "42", None),
            ["debug", "demo", "jobId:42", "rowId:"]
        );
    }
}
