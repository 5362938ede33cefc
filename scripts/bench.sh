#!/usr/bin/env bash
# `make bench`: the native engine microbenchmarks, then every filter in the
# real Envoy against native RBAC and Lua (host-tests/src/bin/bench.rs), which
# writes docs/benchmarks.md. BENCH_SMOKE=1 runs a ~1-minute version (CI).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if ! command -v hey >/dev/null 2>&1; then
  echo "bench: apt-get install hey"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq hey >/dev/null
fi
native=$(mktemp)
trap 'rm -f "$native"' EXIT
if [ "${BENCH_SMOKE:-0}" != 1 ]; then
  cargo bench --quiet --locked -p meshguard-core 2>&1 | tee "$native"
fi
cargo build --quiet --locked -p meshguard-host-tests --bin bench
BENCH_NATIVE="$native" "${CARGO_TARGET_DIR:-$root/target}/debug/bench"
