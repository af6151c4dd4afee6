# Shared helpers for the bench scripts (sourced, not run).
#
# Timing: each tool runs ROUNDS times, interleaved (A B C A B C ...) so that machine drift
# hits every tool alike; every run gets a fresh target directory (never `rm -rf` between timed
# runs: on this ext4 mass deletes slow later file creation for minutes); everything is removed
# after the last round. Wall time and peak RSS come from GNU time.

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

BENCH_TMP=${BENCH_TMP:-/var/tmp/dockless-bench}
ROUNDS=${ROUNDS:-5}
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT

# need TOOL...: see bench_need in setup.sh (installs what is missing).
need() {
    bench_need "$@"
}

# measure NAME CMD...: runs CMD once under GNU time, records "NAME seconds rss_kib".
measure() {
    local name=$1; shift
    local stats
    stats=$(mktemp)
    if ! /usr/bin/time -f '%e %M' -o "$stats" "$@" >/dev/null 2>"$stats.err"; then
        echo "bench: $name failed:" >&2; cat "$stats.err" >&2; exit 1
    fi
    echo "$name $(cat "$stats")" >> "$RESULTS"
    rm -f "$stats" "$stats.err"
}

# report BASE: medians, ratios against BASE, peak RSS; as a Markdown table.
report() {
    python3 - "$RESULTS" "$1" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, secs, rss = line.split()
    rows.setdefault(name, []).append((float(secs), int(rss)))
base = statistics.median(s for s, _ in rows[sys.argv[2]])
print(f"| tool | runs | median s | min s | ratio to {sys.argv[2]} | peak RSS MiB |")
print("|---|---|---|---|---|---|")
for name, vals in rows.items():
    secs = [s for s, _ in vals]
    med = statistics.median(secs)
    print(f"| {name} | {len(secs)} | {med:.3f} | {min(secs):.3f} | {med / base:.2f}x | {max(r for _, r in vals) / 1024:.1f} |")
PY
    : > "$RESULTS"
}

# Warm the page cache and the VM's memory (see BENCHMARKS.md: idle memory is handed back to
# the host and the first touch is slow) by reading the blobs and touching a few hundred MiB.
warm_up() {
    python3 -c 'b = bytearray(512 << 20); b[::4096] = b"\1" * len(b[::4096])'
}
