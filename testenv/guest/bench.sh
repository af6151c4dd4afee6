#!/bin/bash
# The guest benchmark (issue 12): a warm run of `true` in a Debian guest booting systemd on
# cgroup v2, `dockless run` of the busybox test image against `runc run` and `crun run` of a
# bundle holding the same busybox, each with systemd's and with its own cgroup handling. Run by
# `scripts/test-guest run --file runc --file crun --file libyajl.so.2 testenv/guest/bench.sh`
# (see BENCHMARKS.md for the whole command); prints a markdown table of medians and ratios.
# Under QEMU's software emulation absolute times mean little: the ratios are the result.
set -u
readonly REG=10.0.2.2:5000
readonly IMAGE=$REG/busybox:latest
readonly SHARE=${GUEST_SHARE:-/run/test-guest/in}
readonly RUNS=${BENCH_RUNS:-20} WARMUP=${BENCH_WARMUP:-3}
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DOCKLESS_INSECURE_REGISTRIES=$REG

install -m 0755 "$SHARE/bin/dockless" /usr/local/bin/dockless
install -m 0755 "$SHARE/runc" /usr/local/bin/runc
install -m 0755 "$SHARE/crun" /usr/local/bin/crun
mkdir -p /opt/bench-lib
cp "$SHARE/libyajl.so.2" /opt/bench-lib/
crun() { LD_LIBRARY_PATH=/opt/bench-lib command crun "$@"; }

dockless pull -q "$IMAGE" >/dev/null || {
	echo "bench: cannot pull $IMAGE"
	exit 1
}
# The same busybox as the image's (Debian's static one, which the guest has), as a bundle.
bundle=/var/tmp/bench-bundle
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
ln -sf busybox "$bundle/rootfs/bin/true"
(cd "$bundle" && runc spec)
sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/bin\/true"/' "$bundle/config.json"

# time_runs NAME CMD...: WARMUP untimed runs, then RUNS timed ones; prints the median (ms).
time_runs() {
	local name=$1 i t0 t1 failed=0
	shift
	for ((i = 0; i < WARMUP; i++)); do "$@" >/dev/null 2>&1; done
	: >"/tmp/bench.$name"
	for ((i = 0; i < RUNS; i++)); do
		t0=$(date +%s%N)
		"$@" >/dev/null 2>&1 || failed=$((failed + 1))
		t1=$(date +%s%N)
		echo $(((t1 - t0) / 1000)) >>"/tmp/bench.$name"
	done
	local median
	median=$(sort -n "/tmp/bench.$name" | sed -n "$(((RUNS + 1) / 2))p")
	printf '%s %s %s\n' "$name" "$median" "$failed"
}

echo "kernel $(uname -r), $(nproc) CPUs (QEMU TCG), $RUNS runs after $WARMUP warm-up each"
{
	time_runs dockless-systemd dockless run "$IMAGE" -- true
	time_runs dockless-cgroupfs dockless --cgroup-manager cgroupfs run "$IMAGE" -- true
	time_runs runc-systemd runc --systemd-cgroup run -b "$bundle" bench-runc
	time_runs runc-cgroupfs runc run -b "$bundle" bench-runc
	time_runs crun-systemd crun --systemd-cgroup run -b "$bundle" bench-crun
	time_runs crun-cgroupfs crun run -b "$bundle" bench-crun
} >/tmp/bench.all
base=$(awk '$1 == "dockless-systemd" { print $2 }' /tmp/bench.all)
echo
echo "| engine (cgroups) | median ms | / dockless (systemd) | failed runs |"
echo "|---|---|---|---|"
awk -v base="$base" '{ printf "| %s | %.0f | %.2f | %s |\n", $1, $2 / 1000, $2 / base, $3 }' /tmp/bench.all
echo
echo "leftover scopes: [$(systemctl list-units --all --plain --no-legend 'dockless-*' 'runc-*' 'crun-*' | tr '\n' ' ')]"
