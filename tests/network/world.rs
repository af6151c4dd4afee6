//! The test's own network world, built from namespaces it creates and removes: an "outside"
//! namespace with an HTTP server (on 198.51.100.10, a name `outside.test` served by dnsmasq on
//! the gateway 10.203.0.1) and a "host" namespace (10.203.0.2, default route to the outside,
//! HTTP servers of its own on its loopback and on its own address). dockless runs in the
//! "host" namespace, entered with `nsenter --net` (never `ip netns exec`, which remounts /sys
//! and hides this machine's cgroup v1 mounts), in a private mount namespace whose
//! /etc/resolv.conf names the outside's DNS server. No traffic leaves the machine and the
//! machine's own interfaces, routes and firewall are never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::text;

/// The outside server's address and name, and its port.
pub const OUTSIDE_ADDR: &str = "198.51.100.10";
pub const OUTSIDE_NAME: &str = "outside.test";
pub const OUTSIDE_PORT: u16 = 8080;
/// The outside end of the link: the host namespace's gateway and DNS server.
pub const GATEWAY: &str = "10.203.0.1";
/// The host namespace's own address.
pub const HOST_ADDR: &str = "10.203.0.2";
/// Another address of the host namespace (on its loopback device, as a service address).
pub const HOST_OTHER_ADDR: &str = "10.77.0.1";
/// Ports of the host namespace's own servers (on its loopback, on its own address, on its
/// other address).
pub const HOST_LOOPBACK_PORT: u16 = 8081;
pub const HOST_ADDR_PORT: u16 = 8082;
pub const HOST_OTHER_PORT: u16 = 8083;
/// What the outside serves at /f.txt, and what the host's own servers serve.
pub const OUTSIDE_BODY: &str = "hello from outside";
pub const HOST_BODY: &str = "host-secret";
/// The table the outside serves at /table.csv.
pub const TABLE_CSV: &str = "id,name\n1,alpha\n2,beta\n";

/// Who runs dockless in the world.
pub enum As<'a> {
    /// Root, with this dockless root.
    Root(&'a Path),
    /// An ordinary user (rootless), with this home (its dockless root is `<home>/root`) and
    /// the mode of the `/dev/net/tun` node it sees.
    User {
        name: &'a str,
        home: &'a Path,
        binary: &'a Path,
        tun_mode: &'a str,
    },
}

/// The namespaces, servers and files of one test; all removed on drop.
pub struct World {
    pub outside: String,
    pub host: String,
    dir: tempfile::TempDir,
    servers: Vec<Child>,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

impl World {
    pub fn new() -> World {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("dockless-net-")
            .tempdir()
            .unwrap();
        let mut world = World {
            outside: format!("dlt-o-{id}"),
            host: format!("dlt-h-{id}"),
            dir,
            servers: Vec::new(),
        };
        let (o, h) = (world.outside.clone(), world.host.clone());
        ip(&["netns", "add", &o]);
        ip(&["netns", "add", &h]);
        // Created inside the host namespace with its peer in the outside one: the machine's
        // own namespace never holds either end.
        let (va, vb) = (format!("dlv{id}a"), format!("dlv{id}b"));
        ip(&[
            "-n", &h, "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &o,
        ]);
        ip(&[
            "-n",
            &o,
            "addr",
            "add",
            &format!("{GATEWAY}/24"),
            "dev",
            &vb,
        ]);
        ip(&[
            "-n",
            &o,
            "addr",
            "add",
            &format!("{OUTSIDE_ADDR}/32"),
            "dev",
            "lo",
        ]);
        ip(&["-n", &o, "link", "set", "lo", "up"]);
        ip(&["-n", &o, "link", "set", &vb, "up"]);
        ip(&[
            "-n",
            &h,
            "addr",
            "add",
            &format!("{HOST_ADDR}/24"),
            "dev",
            &va,
        ]);
        ip(&["-n", &h, "link", "set", "lo", "up"]);
        ip(&["-n", &h, "link", "set", &va, "up"]);
        ip(&["-n", &h, "route", "add", "default", "via", GATEWAY]);
        ip(&[
            "-n",
            &h,
            "addr",
            "add",
            &format!("{HOST_OTHER_ADDR}/32"),
            "dev",
            "lo",
        ]);

        let www = world.path().join("www");
        let host_www = world.path().join("host-www");
        for d in [&www, &host_www] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(www.join("f.txt"), format!("{OUTSIDE_BODY}\n")).unwrap();
        std::fs::write(www.join("table.csv"), TABLE_CSV).unwrap();
        std::fs::write(host_www.join("f.txt"), format!("{HOST_BODY}\n")).unwrap();
        std::fs::write(world.resolv_conf(), format!("nameserver {GATEWAY}\n")).unwrap();

        let outside_http = format!("{OUTSIDE_ADDR}:{OUTSIDE_PORT}");
        world.serve(
            &o,
            &[
                "busybox",
                "httpd",
                "-f",
                "-p",
                &outside_http,
                "-h",
                www.to_str().unwrap(),
            ],
        );
        world.serve(
            &o,
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={GATEWAY}"),
                &format!("--host-record={OUTSIDE_NAME},{OUTSIDE_ADDR}"),
                "--user=root",
                "--pid-file",
            ],
        );
        for listen in [
            format!("127.0.0.1:{HOST_LOOPBACK_PORT}"),
            format!("{HOST_ADDR}:{HOST_ADDR_PORT}"),
            format!("{HOST_OTHER_ADDR}:{HOST_OTHER_PORT}"),
        ] {
            world.serve(
                &h,
                &[
                    "busybox",
                    "httpd",
                    "-f",
                    "-p",
                    &listen,
                    "-h",
                    host_www.to_str().unwrap(),
                ],
            );
        }
        // Positive controls: every server answers from the host namespace itself.
        world.wait_for(
            &format!("http://{OUTSIDE_NAME}:{OUTSIDE_PORT}/f.txt"),
            OUTSIDE_BODY,
        );
        world.wait_for(
            &format!("http://{OUTSIDE_ADDR}:{OUTSIDE_PORT}/f.txt"),
            OUTSIDE_BODY,
        );
        world.wait_for(
            &format!("http://127.0.0.1:{HOST_LOOPBACK_PORT}/f.txt"),
            HOST_BODY,
        );
        world.wait_for(
            &format!("http://{HOST_ADDR}:{HOST_ADDR_PORT}/f.txt"),
            HOST_BODY,
        );
        world.wait_for(
            &format!("http://{HOST_OTHER_ADDR}:{HOST_OTHER_PORT}/f.txt"),
            HOST_BODY,
        );
        world
    }

