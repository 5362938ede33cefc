#!/usr/bin/env bash
# Packages dist/meshguard.wasm, the one meshguard module, as an OCI image in
# the "compat" variant of the Wasm image specification that Istio's agent pulls
# (pkg/wasm/imagefetcher.go: a single application/vnd.oci.image.layer.v1.tar+gzip
# layer holding plugin.wasm; manifest annotation module.wasm.image/variant=compat),
# written as an OCI image layout directory:
#
#   dist/oci/meshguard/oci-layout, index.json, blobs/sha256/...   (tag = workspace version)
#   dist/oci/digests.txt                                           "meshguard sha256:<manifest digest>"
#
# Every meshguard plugin pulls this image: the combined plugin (pluginName
# meshguard) and the single-section ones (meshguard-identity, -masking,
# -audit); the pluginName selects what the module runs.
#
# The build is reproducible (fixed tar metadata, gzip without timestamp), so the
# manifest digest only changes when the module does. That digest is what Istio
# compares a WasmPlugin's `sha256` with for an oci:// url (the module digest is
# for file:// and https:// urls): scripts/render-manifests.sh puts it there.
#
#   scripts/build-oci.sh
# Push with skopeo (see docs/deploy.md):
#   skopeo copy --preserve-digests oci:dist/oci/meshguard:0.1.0 docker://REGISTRY/platform/meshguard/meshguard:0.1.0
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ "$#" -eq 0 ] || { echo "usage: $0 (no arguments: one image, dist/oci/meshguard)" >&2; exit 2; }
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "build-oci: no workspace version in Cargo.toml" >&2; exit 1; }
image=meshguard
module=dist/meshguard.wasm
[ -f "$module" ] || { echo "build-oci: $module missing (make wasm)" >&2; exit 1; }
mkdir -p dist/oci
# Layouts of the per-filter images of older builds are not what any manifest pulls.
for stale in identity masking audit; do rm -rf "dist/oci/$stale"; done
python3 - "$module" "dist/oci/$image" "$image" "$version" <<'PY'
import gzip, hashlib, io, json, os, shutil, sys, tarfile

module, layout, name, version = sys.argv[1:5]
wasm = open(module, "rb").read()
if wasm[:4] != b"\0asm":
    sys.exit(f"build-oci: {module} is not a Wasm module")

# The layer: a tar holding only plugin.wasm, with fixed metadata.
tar_bytes = io.BytesIO()
with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
    info = tarfile.TarInfo("plugin.wasm")
    info.size, info.mode, info.mtime = len(wasm), 0o644, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(wasm))
tar_bytes = tar_bytes.getvalue()
layer = gzip.compress(tar_bytes, compresslevel=9, mtime=0)

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

module_sha = hashlib.sha256(wasm).hexdigest()
config = canonical({
    # GOARCH/GOOS values for a WASI preview 1 module; Istio ignores them.
    "architecture": "wasm",
    "os": "wasip1",
    "config": {},
    "rootfs": {"type": "layers", "diff_ids": [sha(tar_bytes)]},
})
manifest = canonical({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha(layer), "size": len(layer),
                "annotations": {"org.opencontainers.image.title": "plugin.wasm"}}],
    "annotations": {
        "module.wasm.image/variant": "compat",
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": version,
        "io.meshguard.module.sha256": module_sha,
    },
})
index = canonical({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": sha(manifest), "size": len(manifest),
                   "annotations": {"org.opencontainers.image.ref.name": version}}],
})

# Written into a fresh directory, then swapped in: no stale blobs survive.
tmp = layout + ".tmp"
shutil.rmtree(tmp, ignore_errors=True)
blobs = os.path.join(tmp, "blobs", "sha256")
os.makedirs(blobs)
for blob in (layer, config, manifest):
    with open(os.path.join(blobs, sha(blob).split(":", 1)[1]), "wb") as out:
        out.write(blob)
with open(os.path.join(tmp, "oci-layout"), "wb") as out:
    out.write(canonical({"imageLayoutVersion": "1.0.0"}))
with open(os.path.join(tmp, "index.json"), "wb") as out:
    out.write(index)
shutil.rmtree(layout, ignore_errors=True)
os.rename(tmp, layout)
print(f"{layout}:{version}  manifest {sha(manifest)}  plugin.wasm sha256:{module_sha}")
PY
# One line per image, for scripts and tests.
printf '%s %s\n' "$image" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "dist/oci/$image/index.json")" \
  > dist/oci/digests.txt
