#!/usr/bin/env bash
# Builds every filter for wasm32-wasip1 with Debian's rustc-web (see
# ../shared/TOOLCHAIN.md) into dist/<filter>.wasm. std is built from source,
# once per target dir.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
filters=(meshguard-identity)
args=()
for f in "${filters[@]}"; do args+=(-p "$f"); done
env -i HOME="$HOME" PATH=/usr/bin:/bin RUSTC_BOOTSTRAP=1 \
  CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" \
  CARGO_TARGET_DIR="$root/target/wasm" \
  RUSTFLAGS="-C link-self-contained=no -L /usr/lib/wasm32-wasi" \
  /usr/bin/cargo "${1:-build}" --release --locked -Zbuild-std=std,panic_abort \
  --target wasm32-wasip1 "${args[@]}" "${@:2}"
if [ "${1:-build}" = build ]; then
  mkdir -p dist
  for f in "${filters[@]}"; do
    crate=${f//-/_}
    cp "target/wasm/wasm32-wasip1/release/$crate.wasm" "dist/$crate.wasm"
    printf '%s  %s bytes\n' "dist/$crate.wasm" "$(stat -c %s "dist/$crate.wasm")"
  done
fi