    /// The test's scratch folder (served files, resolv.conf).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resolv_conf(&self) -> PathBuf {
        self.path().join("resolv.conf")
    }

    fn serve(&mut self, netns: &str, argv: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        self.servers.push(child);
    }

    /// `cmd` run in the host namespace with the world's resolv.conf (as dockless sees it).
    fn in_host(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host))
            .args([
                "--",
                "unshare",
                "-m",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(
                "mount --bind \"$0\" /etc/resolv.conf || exit 99
                 if [ -n \"${DLT_TUN_MODE:-}\" ]; then
                     mount -t tmpfs -o mode=755 tmpfs /dev/net &&
                     mknod -m \"$DLT_TUN_MODE\" /dev/net/tun c 10 200 || exit 99
                 fi
                 exec \"$@\"",
            )
            .arg(self.resolv_conf())
            .args(argv);
        cmd
    }

    /// Fetches `url` from the host namespace until it answers `body` (servers start
    /// asynchronously); fails the test after 10 s. curl, not the static busybox's wget, whose
    /// name lookups crash outside a container.
    pub fn wait_for(&self, url: &str, body: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self
                .in_host(&["curl", "-s", "-m", "2", url])
                .output()
                .unwrap();
            if text(&out.stdout).contains(body) {
                return;
            }
            assert!(
                Instant::now() < until,
                "{url} does not answer {body:?} from the host namespace: {}",
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host namespace's interfaces, addresses, routes and nft ruleset, to compare before
    /// and after. Link state (carrier, duplicate address detection) and the kernel's own
    /// link-local addresses come and go with it, so they are left out.
    pub fn host_state(&self) -> String {
        let h = &self.host;
        let mut s = String::new();
        for l in text(&ip(&["-n", h, "-o", "link"]).stdout).lines() {
            s += l.split_whitespace().nth(1).unwrap_or_default();
            s += "\n";
        }
        for l in text(&ip(&["-n", h, "-o", "addr"]).stdout).lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 3 && !f[3].starts_with("fe80:") {
                s += &format!("{} {} {}\n", f[1], f[2], f[3]);
            }
        }
        s += &text(&ip(&["-n", h, "route"]).stdout);
        s += &text(&ip(&["-n", h, "-6", "route"]).stdout);
        s += &text(
            &run(Command::new("ip").args(["netns", "exec", h, "nft", "list", "ruleset"])).stdout,
        );
        s
    }

    /// `dockless args...` in the host namespace, as `who`, with `stdin`.
    pub fn dockless(&self, who: &As, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
        let mut cmd = match who {
            As::Root(root) => {
                let mut cmd = self.in_host(&[env!("CARGO_BIN_EXE_dockless")]);
                cmd.env("DOCKLESS_ROOT", root)
                    .env("DOCKLESS_RUN_ROOT", root.join("run"))
                    .envs(env.iter().copied());
                cmd
            }
            As::User {
                name,
                home,
                binary,
                tun_mode,
            } => {
                let root = home.join("root");
                let mut argv: Vec<String> = ["runuser", "-u", name, "--", "env", "-i"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                argv.push(format!("HOME={}", home.display()));
                argv.push("PATH=/usr/sbin:/usr/bin:/sbin:/bin".into());
                argv.push(format!("DOCKLESS_ROOT={}", root.display()));
                argv.push(format!("DOCKLESS_RUN_ROOT={}", root.join("run").display()));
                argv.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
                argv.push(binary.display().to_string());
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let mut cmd = self.in_host(&argv);
                cmd.env("DLT_TUN_MODE", tun_mode).current_dir(home);
                cmd
            }
        };
        cmd.args(args);
        feed(cmd, stdin)
    }
}

/// Runs `cmd` with `stdin` written to it and its output collected.
fn feed(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

impl Drop for World {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        // Deleting a namespace removes its end of the veth pair, and with it the other.
        for ns in [&self.host, &self.outside] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Processes of pasta (`pasta`, which executes `passt.avx2` or `passt` under the same name).
pub fn pasta_processes() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if comm.trim().starts_with("passt") || comm.trim() == "pasta" || argv0.ends_with(b"pasta") {
            found.push(format!(
                "{} {}",
                name.to_string_lossy(),
                text(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// The names in /run/netns.
pub fn named_netns() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
