#!/usr/bin/env bash
# TEST ONLY: builds the deliberately failing filter (filters/faulty) for
# wasm32-wasip1 into target/test-wasm/meshguard_faulty.wasm, never dist/, so
# no packaging script (dist/, OCI, manifests) can pick it up. Called by
# host-tests/tests/failure_strategies.rs; same toolchain as scripts/build-wasm.sh.
# The module's linear memory is capped at MAX_MEMORY (default 64 MiB) so its
# "oom" fault exhausts the VM quickly with bounded RSS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
max_memory=${MAX_MEMORY:-67108864}
# shellcheck source=scripts/wasm-env.sh
. scripts/wasm-env.sh "$root/target/wasm"
wasm_env+=(RUSTFLAGS="$wasm_link $wasm_release")
# `cargo rustc` passes the memory cap to this crate's link only: the shared
# std build in target/wasm stays valid for scripts/build-wasm.sh.
"${wasm_env[@]}" /usr/bin/cargo rustc --release --locked -Zbuild-std=std,panic_abort \
  --target wasm32-wasip1 -p meshguard-faulty --crate-type cdylib -- \
  -C link-arg=--max-memory="$max_memory"
mkdir -p target/test-wasm
cp target/wasm/wasm32-wasip1/release/meshguard_faulty.wasm target/test-wasm/meshguard_faulty.wasm
echo "target/test-wasm/meshguard_faulty.wasm (TEST ONLY, never shipped)"
