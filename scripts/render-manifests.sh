#!/usr/bin/env bash
# Renders istio-manifests/ into dist/istio/ with the real module digests and
# the example configs (validated first with the filters' own validator).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=dist/istio
mkdir -p "$out"
cp istio-manifests/peer-authentication.yaml "$out/"
render() { # filter example-config
  local filter=$1 config=$2 module="dist/meshguard_$1.wasm"
  [ -f "$module" ] || { echo "render-manifests: $module missing (make wasm)" >&2; exit 1; }
  cargo run --quiet --locked -p meshguard-cli -- validate "$config" >&2
  local sha version json
  sha=$(sha256sum "$module" | cut -d' ' -f1)
  version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("config_version",""))' "$config")
  json=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' "$config")
  SHA="$sha" VERSION="$version" JSON="$json" python3 - "istio-manifests/$filter/wasmplugin.yaml" "$out/$filter-wasmplugin.yaml" <<'PY'
import os, sys
text = open(sys.argv[1]).read()
text = text.replace("@SHA256@", os.environ["SHA"]).replace("@CONFIG_VERSION@", os.environ["VERSION"])
text = text.replace("@PLUGIN_CONFIG@", os.environ["JSON"])
open(sys.argv[2], "w").write(text)
PY
  echo "$out/$filter-wasmplugin.yaml  sha256 $sha"
}
render identity examples/identity/strict.json
