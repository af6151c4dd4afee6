//! What a hostile container can leave in /data/out.

use std::os::unix::fs::symlink;

use dockless_staging::{Error, Storage};
use serde_json::json;

use crate::output_mapping::run_job;
use crate::{Backend, storage};

fn secret() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shadow");
    std::fs::write(&path, "root,$6$secret\nx,y\n").unwrap();
    (dir, path)
}

fn a_symlink_in_out_tables_is_refused_and_nothing_is_stored(backend: Backend) {
    let (_s, target) = secret();
    let (d, mut s) = storage(backend);
    let before = d.dump();
    let (_w, result) = run_job(
        &mut s,
        json!({"storage": {"output": {"default_bucket": "out.c-x"}}}),
        true,
        |out| {
            symlink(&target, out.join("tables/shadow.csv")).unwrap();
            symlink("/etc/shadow", out.join("tables/etc.csv")).unwrap();
        },
    );
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsafeEntry {
                kind: "symlink",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_user_error());
    assert!(s.tables().unwrap().is_empty());
    drop(s);
    assert_eq!(d.dump(), before);
}

fn symlinked_slices_manifests_files_and_folders_are_refused(backend: Backend) {
    let (_s, target) = secret();
    let cases: Vec<crate::WriteOut<'_>> = vec![
        Box::new(|out: &std::path::Path| {
            std::fs::create_dir_all(out.join("tables/s.csv")).unwrap();
            symlink(&target, out.join("tables/s.csv/part1")).unwrap();
            std::fs::write(
                out.join("tables/s.csv.manifest"),
                r#"{"columns": ["a", "b"], "destination": "out.c-x.s"}"#,
            )
            .unwrap();
        }),
        Box::new(|out: &std::path::Path| {
            std::fs::write(out.join("tables/t.csv"), "a\n1\n").unwrap();
            symlink(&target, out.join("tables/t.csv.manifest")).unwrap();
        }),
        Box::new(|out: &std::path::Path| symlink(&target, out.join("files/leak.txt")).unwrap()),
        Box::new(|out: &std::path::Path| {
            std::fs::remove_dir(out.join("tables")).unwrap();
            symlink(target.parent().unwrap(), out.join("tables")).unwrap();
        }),
        Box::new(|out: &std::path::Path| symlink(&target, out.join("state.json")).unwrap()),
    ];
    for (i, write) in cases.iter().enumerate() {
        let (_d, mut s) = storage(backend);
        let (_w, result) = run_job(
            &mut s,
            json!({"storage": {"output": {"default_bucket": "out.c-x"}}}),
            true,
            |o| write(o),
        );
        let err = result.expect_err(&format!("case {i}"));
        assert!(
            matches!(err, Error::UnsafeEntry { .. }),
            "case {i}: {err:?}"
        );
        assert!(s.tables().unwrap().is_empty() && s.files(&Default::default()).unwrap().is_empty());
    }
}

fn fifos_and_sockets_are_refused_without_blocking(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let (_w, result) = run_job(
        &mut s,
        json!({"storage": {"output": {"default_bucket": "out.c-x"}}}),
        true,
        |out| {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                out.join("tables/pipe.csv"),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o644),
                0,
            )
            .unwrap();
        },
    );
    assert!(matches!(
        result.unwrap_err(),
        Error::UnsafeEntry { kind: "fifo", .. }
    ));
    let (_d, mut s) = storage(backend);
    let (_w, result) = run_job(&mut s, json!({}), true, |out| {
        let _l = std::os::unix::net::UnixListener::bind(out.join("files/sock")).unwrap();
    });
    assert!(matches!(
        result.unwrap_err(),
        Error::UnsafeEntry { kind: "socket", .. }
    ));
}

crate::backends!(
    a_symlink_in_out_tables_is_refused_and_nothing_is_stored,
    symlinked_slices_manifests_files_and_folders_are_refused,
    fifos_and_sockets_are_refused_without_blocking,
);
