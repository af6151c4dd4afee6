//! End-to-end, root's `dockless run --userns`: the container's root is an unprivileged host
//! uid (the range of the "dockless" entry in /etc/subuid and /etc/subgid, added by
//! `scripts/test-env up`), its layers are kept with owners shifted into that range, and
//! `/data` is handed to it. Needs root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use dockless_testkit::test_env;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The first range of `dockless` in /etc/subuid (base, count).
fn range() -> (u32, u32) {
    let text = std::fs::read_to_string("/etc/subuid").unwrap();
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 3 && f[0] == "dockless")
                .then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()))
        })
        .expect("no `dockless` range in /etc/subuid: run scripts/test-env up")
}

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "run the tests through scripts/test"
        );
        let dir = tempfile::tempdir().unwrap();
        // The container's root (an unprivileged host uid) must pass through to its rootfs.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        Root { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn dockless(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dockless"))
            .env("DOCKLESS_ROOT", self.path())
            .env("DOCKLESS_RUN_ROOT", self.path().join("run"))
            .args(args)
            .output()
            .unwrap()
    }

    fn assert_clean(&self) {
        dockless_testkit::assert_clean(
            self.path(),
            &[
                "rootfs-v1",
                "jobs-v1",
                "run/containers-v1/runs",
                "run/containers-v1/containers",
            ],
        );
    }
}

#[test]
fn the_containers_root_is_an_unprivileged_host_range() {
    let (base, count) = range();
    let root = Root::new();
    let layered = format!("{}/layered:latest", test_env().registry);
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("input.txt"), "from the host\n").unwrap();
    let out = root.dockless(&[
        "run",
        "--userns",
        "--data",
        data.to_str().unwrap(),
        &layered,
        "--",
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; \
         stat -c '%u:%g %n' / /fixture/owned-1000.txt /fixture/hello.txt /data/input.txt; \
         cat /data/input.txt; echo out > /data/out.txt; mkdir /data/sub",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (b, c) = (base.to_string(), count.to_string());
    assert_eq!(lines[0], ["0", b.as_str(), c.as_str()], "{stdout}");
    assert_eq!(lines[1], ["0", b.as_str(), c.as_str()], "{stdout}");
    assert_eq!(lines[2], ["0"], "{stdout}");
    assert_eq!(lines[3], ["0:0", "/"], "{stdout}");
    assert_eq!(
        lines[4],
        ["1000:1000", "/fixture/owned-1000.txt"],
        "{stdout}"
    );
    assert_eq!(lines[5], ["0:0", "/fixture/hello.txt"], "{stdout}");
    assert_eq!(lines[6], ["0:0", "/data/input.txt"], "{stdout}");
    assert_eq!(lines[7], ["from", "the", "host"], "{stdout}");

    // On the host everything of the container belongs to the range, never to root.
    for name in ["out.txt", "sub", "input.txt"] {
        let m = std::fs::symlink_metadata(data.join(name)).unwrap();
        assert_eq!((m.uid(), m.gid()), (base, base), "{name}");
    }
    let shifted = root
        .path()
        .join(format!("snapshots-v2-userns-{base}-{count}"));
    let mut seen = 0;
    for snap in std::fs::read_dir(&shifted).unwrap().flatten() {
        if let Ok(m) = std::fs::symlink_metadata(snap.path().join("fixture/owned-1000.txt")) {
            assert_eq!((m.uid(), m.gid()), (base + 1000, base + 1000));
            seen += 1;
        }
        if let Ok(m) = std::fs::symlink_metadata(snap.path().join("fixture/hello.txt")) {
            assert_eq!((m.uid(), m.gid()), (base, base));
            seen += 1;
        }
    }
    assert_eq!(seen, 2, "fixture files not found in {}", shifted.display());
    root.assert_clean();

    // rmi removes the shifted snapshots too.
    let out = root.dockless(&["rmi", &layered]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(&shifted)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_keboola_job_runs_with_userns_and_host_networking_is_refused() {
    let root = Root::new();
    let busybox = format!("{}/busybox:latest", test_env().registry);
    let out = root.dockless(&[
        "run",
        "--userns",
        "--network",
        "host",
        &busybox,
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr)
            .contains("the host's network namespace belongs to the host's user namespace"),
        "{}",
        text(&out.stderr)
    );

    // The demo job: input mapping, the component as the range's root, output mapping.
    let image = format!("{}/demo-component:userns-test", test_env().registry);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-component");
    let built = Command::new(example.join("build-image"))
        .arg(&image)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    let orders = example.join("data/orders-1.csv");
    let out = root.dockless(&[
        "storage",
        "import",
        orders.to_str().unwrap(),
        "in.c-demo.orders",
        "--primary-key",
        "id",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = root.dockless(&[
        "run",
        &image,
        "--userns",
        "--config",
        example.join("config.json").to_str().unwrap(),
        "--component-id",
        "demo-component",
        "--config-id",
        "demo",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "success", "{result}");
    let tables = text(&root.dockless(&["storage", "tables"]).stdout);
    assert!(
        tables.contains("out.c-demo.orders_enriched\t4 rows"),
        "{tables}"
    );
    root.assert_clean();
}
