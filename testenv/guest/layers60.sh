#!/usr/bin/env bash
# The guest smoke's many-layer image: busybox (from scripts/test-env's OCI layout) plus 59 small
# layers, 60 in all, pushed to the host's test registry as layers60:latest unless it is there.
# Each added layer N holds /layers/N (its number); the smoke checks that the last layer's file
# and the first's are both visible, which the legacy overlay mount (kernels before 6.8, one page
# of options) has to get right. Run as root on the host by `scripts/test-guest smoke`.
#
# Usage: layers60.sh OCI_LAYOUT REGISTRY   (e.g. /var/cache/dockless-test/oci 127.0.0.1:5000)
set -Eeuo pipefail
readonly LAYOUT=${1:?OCI layout} REGISTRY=${2:?registry}
readonly COUNT=60
readonly DEST=docker://$REGISTRY/layers60:latest

if skopeo inspect --tls-verify=false --raw "$DEST" 2>/dev/null |
	python3 -I -c 'import json, sys; sys.exit(len(json.load(sys.stdin).get("layers", [])) != int(sys.argv[1]))' "$COUNT" 2>/dev/null; then
	exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
skopeo copy -q "oci:$LAYOUT:busybox" "oci:$work/oci:layers60"
for ((i = 2; i <= COUNT; i++)); do
	mkdir -p "$work/l$i/layers"
	printf '%s\n' "$i" >"$work/l$i/layers/$i"
	tar --owner=0 --group=0 --mtime=@0 -C "$work/l$i" -cf "$work/l$i.tar" layers
	umoci raw add-layer --image "$work/oci:layers60" "$work/l$i.tar"
done
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:layers60" "$DEST"
echo "layers60.sh: pushed $DEST ($COUNT layers)"
