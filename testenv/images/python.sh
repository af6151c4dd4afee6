#!/usr/bin/env bash
# Recipe: `python` — Debian bookworm minbase plus python3, exactly two layers (~68 MB gzipped).
#
# A realistically sized image for pull/unpack tests and the benchmark. It downloads from the Debian
# mirror in DEBIAN_MIRROR (scripts/test-env takes it from the host's apt sources) and takes a few
# minutes, which is why scripts/test-env caches the result and rebuilds it only when this file or
# the architecture changed (not lib.sh nor the mirror). Unlike the small images it is not
# reproducible: the packages are whatever the mirror serves on the day of the build.

RECIPE_NAME=python
# shellcheck source=testenv/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
recipe_args "$@"
[[ -n ${DEBIAN_MIRROR:-} ]] || die "DEBIAN_MIRROR is not set"

bundle="$WORK/bundle"
rootfs="$bundle/rootfs"
mounted=()

unmount_all() {
	local m i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		m=${mounted[i]}
		umount "$m" || log "could not unmount $m"
	done
	mounted=()
}
trap unmount_all EXIT

umoci new --image "$LAYOUT:$TAG"
umoci unpack --image "$LAYOUT:$TAG" "$bundle"

log "debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR (takes a few minutes)"
debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$LOG_DIR/python-debootstrap.log" 2>&1 ||
	die "debootstrap failed (log: $LOG_DIR/python-debootstrap.log): $(tail -n 5 "$LOG_DIR/python-debootstrap.log")"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"

# Layer 1. Without --refresh-bundle the next repack would diff against the empty rootfs again and
# produce one big layer instead of two.
umoci repack --refresh-bundle --image "$LAYOUT:$TAG" \
	--history.created_by "debootstrap --variant=minbase bookworm" "$bundle"

log "apt-get install python3 in a chroot"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mount --bind /dev "$rootfs/dev" && mounted+=("$rootfs/dev")
mount -t proc proc "$rootfs/proc" && mounted+=("$rootfs/proc")
chroot "$rootfs" /usr/bin/env -i PATH="$IMAGE_PATH" DEBIAN_FRONTEND=noninteractive \
	sh -c 'apt-get update && apt-get install -y --no-install-recommends python3 && apt-get clean' \
	>"$LOG_DIR/python-apt.log" 2>&1 ||
	die "apt-get install python3 in the chroot failed (log: $LOG_DIR/python-apt.log): $(tail -n 5 "$LOG_DIR/python-apt.log")"
unmount_all
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
: >"$rootfs/etc/resolv.conf"

# Layer 2.
umoci repack --image "$LAYOUT:$TAG" \
	--history.created_by "apt-get install -y --no-install-recommends python3" "$bundle"
umoci config --image "$LAYOUT:$TAG" --no-history \
	--config.env "PATH=$IMAGE_PATH" --config.env "LANG=C.UTF-8" --config.cmd python3

layers=$(umoci stat --image "$LAYOUT:$TAG" --json | /usr/bin/python3 -I -c '
import json, sys
h = json.load(sys.stdin)["history"]
print(sum(1 for e in h if not e.get("empty_layer")))')
[[ $layers == 2 ]] || die "expected 2 layers, the image has $layers"
