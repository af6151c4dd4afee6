//! End-to-end, root's `dockless run --userns`: the container's root is an unprivileged host
//! uid (the range of the "dockless" entry in /etc/subuid and /etc/subgid, added by
//! `scripts/test-env up`), its layers are kept with owners shifted into that range, and
//! `/data` is handed to it. Needs root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use dockless_testkit::test_env;

use crate::support::{self, text};

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

/// One test's dockless root, with the userns tests' helpers.
struct Root(support::Root);

impl std::ops::Deref for Root {
    type Target = support::Root;

    fn deref(&self) -> &support::Root {
        &self.0
    }
}

impl Root {
    fn new() -> Root {
        let root = support::Root::new("dockless run --userns needs root");
        // The container's root (an unprivileged host uid) must pass through to its rootfs.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        Root(root)
    }

    fn dockless(&self, args: &[&str]) -> Output {
        self.dockless_with(args, &[], "")
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
#[ignore = "needs root and scripts/test-env"]
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
#[ignore = "needs root and scripts/test-env"]
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

/// Issue 18, item 1: with `--userns` the run directory is open to the range's group, so the
/// rootfs mounted below it must give the range nothing it could not have inside: no device
/// node of the image (the shifted store holds none, and the mount is `nodev`) and no setuid
/// (the mount is `nosuid`).
#[test]
#[ignore = "needs root and scripts/test-env"]
fn the_range_gets_no_device_and_no_setuid_through_the_hosts_view_of_a_run() {
    let (base, _) = range();
    let root = Root::new();
    let image = format!("{}/hostile:userns-test", test_env().registry);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/build-hostile-image");
    let built = Command::new(script).arg(&image).output().unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));

    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let child = crate::support::Spawned::new(
        Command::new(env!("CARGO_BIN_EXE_dockless"))
            .env("DOCKLESS_ROOT", root.path())
            .env("DOCKLESS_RUN_ROOT", root.path().join("run"))
            .args(["run", "--userns", "--data", data.to_str().unwrap(), &image])
            .args([
                "--",
                "sh",
                "-c",
                "until [ -e /data/go ]; do sleep 0.05; done",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The run's rootfs as the host sees it, once the container is up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let rootfs = loop {
        let found = std::fs::read_dir(root.path().join("rootfs-v1"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("rootfs"))
            .find(|r| r.join("suid-busybox").exists());
        if let Some(r) = found {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // A member of the range (not its root), in the range's group, which may pass the run dir.
    let as_range = |program: &Path, arg0: &str, args: &[&str]| {
        use std::os::unix::process::CommandExt;
        Command::new(program)
            .arg0(arg0)
            .args(args)
            .uid(base + 1)
            .gid(base)
            .output()
            .unwrap()
    };
    // Positive control: the range does reach the rootfs this way.
    let passwd = as_range(
        Path::new("/bin/cat"),
        "cat",
        &[rootfs.join("etc/passwd").to_str().unwrap()],
    );
    assert!(passwd.status.success(), "{}", text(&passwd.stderr));
    assert!(text(&passwd.stdout).starts_with("root:x:0:0"));
    // No device node: none in the shifted store, and the mount would not honour one.
    assert!(std::fs::symlink_metadata(rootfs.join("disk")).is_err());
    let flags = rustix::fs::statvfs(&rootfs).unwrap().f_flag;
    assert!(
        flags.contains(rustix::fs::StatVfsMountFlags::NODEV)
            && flags.contains(rustix::fs::StatVfsMountFlags::NOSUID),
        "{flags:?}"
    );
    // The setuid binary runs, but as the caller: nosuid.
    let id = as_range(&rootfs.join("suid-busybox"), "busybox", &["id", "-u"]);
    assert!(id.status.success(), "{}", text(&id.stderr));
    assert_eq!(text(&id.stdout).trim(), (base + 1).to_string());

    std::fs::write(data.join("go"), "").unwrap();
    let out = child.wait_with_output();
    assert!(out.status.success(), "{}", text(&out.stderr));
    root.assert_clean();
}
