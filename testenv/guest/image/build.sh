#!/bin/bash
# Recipe of the test guests (run by scripts/test-guest as root; the cache key is a hash of every
# file in this directory, so changing any of them rebuilds all):
#   OUT/<suite>/vmlinuz, OUT/<suite>/initrd.img, OUT/<suite>/release   for each kernel suite
#   OUT/rootfs.img                                                    the ext4 root disk
#   OUT/manifest.txt                                                  what went in (versions)
# The kernels are Debian's linux-image-amd64 of each suite (bookworm: 6.1, trixie: 6.12),
# downloaded through a private apt state dir (the host's apt state is not touched) and unpacked
# with dpkg-deb. The root disk is Debian bookworm from debootstrap booting systemd, with the
# modules of every kernel (so one disk serves both guests). The initramfs is busybox plus the
# few modules the kernel needs to reach that disk.
#
# Usage: build.sh OUT WORK MIRROR   (OUT and WORK must be empty or absent)
set -Eeuo pipefail
shopt -s inherit_errexit
umask 022
export LC_ALL=C.UTF-8
# shellcheck disable=SC2154 # rc is assigned in the trap itself
trap 'rc=$?; printf "guest-image: error: \"%s\" failed (exit %s, line %s)\n" "$BASH_COMMAND" "$rc" "$LINENO" >&2' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly OUT=$1 WORK=$2 MIRROR=$3
readonly SUITES=(bookworm trixie)
readonly DISK_SIZE=8G
# Packages of the root disk beyond debootstrap's minbase, and why.
readonly PACKAGES=(
	systemd systemd-sysv dbus libpam-systemd # boots and logs users in as installed Debian does
	dbus-user-session                        # the user bus (rootless podman's systemd checks use it)
	udev kmod                                # device nodes, module autoloading (9p, virtio-net)
	uidmap libseccomp2                       # what dockless needs (rootless, seccomp)
	ca-certificates iproute2 procps less     # an ordinary admin's tools
	busybox-static git                       # what the tests use
)

log() { printf 'guest-image: %s\n' "$*" >&2; }
die() {
	printf 'guest-image: error: %s\n' "$*" >&2
	exit 1
}

mkdir -p "$OUT" "$WORK"
manifest="$OUT/manifest.txt"
: >"$manifest"

