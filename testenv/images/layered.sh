#!/usr/bin/env bash
# Recipe: `layered` — busybox plus four layers that exercise what an unpacker must get right.
#
#   layer 2 (umoci repack, Go's tar writer): /fixture with regular files, a hardlink pair,
#            relative/absolute/dangling/escaping symlinks, a setuid file, a setgid dir, a 0700 dir,
#            a file and a dir owned 1000:1000, names with spaces and non-ASCII bytes, long names
#            (ustar prefix/name split, PAX path, PAX linkpath), and the files later layers touch.
#   layer 3 (hand-built tar): only `fixture/.wh.to-whiteout.txt`, without parent dir entries.
#   layer 4 (hand-built tar): `fixture/opaque-dir/.wh..wh..opq` plus new children.
#   layer 5 (hand-built tar): deletes a base-layer file (`etc/os-release`), removes a whole
#            directory (`fixture/.wh.remove-dir`) and re-creates the file layer 3 deleted.
#
# Layers 3-5 are written by Python's tarfile and added with `umoci raw add-layer`, because umoci
# 0.4.7's `insert --whiteout/--opaque` writes tars without end blocks and `repack` never emits
# opaque markers. The recipe unpacks the result with umoci and checks the final tree, so a
# broken fixture fails the build instead of the tests. Reproducible like busybox.
# Needs BASE_TAG: the reference of the busybox image in the same layout.

RECIPE_NAME=layered
# shellcheck source=testenv/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
recipe_args "$@"
[[ -n ${BASE_TAG:-} ]] || die "BASE_TAG (the busybox reference in $LAYOUT) is not set"

bundle="$WORK/bundle"
rootfs="$bundle/rootfs"
f="$rootfs/fixture"

# Names long enough to need the ustar prefix field (each part fits) and a PAX header (one
# component longer than the 100-byte name field).
split_dir=$(printf 'd%.0s' {1..60})
split_file=$(printf 'f%.0s' {1..80})
pax_name=$(printf 'p%.0s' {1..200})

umoci tag --image "$LAYOUT:$BASE_TAG" "$TAG"
umoci unpack --image "$LAYOUT:$TAG" "$bundle"

# ---- layer 2 -----------------------------------------------------------------------------------
install -d -m 0755 "$f"
printf 'hello from layer 2\n' >"$f/hello.txt"
: >"$f/empty.txt"
printf 'shared content\n' >"$f/hardlink-a"
ln "$f/hardlink-a" "$f/hardlink-b"
ln -s hello.txt "$f/rel-link"
ln -s /fixture/hello.txt "$f/abs-link"
ln -s does-not-exist "$f/dangling-link"
ln -s ../../../../../etc/shadow "$f/escape-rel-link"
ln -s /etc/shadow "$f/escape-abs-link"
ln -s opaque-dir "$f/dir-link"
printf '#!/bin/sh\necho setuid\n' >"$f/setuid-sh"
chmod 4755 "$f/setuid-sh"
install -d -m 2775 "$f/setgid-dir"
install -d -m 0700 "$f/private"
printf 'secret\n' >"$f/private/secret.txt"
chmod 0600 "$f/private/secret.txt"
printf 'owned by 1000\n' >"$f/owned-1000.txt"
chown 1000:1000 "$f/owned-1000.txt"
install -d -m 0750 -o 1000 -g 1000 "$f/home-1000"
printf 'spaces\n' >"$f/name with spaces.txt"
printf 'unicode\n' >"$f/ünïcödé.txt"
install -d -m 0755 "$f/long/$split_dir"
printf 'ustar prefix\n' >"$f/long/$split_dir/$split_file"
printf 'pax path\n' >"$f/long/$pax_name"
ln -s "$split_dir/$split_file" "$f/long/pax-linkpath-link"
printf 'deleted by layer 3\n' >"$f/to-whiteout.txt"
install -d -m 0755 "$f/opaque-dir/sub"
printf 'hidden by layer 4\n' >"$f/opaque-dir/old-a.txt"
printf 'hidden by layer 4\n' >"$f/opaque-dir/sub/old-c.txt"
install -d -m 0755 "$f/remove-dir/nested"
printf 'removed by layer 5\n' >"$f/remove-dir/a.txt"
printf 'removed by layer 5\n' >"$f/remove-dir/nested/b.txt"
ln -s ../a.txt "$f/remove-dir/nested/link"
chmod 0644 "$f"/{hello.txt,empty.txt,hardlink-a,owned-1000.txt,"name with spaces.txt",ünïcödé.txt} \
	"$f/long/$split_dir/$split_file" "$f/long/$pax_name" "$f/to-whiteout.txt" \
	"$f"/opaque-dir/{old-a.txt,sub/old-c.txt} "$f"/remove-dir/{a.txt,nested/b.txt}
pin_mtimes "$rootfs"
umoci repack --image "$LAYOUT:$TAG" --history.created "$FIXED_CREATED" \
	--history.created_by "layer 2: /fixture files, links, modes, owners, long names" "$bundle"

# ---- layers 3-5: hand-built tars ---------------------------------------------------------------
/usr/bin/python3 -I - "$WORK" "$FIXED_EPOCH" <<'EOF'
import io, sys, tarfile

work, epoch = sys.argv[1], int(sys.argv[2])

