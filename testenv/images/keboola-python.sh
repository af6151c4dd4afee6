#!/usr/bin/env bash
# Recipe: `keboola-python` — the `python` image plus ONE layer: Keboola's Python component library
# (`keboola-component` and its dependencies, pinned with hashes in keboola-python.txt) in
# /usr/local/lib/python3.11/dist-packages, where Debian's /usr/bin/python3 finds it.
#
# The base for the Python test component of `dockless test` (tests/support/kbc-python-component):
# generic, the library only, no component code. The wheels come from PyPI through the host's pip
# (Debian's python3-pip, 3.11 like the image's python3) and are installed with `--target`, no pip
# inside the image. Bytecode is compiled by the image's own python3 with hash-based .pyc files
# and every new file's mtime is pinned, so the layer depends only on the wheels; the image as a
# whole follows the `python` image (not reproducible). Needs BASE_TAG: the `python` reference in
# the same layout.

RECIPE_NAME=keboola-python
# shellcheck source=testenv/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
recipe_args "$@"
[[ -n ${BASE_TAG:-} ]] || die "BASE_TAG (the python reference in $LAYOUT) is not set"

requirements="$(dirname "${BASH_SOURCE[0]}")/keboola-python.txt"
bundle="$WORK/bundle"
rootfs="$bundle/rootfs"
wheels="$WORK/wheels"
site=usr/local/lib/python3.11/dist-packages

case $(uname -m) in
x86_64 | aarch64) platform=manylinux2014_$(uname -m) ;;
*) die "no wheels pinned for $(uname -m) in $requirements" ;;
esac

umoci tag --image "$LAYOUT:$BASE_TAG" "$TAG"
umoci unpack --image "$LAYOUT:$TAG" "$bundle"
[[ -x $rootfs/usr/bin/python3.11 ]] || die "the base image has no /usr/bin/python3.11"

log "pip download of the pinned wheels ($platform)"
pip_common=(--disable-pip-version-check --no-input --require-hashes --only-binary=:all: --no-deps)
/usr/bin/python3 -m pip download "${pip_common[@]}" -r "$requirements" \
	--python-version 3.11 --implementation cp --abi cp311 --platform "$platform" -d "$wheels" \
	>"$LOG_DIR/keboola-python-pip.log" 2>&1 ||
	die "pip download failed (log: $LOG_DIR/keboola-python-pip.log): $(tail -n 5 "$LOG_DIR/keboola-python-pip.log")"

# The host's python3 is 3.11 on this architecture too, so its tags select the same wheels.
log "pip install --target /$site"
/usr/bin/python3 -m pip install "${pip_common[@]}" -r "$requirements" --no-index --find-links "$wheels" \
	--no-compile --no-warn-script-location --root-user-action=ignore --target "$rootfs/$site" \
	>>"$LOG_DIR/keboola-python-pip.log" 2>&1 ||
	die "pip install failed (log: $LOG_DIR/keboola-python-pip.log): $(tail -n 5 "$LOG_DIR/keboola-python-pip.log")"
# Nothing the library needs lives outside the site folder (no scripts, no data files).
[[ ! -e $rootfs/$site/bin ]] || die "a wheel installed scripts into /$site/bin"

# unchecked-hash: the .pyc files do not record the source's mtime, and the interpreter trusts
# them without rereading the source at every start.
env -i PATH="$IMAGE_PATH" chroot "$rootfs" /usr/bin/python3 -m compileall -q -j 1 \
	--invalidation-mode unchecked-hash "/$site" >"$LOG_DIR/keboola-python-compile.log" 2>&1 ||
	die "compileall in the image failed (log: $LOG_DIR/keboola-python-compile.log)"

version=$(env -i PATH="$IMAGE_PATH" chroot "$rootfs" /usr/bin/python3 -I -c '
import importlib.metadata, keboola.component, keboola.component.base, keboola.component.exceptions
print(importlib.metadata.version("keboola-component"))') ||
	die "Debian's /usr/bin/python3 in the image cannot import keboola.component"
[[ $version == 1.11.0 ]] || die "the image has keboola-component $version, expected 1.11.0"

pin_mtimes "$rootfs/$site"
umoci repack --image "$LAYOUT:$TAG" --history.created "$FIXED_CREATED" \
	--history.created_by "pip install --target /$site -r keboola-python.txt (keboola-component==$version)" \
	"$bundle"
umoci config --image "$LAYOUT:$TAG" --no-history --created "$FIXED_CREATED"

layers=$(umoci stat --image "$LAYOUT:$TAG" --json | /usr/bin/python3 -I -c '
import json, sys
h = json.load(sys.stdin)["history"]
print(sum(1 for e in h if not e.get("empty_layer")))')
[[ $layers == 3 ]] || die "expected 3 layers (python's 2 and the library), the image has $layers"
