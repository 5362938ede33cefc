#!/usr/bin/env bash
# Builds (or lints) the meshguard module for wasm32-wasip1 with Debian's
# rustc-web (scripts/wasm-env.sh), then shrinks it with wasm-opt -Oz.
#   scripts/build-wasm.sh          build into dist/meshguard.wasm
#   scripts/build-wasm.sh clippy   clippy -D warnings for the wasm target
#   MESHGUARD_QUIET=1 scripts/build-wasm.sh   build, printing errors only (make demo)
# std is built from source once per target dir (target/wasm), kept apart from
# the native target dir so the two compilers never rebuild each other's work.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# package:module (the cdylib's file name). One module serves the combined
# plugin and the three single-section plugins (by root id).
modules=(meshguard-wasm:meshguard)
mode=${1:-build}
packages=()
for m in "${modules[@]}"; do packages+=(-p "${m%%:*}"); done
# shellcheck source=scripts/wasm-env.sh
. scripts/wasm-env.sh "$root/target/wasm"
wasm_env+=(RUSTFLAGS="$wasm_link $wasm_release")
# wasm-opt (Debian's binaryen) shrinks the linked module further; the features
# are the ones rustc enables for wasm32-wasip1.
wasm_opt_features=(--enable-bulk-memory --enable-sign-ext --enable-mutable-globals
  --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue)
common=(--release --locked -Zbuild-std=std,panic_abort --target wasm32-wasip1 "${packages[@]}")
quiet=${MESHGUARD_QUIET:-}
case "$mode" in
  build)
    "${wasm_env[@]}" /usr/bin/cargo build ${quiet:+--quiet} "${common[@]}"
    mkdir -p dist
    for m in "${modules[@]}"; do
      crate=${m##*:}
      # -ocimfs 0: no inlining of functions with one caller. With it the
      # module is 2% smaller but each VM holds ~12 MiB more (measured with
      # make bench's memory rows: 43-47 MiB against 31 MiB added per filter).
      wasm-opt -Oz -ocimfs 0 --strip-debug --strip-producers "${wasm_opt_features[@]}" \
        "target/wasm/wasm32-wasip1/release/$crate.wasm" -o "dist/$crate.wasm"
      [ -n "$quiet" ] || printf '%s  %s bytes  sha256 %s\n' "dist/$crate.wasm" \
        "$(stat -c %s "dist/$crate.wasm")" "$(sha256sum "dist/$crate.wasm" | cut -d' ' -f1)"
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
