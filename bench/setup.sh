# What every bench script needs before it measures anything (sourced, not run): the tools it
# compares against, installed from Debian when missing, and the release binaries it times,
# built here. A bench script then runs as written on a fresh machine of this kind, instead of
# stopping at "build first" or "hyperfine missing".

BENCH_REPO=${BENCH_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}

# The Debian package that provides TOOL (a command name or an absolute path); none for tools
# that do not come from Debian here (cargo comes from rustup).
bench_package() {
    case $1 in
        hyperfine | runc | crun | podman | skopeo | umoci | python3 | git | sqlite3 | curl | tar)
            echo "$1" ;;
        /usr/bin/time) echo time ;;
        zcat) echo gzip ;;
        awk) echo gawk ;;
        runuser | nsenter | unshare) echo util-linux ;;
        pasta) echo passt ;;
        ip) echo iproute2 ;;
        /bin/busybox) echo busybox-static ;;
        *) return 1 ;;
    esac
}

# bench_need TOOL...: every TOOL is there afterwards. Missing ones are installed with apt-get
# (as root; the package lists are refreshed first when apt does not know a package yet); a
# missing tool that is not a Debian package stops the script with what to install.
bench_need() {
    local tool pkg missing=()
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 && continue
        pkg=$(bench_package "$tool") || {
            echo "bench: $tool missing (not a Debian package: install it, e.g. cargo with rustup)" >&2
            exit 1
        }
        missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench: missing ${missing[*]}: as root, apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    for pkg in "${missing[@]}"; do
        if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            apt-get update -qq >&2
            break
        fi
    done
    echo "bench: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool still missing after apt-get install" >&2; exit 1; }
    done
}

# Where cargo puts its builds (CARGO_TARGET_DIR or the workspace's `target/`).
bench_target_dir() {
    (cd "$BENCH_REPO" && cargo metadata --format-version 1 --no-deps) |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# bench_build CARGO_ARGS...: a quiet release build in the workspace (a no-op when up to date).
bench_build() {
    bench_need cargo python3
    (cd "$BENCH_REPO" && cargo build --release --quiet "$@")
}
