#!/usr/bin/env bash
# Renders istio-manifests/ into dist/istio/ (what `make manifests` runs):
#
#   dist/istio/base/{wasmplugin,trafficextension}/   the combined plugin, both APIs, generated from
#                                                    istio-manifests/definition.yaml (checked up to date)
#   dist/istio/base/sections/{wasmplugin,trafficextension}/  the single-section plugins, the same way
#   dist/istio/release/kustomization.yaml            the registry + digest component (generated)
#   dist/istio/overlays/, components/                copied: every overlay now renders pinned
#   dist/istio/rendered/<mode>-<api>.yaml            `kubectl kustomize` of every overlay
#   dist/istio/body-commands/                        the combined plugin as an EnvoyFilter, for audit body commands (rendered)
#   dist/istio/audit/                                the audit plugin alone as an EnvoyFilter, likewise (rendered)
#   dist/istio/stats/, workload/, observability/     copied as they are
#   dist/istio/admission/                            the ValidatingAdmissionPolicy pinning the trust settings
#
# Every example config is validated first by the filters' own validator
# (`meshguard validate --filter F`, F = meshguard for the combined plugin), the
# OCI image of dist/meshguard.wasm is built (scripts/build-oci.sh) so each
# `sha256` is the real digest Istio will check, and the result is checked
# by scripts/validate-manifests.mjs (Istio's schema + what the schema misses)
# and scripts/admission-check.mjs (the admission policy admits every overlay).
#
# Environment:
#   MESHGUARD_OCI_REPOSITORY  image repository in the urls (default registry.example.com/meshguard)
#   MESHGUARD_OCI_TAG         image tag (default: the workspace version)
#   MESHGUARD_MASK_HASH_KEY   used only to validate masking configs with `hash`
#                             rules (a throwaway key when unset; the real key is
#                             read by the proxy from its environment, never rendered)
#   MESHGUARD_CLI             a built `meshguard` binary (default: cargo run -p meshguard-cli)
# Options: --no-validate  skip scripts/validate-manifests.mjs (the configs are still validated).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
validate_manifests=1
for arg in "$@"; do
  case "$arg" in
    --no-validate) validate_manifests=0 ;;
    *) echo "usage: $0 [--no-validate]" >&2; exit 2 ;;
  esac
done
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
export OCI_REPOSITORY=${MESHGUARD_OCI_REPOSITORY:-registry.example.com/meshguard}
export OCI_TAG=${MESHGUARD_OCI_TAG:-$version}
if [ -n "${MESHGUARD_CLI:-}" ]; then
  cli=("$MESHGUARD_CLI")
else
  cli=(cargo run --quiet --locked -p meshguard-cli --)
fi
out=dist/istio

[ -f dist/meshguard.wasm ] || { echo "render-manifests: dist/meshguard.wasm missing (make wasm)" >&2; exit 1; }
scripts/build-oci.sh >&2

rm -rf "$out"
mkdir -p "$out"

render() { # template output filter example-config
  local template=$1 output=$2 filter=$3 config=$4
  # The same check the filter runs at load (a hash key is needed to compile
  # `hash` masking rules; the proxy's own key is never part of the manifest).
  MESHGUARD_MASK_HASH_KEY=${MESHGUARD_MASK_HASH_KEY:-render-validation-only-not-a-real-key} \
    "${cli[@]}" validate --filter "$filter" "$config" >&2
  MODULE=dist/meshguard.wasm OCI_LAYOUT=dist/oci/meshguard CONFIG="$config" \
    python3 - "$template" "$output" <<'PY'
import hashlib, json, os, re, sys
template, output = sys.argv[1:3]
text = open(template).read()
module_sha = hashlib.sha256(open(os.environ["MODULE"], "rb").read()).hexdigest()
index = json.load(open(os.path.join(os.environ["OCI_LAYOUT"], "index.json")))
manifest_sha = index["manifests"][0]["digest"].split(":", 1)[1]
config = json.load(open(os.environ["CONFIG"]))
compact = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
text = (text.replace("@OCI_REPOSITORY@", os.environ["OCI_REPOSITORY"])
            .replace("@OCI_TAG@", os.environ["OCI_TAG"])
            .replace("@MODULE_SHA256@", module_sha)
            .replace("@CONFIG_VERSION@", str(config.get("config_version") or ""))
            .replace('"@PLUGIN_CONFIG_STRING@"', json.dumps(compact, ensure_ascii=False))
            .replace("@PLUGIN_CONFIG@", compact))
# Istio checks `sha256` against the image MANIFEST digest for oci:// urls
# (pkg/wasm/imagefetcher.go) and against the module itself for file/https.
urls = re.findall(r"^\s*(?:url|uri):\s*(\S+)\s*$", text, re.M)
if len(urls) != 1:
    sys.exit(f"render-manifests: {template}: expected one url, found {urls}")
text = text.replace("@SHA256@", manifest_sha if urls[0].startswith("oci://") else module_sha)
left = sorted(set(re.findall(r"@[A-Z0-9_]+@", text)))
if left:
    sys.exit(f"render-manifests: {template}: unknown placeholders {left}")
open(output, "w").write(text)
print(f"{output}  {urls[0]}  sha256 {manifest_sha if urls[0].startswith('oci://') else module_sha}")
PY
}