def entry(tar, name, kind=tarfile.REGTYPE, data=b"", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else mode
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

layers = {
    "layer3.tar": [("fixture/.wh.to-whiteout.txt",)],
    "layer4.tar": [
        ("fixture/opaque-dir", tarfile.DIRTYPE),
        ("fixture/opaque-dir/.wh..wh..opq",),
        ("fixture/opaque-dir/new-x.txt", tarfile.REGTYPE, b"added by layer 4\n"),
        ("fixture/opaque-dir/sub2", tarfile.DIRTYPE),
        ("fixture/opaque-dir/sub2/new-y.txt", tarfile.REGTYPE, b"added by layer 4\n"),
    ],
    "layer5.tar": [
        ("etc/.wh.os-release",),
        ("fixture/.wh.remove-dir",),
        ("fixture/to-whiteout.txt", tarfile.REGTYPE, b"re-created by layer 5\n"),
    ],
}
for file_name, entries in layers.items():
    with tarfile.open(f"{work}/{file_name}", "w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            entry(tar, *e)
EOF
umoci raw add-layer --image "$LAYOUT:$TAG" --history.created "$FIXED_CREATED" \
	--history.created_by "layer 3: whiteout of fixture/to-whiteout.txt only" "$WORK/layer3.tar"
umoci raw add-layer --image "$LAYOUT:$TAG" --history.created "$FIXED_CREATED" \
	--history.created_by "layer 4: opaque fixture/opaque-dir with new children" "$WORK/layer4.tar"
umoci raw add-layer --image "$LAYOUT:$TAG" --history.created "$FIXED_CREATED" \
	--history.created_by "layer 5: delete etc/os-release and fixture/remove-dir, re-create fixture/to-whiteout.txt" \
	"$WORK/layer5.tar"
umoci config --image "$LAYOUT:$TAG" --no-history --created "$FIXED_CREATED"

# ---- check the fixture: the umoci-unpacked tree must be what the layers say ---------------------
check="$WORK/check"
umoci unpack --image "$LAYOUT:$TAG" "$check"
c="$check/rootfs"
expect() { "$@" || die "layered image check failed: $*"; }
expect test "$(umoci stat --image "$LAYOUT:$TAG" --json | /usr/bin/python3 -I -c '
import json, sys
print(sum(1 for e in json.load(sys.stdin)["history"] if not e.get("empty_layer")))')" = 5
expect test ! -e "$c/etc/os-release" -a -f "$c/etc/passwd" -a -x "$c/bin/busybox"
expect test ! -e "$c/fixture/remove-dir"
expect test "$(cat "$c/fixture/to-whiteout.txt")" = "re-created by layer 5"
expect test "$(find "$c/fixture/opaque-dir" -mindepth 1 -maxdepth 1 -printf '%P\n' | sort | paste -sd' ')" = "new-x.txt sub2"
expect test "$(stat -c %i "$c/fixture/hardlink-a")" = "$(stat -c %i "$c/fixture/hardlink-b")"
expect test "$(stat -c %h "$c/fixture/hardlink-a")" = 2
expect test "$(stat -c %a "$c/fixture/setuid-sh")" = 4755
expect test "$(stat -c %a "$c/fixture/setgid-dir")" = 2775
expect test "$(stat -c %a "$c/fixture/private")" = 700
expect test "$(stat -c %u:%g "$c/fixture/owned-1000.txt")" = 1000:1000
expect test "$(stat -c %u:%g:%a "$c/fixture/home-1000")" = 1000:1000:750
expect test "$(readlink "$c/fixture/rel-link")" = hello.txt
expect test "$(readlink "$c/fixture/abs-link")" = /fixture/hello.txt
expect test "$(readlink "$c/fixture/dangling-link")" = does-not-exist
expect test "$(readlink "$c/fixture/escape-abs-link")" = /etc/shadow
expect test "$(cat "$c/fixture/long/$split_dir/$split_file")" = "ustar prefix"
expect test "$(cat "$c/fixture/long/$pax_name")" = "pax path"
expect test "$(readlink "$c/fixture/long/pax-linkpath-link")" = "$split_dir/$split_file"
expect test "$(stat -c %Y "$c/fixture/hello.txt")" = "$FIXED_EPOCH"

# The long-name entries of layer 2 must really use the encodings they are meant to exercise.
/usr/bin/python3 -I - "$LAYOUT" "$(layout_digest "$LAYOUT" "$TAG")" <<'EOF' ||
import gzip, io, json, sys, tarfile
layout, digest = sys.argv[1], sys.argv[2]
with open(f"{layout}/blobs/sha256/{digest[7:]}") as f:
    layer = json.load(f)["layers"][1]["digest"][7:]
with gzip.open(f"{layout}/blobs/sha256/{layer}") as f:
    data = f.read()
found = {"ustar-prefix": False, "pax-path": False, "pax-linkpath": False}
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    for m in tar:
        header = data[m.offset:m.offset + 512]
        if header[257:263] == b"ustar\x00" and header[345:500].strip(b"\x00"):
            found["ustar-prefix"] = True
        found["pax-path"] |= "path" in m.pax_headers
        found["pax-linkpath"] |= "linkpath" in m.pax_headers
missing = [k for k, v in found.items() if not v]
if missing:
    sys.exit(f"layer 2 lacks {missing}")
EOF
	die "layer 2 lacks a long-name encoding"
