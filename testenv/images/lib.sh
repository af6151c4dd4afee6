# shellcheck shell=bash disable=SC2034 # the variables set here are used by the recipes
# Helpers shared by the image recipes in this directory (sourced, not run).
#
# Every recipe is called as `bash RECIPE LAYOUT TAG WORK` by scripts/test-env: it builds the image
# into the OCI layout LAYOUT under the reference TAG (a temporary name; the caller renames it once
# the recipe succeeded), using WORK as scratch space that the caller removes afterwards.

set -Eeuo pipefail
trap 'printf "test-env: %s: error: \"%s\" failed (exit %s, %s line %s)\n" "${RECIPE_NAME:-recipe}" "$BASH_COMMAND" "$?" "${BASH_SOURCE[0]}" "$LINENO" >&2' ERR

# Every timestamp the recipes control (file mtimes, config `created`, history entries) is pinned to
# this instant so that rebuilding a recipe yields the same layer and manifest digests.
readonly FIXED_CREATED="2024-01-01T00:00:00Z"
readonly FIXED_EPOCH="1704067200"

readonly IMAGE_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

die() {
	printf 'test-env: %s: error: %s\n' "${RECIPE_NAME:-recipe}" "$*" >&2
	exit 1
}

log() {
	printf 'test-env: %s: %s\n' "${RECIPE_NAME:-recipe}" "$*" >&2
}

# Pin the mtime of everything under a directory (symlinks themselves, not their targets).
pin_mtimes() {
	find "$1" -exec touch --no-dereference --date="@${FIXED_EPOCH}" {} +
}

# Parse the common recipe arguments into LAYOUT, TAG and WORK (and default LOG_DIR to WORK).
recipe_args() {
	[[ $# -eq 3 ]] || die "usage: $0 LAYOUT TAG WORK"
	LAYOUT=$1
	TAG=$2
	WORK=$3
	[[ -d $LAYOUT ]] || die "OCI layout $LAYOUT does not exist"
	mkdir -p "$WORK"
	# Logs outlive WORK (a tmpfs the caller unmounts), so a failed build can be diagnosed.
	LOG_DIR=${LOG_DIR:-$WORK}
	mkdir -p "$LOG_DIR"
}

# The sha256 digest of the manifest a layout reference points to (`sha256:<hex>`).
layout_digest() {
	local layout=$1 ref=$2
	/usr/bin/python3 -I - "$layout" "$ref" <<'EOF'
import json, sys
layout, ref = sys.argv[1], sys.argv[2]
with open(f"{layout}/index.json") as f:
    index = json.load(f)
for m in index.get("manifests", []):
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
        print(m["digest"])
        sys.exit(0)
sys.exit(f"reference {ref} not found in {layout}/index.json")
EOF
}