# The bases must be what the one definition generates (both APIs equal).
node scripts/generate-manifests.mjs --check >&2 || {
  echo "render-manifests: istio-manifests/base/ is stale: run node scripts/generate-manifests.mjs" >&2
  exit 1
}
# The example config of every plugin of the definition: "<filter> <file>" lines.
node -e 'const y=require(process.argv[1]);const d=y.parse(require("fs").readFileSync("istio-manifests/definition.yaml","utf8"));
console.log(`meshguard ${d.combined.config}`);for (const [f, p] of Object.entries(d.filters)) console.log(`${f} ${p.config}`)' \
  "${MESHGUARD_NODE_TOOLS:-$root/.tools/node/node_modules}/yaml" |
  while read -r f config; do
    MESHGUARD_MASK_HASH_KEY=${MESHGUARD_MASK_HASH_KEY:-render-validation-only-not-a-real-key} \
      "${cli[@]}" validate --filter "$f" "$config" >&2
  done
cp -r istio-manifests/base istio-manifests/components istio-manifests/overlays "$out/"
mkdir -p "$out/audit" "$out/body-commands"
cp istio-manifests/audit/kustomization.yaml "$out/audit/"
cp istio-manifests/body-commands/kustomization.yaml "$out/body-commands/"
render istio-manifests/body-commands/envoyfilter-meshguard.yaml "$out/body-commands/envoyfilter-meshguard.yaml" \
  meshguard examples/meshguard/body-commands.json
render istio-manifests/audit/envoyfilter-body-commands.yaml "$out/audit/envoyfilter-body-commands.yaml" \
  audit examples/audit/body-commands.json
node scripts/generate-manifests.mjs release "$out/release" --repository "$OCI_REPOSITORY" --tag "$OCI_TAG" >&2
# Every overlay, pinned, as the YAML `kubectl apply -k` would send.
command -v kubectl >/dev/null 2>&1 || { echo "render-manifests: kubectl (for kubectl kustomize) is missing" >&2; exit 1; }
mkdir -p "$out/rendered"
for k in "$out"/overlays/*/*/kustomization.yaml; do
  dir=$(dirname "$k")
  api=$(basename "$dir")
  mode=$(basename "$(dirname "$dir")")
  [ "$api" = gateway ] && continue
  kubectl kustomize "$dir" > "$out/rendered/$mode-$api.yaml"
  echo "$out/rendered/$mode-$api.yaml  (kubectl kustomize ${dir#"$out"/})" >&2
done
for d in stats workload observability admission; do
  cp -r "istio-manifests/$d" "$out/$d"
done
rm -rf "$out/observability/tests"
# The alert rules as a PrometheusRule (Prometheus Operator): the same groups.
{
  cat <<'YAML'
# Rendered by `make manifests` from istio-manifests/observability/alerts.yaml.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: meshguard
  labels:
    # kube-prometheus-stack's default ruleSelector; adjust to yours.
    release: prometheus
spec:
YAML
  sed -e '/^#/d' -e 's/^/  /' istio-manifests/observability/alerts.yaml
} > "$out/observability/prometheusrule.yaml"

if [ "$validate_manifests" = 1 ]; then
  command -v node >/dev/null 2>&1 || {
    echo "render-manifests: node is missing (run \`make tools\`)" >&2
    exit 1
  }
  # Everything but base/, which is deliberately unpinned (no digest, no
  # namespace): every rendered overlay is the base plus its patches.
  shopt -s nullglob
  targets=()
  for p in "$out"/*; do
    [ "$p" = "$out/base" ] || targets+=("$p")
  done
  node scripts/validate-manifests.mjs "${targets[@]}"
  # The shipped admission policy admits every shipped overlay (a real CEL
  # implementation; docs/deploy.md, "Pin the trust settings at admission").
  node scripts/admission-check.mjs "$out"/rendered/*.yaml
fi
