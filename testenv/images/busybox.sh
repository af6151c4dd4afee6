#!/usr/bin/env bash
# Recipe: `busybox` — one layer: Debian's busybox-static with a symlink per applet.
#
# The smallest image that can run real commands (`sh`, `cat`, `ls`, ...). Reproducible: all
# mtimes and timestamps are pinned, so the digests change only when busybox-static or this recipe
# does. /etc/os-release is here so that the `layered` image has a base file to delete.

RECIPE_NAME=busybox
# shellcheck source=testenv/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
recipe_args "$@"

busybox=/bin/busybox
[[ -x $busybox ]] || die "$busybox is missing (Debian package busybox-static)"
file_type=$(od -An -c -N4 "$busybox" | tr -d ' ')
[[ $file_type == 177ELF ]] || die "$busybox is not an ELF binary"

bundle="$WORK/bundle"
rootfs="$bundle/rootfs"

umoci new --image "$LAYOUT:$TAG"
umoci unpack --image "$LAYOUT:$TAG" "$bundle"

install -d -m 0755 "$rootfs"/{bin,etc,home,proc,sys,dev,usr,var,run}
install -d -m 1777 "$rootfs/tmp"
install -d -m 0700 "$rootfs/root"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
count=0
while read -r applet; do
	[[ $applet =~ ^[a-z0-9_.[-]+$ || $applet == '[[' ]] || die "unexpected applet name '$applet'"
	[[ $applet == busybox ]] && continue
	ln -s busybox "$rootfs/bin/$applet"
	count=$((count + 1))
done < <("$busybox" --list)
((count > 100)) || die "busybox --list gave only $count applets"

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
cat >"$rootfs/etc/os-release" <<'EOF'
NAME="dockless test busybox"
ID=dockless-busybox
EOF
chmod 0644 "$rootfs"/etc/{passwd,group,os-release}
pin_mtimes "$rootfs"

bb_version=$(dpkg-query -W -f='${Version}' busybox-static)
umoci repack --image "$LAYOUT:$TAG" --history.created "$FIXED_CREATED" \
	--history.created_by "busybox-static $bb_version with $count applet symlinks" "$bundle"
umoci config --image "$LAYOUT:$TAG" --no-history --created "$FIXED_CREATED" \
	--config.cmd sh --config.env "PATH=$IMAGE_PATH"