# ---- kernels --------------------------------------------------------------------------------
fetch_kernel() {
	local suite=$1
	local apt="$WORK/apt-$suite" dir="$WORK/kernel-$suite"
	mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dir"
	# The suite's point release (not -security: a mirror given as DOCKLESS_TEST_DEBIAN_MIRROR
	# need not carry it).
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $suite main" \
		>"$apt/sources.list"
	local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root)
	apt-get -q "${opts[@]}" update >"$apt/update.log" 2>&1 ||
		die "apt-get update for $suite failed: $(tail -n 5 "$apt/update.log")"
	local pkg
	pkg=$(apt-cache "${opts[@]}" depends linux-image-amd64 |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	[[ -n $pkg ]] || die "linux-image-amd64 of $suite depends on no linux-image-<version>"
	(cd "$dir" && apt-get -q "${opts[@]}" download "$pkg") >"$apt/download.log" 2>&1 ||
		die "apt-get download $pkg failed: $(tail -n 5 "$apt/download.log")"
	dpkg-deb -x "$dir"/"$pkg"_*.deb "$dir/x"
	local release=${pkg#linux-image-}
	local modules
	for modules in "$dir/x/usr/lib/modules/$release" "$dir/x/lib/modules/$release"; do
		[[ -d $modules ]] && break
	done
	[[ -d $modules && -f $dir/x/boot/vmlinuz-$release ]] || die "$pkg has no vmlinuz-$release or modules"
	mkdir -p "$OUT/$suite"
	cp "$dir/x/boot/vmlinuz-$release" "$OUT/$suite/vmlinuz"
	echo "$release" >"$OUT/$suite/release"
	printf '%s %s %s\n' "$suite" "$pkg" "$(dpkg-deb -f "$dir"/"$pkg"_*.deb Version)" >>"$manifest"
	log "kernel $suite: $pkg"
}

for suite in "${SUITES[@]}"; do
	fetch_kernel "$suite"
done

# ---- root filesystem ------------------------------------------------------------------------
rootfs="$WORK/rootfs"
log "debootstrap bookworm (minbase + ${PACKAGES[*]}) from $MIRROR"
include=$(
	IFS=,
	echo "${PACKAGES[*]}"
)
debootstrap --variant=minbase --include="$include" bookworm "$rootfs" "$MIRROR" \
	>"$WORK/debootstrap.log" 2>&1 ||
	die "debootstrap failed (log: $WORK/debootstrap.log): $(tail -n 5 "$WORK/debootstrap.log")"
cp -a "$HERE/rootfs/." "$rootfs/"
cp "$HERE/configure.sh" "$rootfs/configure.sh"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /configure.sh \
	>"$WORK/configure.log" 2>&1 ||
	die "configure.sh failed in the chroot: $(tail -n 5 "$WORK/configure.log")"
rm "$rootfs/configure.sh"

# Every kernel's modules on the disk, indexed by the disk's own depmod.
for suite in "${SUITES[@]}"; do
	release=$(cat "$OUT/$suite/release")
	src="$WORK/kernel-$suite/x/usr/lib/modules/$release"
	[[ -d $src ]] || src="$WORK/kernel-$suite/x/lib/modules/$release"
	mkdir -p "$rootfs/usr/lib/modules"
	cp -a "$src" "$rootfs/usr/lib/modules/$release"
	chroot "$rootfs" depmod -a "$release"
done

# ---- initramfs per kernel -------------------------------------------------------------------
for suite in "${SUITES[@]}"; do
	release=$(cat "$OUT/$suite/release")
	initrd="$WORK/initrd-$suite"
	mkdir -p "$initrd/bin" "$initrd/modules"
	cp "$rootfs/bin/busybox" "$initrd/bin/busybox"
	cp "$HERE/init" "$initrd/init"
	: >"$initrd/modules/order"
	# modprobe prints `insmod PATH` in load order (dependencies first), `builtin NAME` otherwise.
	chroot "$rootfs" modprobe -S "$release" --show-depends -a virtio_pci virtio_blk crc32c_generic ext4 |
		awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' >"$WORK/initrd-$suite.modules"
	while read -r path; do
		name=$(basename "$path")
		case $name in
		*.ko.xz) xz -dc "$rootfs$path" >"$initrd/modules/${name%.xz}" && name=${name%.xz} ;;
		*.ko.zst) die "zstd-compressed module $path: add zstd to the recipe" ;;
		*) cp "$rootfs$path" "$initrd/modules/$name" ;;
		esac
		echo "$name" >>"$initrd/modules/order"
	done <"$WORK/initrd-$suite.modules"
	[[ -s $initrd/modules/order ]] || die "no module to load for $suite: virtio_blk and ext4 are built in?"
	(cd "$initrd" && find . | LC_ALL=C sort | "$rootfs/bin/busybox" cpio -o -H newc 2>/dev/null) |
		gzip -9 >"$OUT/$suite/initrd.img"
	printf '%s initramfs modules: %s\n' "$suite" "$(tr '\n' ' ' <"$initrd/modules/order")" >>"$manifest"
done

# ---- the disk -------------------------------------------------------------------------------
# shellcheck disable=SC2016 # dpkg-query's format fields
chroot "$rootfs" dpkg-query -W -f '${Package} ${Version}\n' >"$OUT/packages.txt"
log "ext4 image ($DISK_SIZE, sparse) from the root filesystem"
truncate -s "$DISK_SIZE" "$OUT/rootfs.img"
mkfs.ext4 -q -F -L test-guest -d "$rootfs" "$OUT/rootfs.img" ||
	die "mkfs.ext4 -d failed"
echo "rootfs bookworm $(du -sh --apparent-size "$rootfs" | cut -f1), disk $DISK_SIZE sparse" >>"$manifest"
log "done: $(tr '\n' ';' <"$manifest")"
