#!/usr/bin/env bash
# Builds (or lints) every filter for wasm32-wasip1 with Debian's rustc-web, as
# ../shared/TOOLCHAIN.md verified: rustup cannot fetch wasm targets here.
#   scripts/build-wasm.sh          build into dist/<crate>.wasm
#   scripts/build-wasm.sh clippy   clippy -D warnings for the wasm target
# std is built from source once per target dir (target/wasm), kept apart from
# the native target dir so the two compilers never rebuild each other's work.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
filters=(meshguard-identity meshguard-masking meshguard-audit)
mode=${1:-build}
packages=()
for f in "${filters[@]}"; do packages+=(-p "$f"); done
wasm_env=(env -i HOME="$HOME" PATH=/usr/bin:/bin CARGO=/usr/bin/cargo RUSTC_BOOTSTRAP=1
  CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" CARGO_TARGET_DIR="$root/target/wasm"
  RUSTFLAGS="-C link-self-contained=no -L /usr/lib/wasm32-wasi")
common=(--release --locked -Zbuild-std=std,panic_abort --target wasm32-wasip1 "${packages[@]}")
case "$mode" in
  build)
    "${wasm_env[@]}" /usr/bin/cargo build "${common[@]}"
    mkdir -p dist
    for f in "${filters[@]}"; do
      crate=${f//-/_}
      cp "target/wasm/wasm32-wasip1/release/$crate.wasm" "dist/$crate.wasm"
      printf '%s  %s bytes  sha256 %s\n' "dist/$crate.wasm" "$(stat -c %s "dist/$crate.wasm")" \
        "$(sha256sum "dist/$crate.wasm" | cut -d' ' -f1)"
    done
    ;;
  clippy)
    # Called directly: `cargo clippy` would find rustup's cargo-clippy proxy first.
    "${wasm_env[@]}" /usr/bin/cargo-clippy clippy "${common[@]}" -- -D warnings
    ;;
  *)
    echo "usage: $0 [build|clippy]" >&2
    exit 2
    ;;
esac
