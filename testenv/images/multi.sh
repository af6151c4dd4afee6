#!/usr/bin/env bash
# Recipe: `multi` — an OCI image index for platform selection tests.
#
# Entries, in this order:
#   linux/arm64 (variant v8): busybox + a layer with /etc/dockless-platform = "linux/arm64/v8"
#   linux/amd64:              busybox + a layer with /etc/dockless-platform = "linux/amd64"
#   unknown/unknown:          a buildx-style attestation manifest (in-toto SBOM layer) that points
#                             at the amd64 manifest; a client must skip it, never pick it.
# arm64 comes first so that "take the first entry" is caught. The arm64 entry reuses the amd64
# busybox binary (no arm64 toolchain here): it is for selection tests, not for running.
# Needs BASE_TAG: the reference of the busybox image in the same layout. Reproducible.

RECIPE_NAME=multi
# shellcheck source=testenv/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
recipe_args "$@"
[[ -n ${BASE_TAG:-} ]] || die "BASE_TAG (the busybox reference in $LAYOUT) is not set"

# Build one platform image under the temporary reference $TAG-<arch>.
platform_image() {
	local arch=$1 platform=$2 ref="$TAG-$1" bundle="$WORK/bundle-$1"
	umoci tag --image "$LAYOUT:$BASE_TAG" "$ref"
	umoci unpack --image "$LAYOUT:$ref" "$bundle"
	printf '%s\n' "$platform" >"$bundle/rootfs/etc/dockless-platform"
	chmod 0644 "$bundle/rootfs/etc/dockless-platform"
	pin_mtimes "$bundle/rootfs"
	umoci repack --image "$LAYOUT:$ref" --history.created "$FIXED_CREATED" \
		--history.created_by "mark the platform: $platform" "$bundle"
	umoci config --image "$LAYOUT:$ref" --no-history --created "$FIXED_CREATED" \
		--architecture "$arch" --os linux
}

platform_image amd64 linux/amd64
platform_image arm64 linux/arm64/v8

/usr/bin/python3 -I - "$LAYOUT" "$TAG" <<'EOF' || die "could not write the index"
import hashlib, json, os, sys

layout, tag = sys.argv[1], sys.argv[2]
blobs = f"{layout}/blobs/sha256"

def put_blob(data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = f"{blobs}/{digest}"
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)
    return {"digest": f"sha256:{digest}", "size": len(data)}

def canonical(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

with open(f"{layout}/index.json") as f:
    index = json.load(f)
refs = {m["annotations"]["org.opencontainers.image.ref.name"]: m
        for m in index["manifests"] if "org.opencontainers.image.ref.name" in m.get("annotations", {})}
amd64, arm64 = refs[f"{tag}-amd64"], refs[f"{tag}-arm64"]

statement = canonical({
    "_type": "https://in-toto.io/Statement/v0.1",
    "predicateType": "https://spdx.dev/Document",
    "subject": [{"name": "pkg:docker/multi@latest?platform=linux%2Famd64",
                 "digest": {"sha256": amd64["digest"][7:]}}],
    "predicate": {"spdxVersion": "SPDX-2.3", "name": "dockless test attestation"},
})
layer = put_blob(statement)
layer.update(mediaType="application/vnd.in-toto+json",
             annotations={"in-toto.io/predicate-type": "https://spdx.dev/Document"})
config = put_blob(canonical({
    "architecture": "unknown", "os": "unknown", "config": {},
    "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
}))
config["mediaType"] = "application/vnd.oci.image.config.v1+json"
attestation = put_blob(canonical({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": config, "layers": [layer],
}))
attestation.update(
    mediaType="application/vnd.oci.image.manifest.v1+json",
    platform={"architecture": "unknown", "os": "unknown"},
    annotations={"vnd.docker.reference.digest": amd64["digest"],
                 "vnd.docker.reference.type": "attestation-manifest"},
)

def entry(desc, platform):
    return {"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"],
            "platform": platform}

image_index = put_blob(canonical({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        entry(arm64, {"architecture": "arm64", "os": "linux", "variant": "v8"}),
        entry(amd64, {"architecture": "amd64", "os": "linux"}),
        attestation,
    ],
}))
image_index.update(mediaType="application/vnd.oci.image.index.v1+json",
                   annotations={"org.opencontainers.image.ref.name": tag})
index["manifests"] = [m for m in index["manifests"]
                      if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
index["manifests"].append(image_index)
with open(f"{layout}/index.json.tmp", "w") as f:
    json.dump(index, f, separators=(",", ":"))
os.rename(f"{layout}/index.json.tmp", f"{layout}/index.json")
EOF
umoci rm --image "$LAYOUT:$TAG-amd64"
umoci rm --image "$LAYOUT:$TAG-arm64"
