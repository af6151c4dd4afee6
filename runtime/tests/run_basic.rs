//! Real containers (as root): exit codes, output streams, /data, network isolation,
//! users, read-only rootfs, parallel runs, bounded output.

#![allow(clippy::print_stderr)] // the 1 GiB test reports its measured peak RSS

#[path = "run_common/mod.rs"]
mod common;

use common::Fixture;
use dockless_runtime::bundle::NetworkMode;

#[test]
#[ignore = "needs root and scripts/test-env"]
fn exit_codes_are_reported() {
    let fx = Fixture::new("exit");
    for code in [0, 1, 3, 137] {
        let out = fx.run(&fx.sh(&format!("exit {code}")));
        assert_eq!(out.result.exit_code, code);
        assert!(!out.result.timed_out && !out.result.oom_killed);
    }
    // A killed child's status propagates through the shell as 128 + 9.
    let out = fx.run(&fx.sh("sleep 100 & kill -9 $!; wait $!"));
    assert_eq!(out.result.exit_code, 137);
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn stdout_and_stderr_are_kept_apart_and_streamed() {
    let fx = Fixture::new("streams");
    let out = fx.run(&fx.sh("echo to-out; echo to-err >&2; echo more-out; echo more-err >&2"));
    assert_eq!(out.stdout(), "to-out\nmore-out\n");
    assert_eq!(out.stderr(), "to-err\nmore-err\n");
    assert_eq!(out.streamed_out, "to-out\nmore-out\n");
    assert_eq!(out.streamed_err, "to-err\nmore-err\n");
    assert!(!out.result.stdout.truncated());
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn image_config_drives_the_process() {
    let fx = Fixture::new("imagecfg");
    let json = br#"{"architecture":"amd64","config":{"Entrypoint":["sh","-c"],
        "Cmd":["echo $GREETING from $(pwd) as $(id -un) on $(hostname)"],"Env":["PATH=/bin","GREETING=hello"],
        "WorkingDir":"/home/alice","User":"alice"}}"#;
    let image = dockless_runtime::bundle::ImageConfig::from_image_config_json(json).unwrap();
    let mut spec = dockless_runtime::bundle::RunSpec::new(image);
    let out = fx.run(&spec);
    assert_eq!(
        out.stdout(),
        "hello from /home/alice as alice on dockless\n"
    );
    spec.command = Some(vec!["echo $GREETING $EXTRA; exit 4".into()]);
    spec.env = vec!["EXTRA=added".into(), "GREETING=overridden".into()];
    let out = fx.run(&spec);
    assert_eq!(out.stdout(), "overridden added\n");
    assert_eq!(out.result.exit_code, 4);
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn data_dir_is_bound_read_write() {
    let fx = Fixture::new("data");
    let data = fx.host_dir("data");
    std::fs::write(data.join("in.txt"), "input\n").unwrap();
    let tmp = fx.host_dir("tmp");
    let mut spec = fx.sh(
        "cat /data/in.txt > /data/out.txt; echo written >> /data/out.txt; echo t > /tmp/t; \
         grep ' /data ' /proc/mounts",
    );
    spec.data_dir = Some(data.clone());
    spec.tmp = dockless_runtime::bundle::TmpMount::HostDir(tmp.clone());
    let out = fx.run(&spec);
    assert_eq!(out.result.exit_code, 0, "stderr: {}", out.stderr());
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap(),
        "input\nwritten\n"
    );
    let opts = out.stdout();
    assert!(
        opts.contains("rw") && opts.contains("nosuid") && opts.contains("nodev"),
        "{opts}"
    );
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn network_none_has_only_loopback_and_it_works() {
    let fx = Fixture::new("net");
    // A listener on the host's loopback: the container must not reach it.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    // A server inside answers one connection; the client retries until it is listening.
    let script = format!(
        "ls /sys/class/net; ip -o link show lo; \
         echo ping-inside | nc -l -p 7777 > /tmp/got & srv=$!; i=0; \
         until echo hello | nc 127.0.0.1 7777; do \
           i=$((i+1)); [ $i -gt 200 ] && break; sleep 0.05; done; \
         wait $srv; echo \"loopback=$(cat /tmp/got)\"; \
         if echo x | nc -w 2 127.0.0.1 {port}; then echo host-reachable; else echo host-unreachable; fi"
    );
    let out = fx.run(&fx.sh(&script));
    let stdout = out.stdout();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("lo"), "only lo expected: {stdout}");
    assert!(
        stdout.contains("<LOOPBACK,UP,LOWER_UP>"),
        "lo must be up: {stdout}"
    );
    assert!(
        stdout.contains("ping-inside"),
        "127.0.0.1 inside must work: {stdout}"
    );
    assert!(stdout.contains("host-unreachable"), "{stdout}");
    assert!(matches!(host.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn network_host_shares_the_host_namespace() {
    let fx = Fixture::new("nethost");
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let mut spec = fx.sh(&format!("echo from-container | nc -w 2 127.0.0.1 {port}"));
    spec.network = NetworkMode::Host;
    let accepted = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = host.accept().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    let out = fx.run(&spec);
    assert_eq!(out.result.exit_code, 0, "{}", out.stderr());
    assert_eq!(accepted.join().unwrap(), "from-container\n");
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn non_root_user_gets_its_groups_and_no_capabilities() {
    let fx = Fixture::new("user");
    let mut spec = fx
        .sh("id; grep -E '^(Groups|Cap(Eff|Prm|Bnd|Inh|Amb))' /proc/self/status; echo HOME=$HOME");
    spec.user = Some("alice".into());
    let out = fx.run(&spec);
    let s = out.stdout();
    assert!(
        s.starts_with("uid=1000(alice) gid=1000(alice) groups="),
        "{s}"
    );
    assert!(s.contains("Groups:\t50 1000 \n"), "{s}");
    assert!(s.contains("CapEff:\t0000000000000000"), "{s}");
    assert!(s.contains("CapPrm:\t0000000000000000"), "{s}");
    assert!(s.contains("CapInh:\t0000000000000000"), "{s}");
    assert!(s.contains("CapAmb:\t0000000000000000"), "{s}");
    assert!(s.contains("CapBnd:\t00000000800405fb"), "{s}");
    assert!(s.contains("HOME=/home/alice"), "{s}");
    spec.user = Some("4242:50".into());
    let out = fx.run(&spec);
    let s = out.stdout();
    assert!(s.starts_with("uid=4242 gid=50(staff)"), "{s}");
    assert!(s.contains("Groups:\t50 \n"), "{s}");
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn read_only_rootfs_keeps_data_and_tmp_writable() {
    let fx = Fixture::new("readonly");
    let data = fx.host_dir("data");
    let mut spec = fx.sh(
        "if touch /rootfile 2>/dev/null; then echo root-writable; else echo root-ro; fi; \
         touch /tmp/t && echo tmp-ok; touch /data/d && echo data-ok",
    );
    spec.read_only_rootfs = true;
    spec.data_dir = Some(data.clone());
    let out = fx.run(&spec);
    assert_eq!(
        out.stdout(),
        "root-ro\ntmp-ok\ndata-ok\n",
        "{}",
        out.stderr()
    );
    assert!(!fx.rootfs.join("rootfile").exists());
    assert!(data.join("d").exists());
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn parallel_runs_from_one_process() {
    let fx = Fixture::new("parallel");
    let runner = fx.runner();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let runner = &runner;
                let fx = &fx;
                s.spawn(move || {
                    let out = fx.run_with(
                        runner,
                        &fx.sh(&format!("sleep 0.2; echo run-{i}; exit {i}")),
                    );
                    assert_eq!(out.stdout(), format!("run-{i}\n"));
                    assert_eq!(out.result.exit_code, i);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_gigabyte_of_output_is_bounded_in_memory() {
    let fx = Fixture::new("bigout");
    let limit = 256 << 10;
    let runner = fx.runner().with_capture_limit(limit);
    let mut seen: u64 = 0;
    let script = "head -c 1073741824 /dev/zero; echo tail-marker";
    let result = runner
        .run(&fx.rootfs, &fx.sh(script), &mut |_, c| {
            seen += c.len() as u64
        })
        .unwrap();
    assert_eq!(result.exit_code, 0);
    assert_eq!(seen, (1 << 30) + 12);
    assert_eq!(result.stdout.total_bytes, (1 << 30) + 12);
    assert_eq!(result.stdout.head.len(), limit);
    assert_eq!(result.stdout.tail.len(), limit);
    assert!(result.stdout.tail.ends_with(b"tail-marker\n"));
    assert!(result.stdout.truncated());

    // Peak RSS of a runner process (the probe, default 1 MiB capture limits) that streams
    // 1 GiB through: measured for that process alone with wait4.
    let mut child = std::process::Command::new(common::PROBE)
        .args(["run", "--rootfs"])
        .arg(&fx.rootfs)
        .arg("--state")
        .arg(&fx.state)
        .args([
            "--cgroup-parent",
            &fx.cgroup_parent,
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // VmHWM of the probe itself (not of the container's processes), sampled while the
    // output flows; the high-water mark only grows, so the last sample is the peak so far.
    let status_path = format!("/proc/{}/status", child.id());
    let mut max_rss_kib = 0u64;
    let mut counted: u64 = 0;
    let mut last = Vec::new();
    {
        use std::io::Read;
        let mut out = child.stdout.take().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            counted += n as u64;
            last = buf[..n].to_vec();
            if counted % (64 << 20) < n as u64
                && let Some(kib) = vm_hwm_kib(&status_path)
            {
                max_rss_kib = max_rss_kib.max(kib);
            }
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(counted, (1 << 30) + 12);
    assert!(last.ends_with(b"tail-marker\n"));
    assert!(max_rss_kib > 0, "no RSS sample taken");
    assert!(
        max_rss_kib < 64 * 1024,
        "runner peak RSS {max_rss_kib} KiB for 1 GiB of output"
    );
    eprintln!("runner peak RSS with 1 GiB of output: {max_rss_kib} KiB");
    fx.assert_clean();
}

fn vm_hwm_kib(status_path: &str) -> Option<u64> {
    std::fs::read_to_string(status_path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn output_is_streamed_while_the_container_runs() {
    // The container waits for a file that the caller only creates once it has seen the
    // container's first line: this finishes only if output arrives live.
    let fx = Fixture::new("live");
    let data = fx.host_dir("data");
    let mut spec = fx.sh(
        "echo early; i=0; while [ ! -e /data/go ] && [ $i -lt 400 ]; do sleep 0.05; \
         i=$((i+1)); done; [ -e /data/go ] && echo late",
    );
    spec.data_dir = Some(data.clone());
    spec.timeout = Some(std::time::Duration::from_secs(60));
    let mut seen = String::new();
    let result = fx
        .runner()
        .run(&fx.rootfs, &spec, &mut |_, chunk| {
            seen.push_str(&String::from_utf8_lossy(chunk));
            if seen.contains("early") {
                std::fs::write(data.join("go"), "").unwrap();
            }
        })
        .unwrap();
    assert_eq!(result.exit_code, 0);
    assert_eq!(seen, "early\nlate\n");
    fx.assert_clean();
}
