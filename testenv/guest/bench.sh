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

# The demo Keboola job (examples/demo-component): dockless's whole job (the input table staged
# from the embedded Storage, config.json, the container, both output tables loaded back)
# against runc and crun running the same component script on the same busybox with a /data
# prepared by hand (no mapping): what the job's staging and output mapping cost on top.
readonly DEMO=$REG/demo-component:guest
demo_job=/var/tmp/bench-job
mkdir -p "$demo_job"
printf '%s\n' '{"storage": {"input": {"tables": [{"source": "in.c-demo.orders", "destination": "orders.csv"}]},' \
	' "output": {"tables": []}}, "parameters": {"vat_rate": 0.21, "keep_state": false}}' >"$demo_job/job.json"
dockless --storage "$demo_job/job.db" storage import "$SHARE/orders-1.csv" in.c-demo.orders \
	--primary-key id >/dev/null || {
	echo "bench: cannot import the demo table"
	exit 1
}
dockless pull -q "$DEMO" >/dev/null || {
	echo "bench: cannot pull $DEMO (run scripts/test-guest smoke once: it pushes the image)"
	exit 1
}
demo=/var/tmp/bench-demo
mkdir -p "$demo/rootfs/bin" "$demo/rootfs/component" "$demo/rootfs/tmp" \
	"$demo/rootfs/data/in/tables" "$demo/rootfs/data/in/files" "$demo/rootfs/data/out/tables" \
	"$demo/rootfs/data/out/files"
cp /bin/busybox "$demo/rootfs/bin/busybox"
chroot "$demo/rootfs" /bin/busybox --install -s /bin
install -m 0755 "$SHARE/component.sh" "$demo/rootfs/component/run.sh"
cp "$SHARE/orders-1.csv" "$demo/rootfs/data/in/tables/orders.csv"
printf '%s\n' '{"parameters": {"vat_rate": 0.21, "keep_state": false}}' >"$demo/rootfs/data/config.json"
echo '{}' >"$demo/rootfs/data/in/state.json"
(cd "$demo" && runc spec)
sed -i 's/"terminal": true/"terminal": false/; s/"readonly": true/"readonly": false/;
	s/"sh"$/"\/bin\/sh", "\/component\/run.sh"/' "$demo/config.json"

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
{
	time_runs job-dockless-systemd dockless --storage "$demo_job/job.db" run "$DEMO" \
		--config "$demo_job/job.json" --config-id bench
	time_runs job-dockless-cgroupfs dockless --cgroup-manager cgroupfs --storage "$demo_job/job.db" \
		run "$DEMO" --config "$demo_job/job.json" --config-id bench
	time_runs job-runc-systemd runc --systemd-cgroup run -b "$demo" bench-runc
	time_runs job-runc-cgroupfs runc run -b "$demo" bench-runc
	time_runs job-crun-systemd crun --systemd-cgroup run -b "$demo" bench-crun
	time_runs job-crun-cgroupfs crun run -b "$demo" bench-crun
} >/tmp/bench.job
base=$(awk '$1 == "dockless-systemd" { print $2 }' /tmp/bench.all)
echo
echo "| engine (cgroups) | median ms | / dockless (systemd) | failed runs |"
echo "|---|---|---|---|"
awk -v base="$base" '{ printf "| %s | %.0f | %.2f | %s |\n", $1, $2 / 1000, $2 / base, $3 }' /tmp/bench.all
base=$(awk '$1 == "job-dockless-systemd" { print $2 }' /tmp/bench.job)
echo
echo "The demo job (dockless: the whole job; runc/crun: the component on a prepared /data):"
echo
echo "| engine (cgroups) | median ms | / dockless job (systemd) | failed runs |"
echo "|---|---|---|---|"
awk -v base="$base" '{ printf "| %s | %.0f | %.2f | %s |\n", $1, $2 / 1000, $2 / base, $3 }' /tmp/bench.job
grep -c . "$demo/rootfs/data/out/tables/orders_enriched.csv" | sed 's/^/runc\/crun output rows (with header): /'
echo
echo "leftover scopes: [$(systemctl list-units --all --plain --no-legend 'dockless-*' 'runc-*' 'crun-*' | tr '\n' ' ')]"
