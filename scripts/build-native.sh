#!/usr/bin/env bash
# Builds the native module, dist/libmeshguard.so (Envoy dynamic module for
# Envoy 1.40, ABI v0.2.0), reproducibly, with the default (rustup) toolchain:
#   scripts/build-native.sh          build, check, record dist/libmeshguard.so.sha256
#   scripts/build-native.sh verify   also rebuild from scratch in a second
#                                    target dir and require the same bytes
#   MESHGUARD_QUIET=1 scripts/build-native.sh   print errors only
# Reproducible: the locked dependencies, the `native` profile (release, LTO,
# one codegen unit, symbols stripped, panic = unwind), and source paths
# remapped (the checkout and cargo's registry never reach the binary).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-build}
quiet=${MESHGUARD_QUIET:-}
say() { [ -n "$quiet" ] || echo "$@"; }
# shellcheck source=scripts/native-env.sh
. scripts/native-env.sh "$root"

build() { # target dir
  "${native_env[@]}" CARGO_TARGET_DIR="$1" \
    cargo build ${quiet:+--quiet} --locked --profile native -p meshguard-native
}

build "$root/target/native"
built="$root/target/native/native/libmeshguard_native.so"

# Envoy loads the module with dlopen: every callback must resolve at load
# (BIND_NOW), so an Envoy without one refuses the module by name instead of
# failing a request later (docs/native.md, "Supported Envoy versions").
if ! readelf -d "$built" | grep -Eq 'BIND_NOW|FLAGS_1.*NOW'; then
  echo "build-native: $built is not bound at load (no BIND_NOW)" >&2
  exit 1
fi
for hook in envoy_dynamic_module_on_program_init envoy_dynamic_module_on_http_filter_config_new \
  envoy_dynamic_module_on_http_filter_request_headers; do
  if ! nm -D --defined-only "$built" | grep -q " $hook\$"; then
    echo "build-native: $built does not export $hook" >&2
    exit 1
  fi
done

if [ "$mode" = verify ]; then
  again=$(mktemp -d "${TMPDIR:-/tmp}/meshguard-native-verify.XXXXXX")
  trap 'rm -rf "$again"' EXIT
  say "build-native: rebuilding from scratch in $again"
  build "$again"
  if ! cmp -s "$built" "$again/native/libmeshguard_native.so"; then
    echo "build-native: two builds of the same source differ" >&2
    exit 1
  fi
  say "build-native: two clean builds are byte-identical"
fi

mkdir -p dist
cp "$built" dist/libmeshguard.so
sum=$(sha256sum dist/libmeshguard.so | cut -d' ' -f1)
printf '%s  libmeshguard.so\n' "$sum" > dist/libmeshguard.so.sha256
say "dist/libmeshguard.so  $(stat -c %s dist/libmeshguard.so) bytes  sha256 $sum  ($(rustc --version))"
