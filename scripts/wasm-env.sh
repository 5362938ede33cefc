# Sourced by the wasm build scripts: Debian's rustc-web for wasm32-wasip1
# (rustup cannot fetch wasm targets on the build machines), in a clean
# environment so the rustup toolchain never mixes in. Sets:
#   wasm_env       the env(1) prefix for /usr/bin/cargo (target dir: $1)
#   wasm_release   the panic strategy of the shipped modules and the faulty
#                  test module (one std build in target/wasm serves both)
# Release modules abort immediately on a panic: no panic message or location
# is formatted, which takes the formatting machinery out of every module (a
# panic is a trap either way; the filters' code denies the constructs that
# panic, and Envoy logs the trap with the function that failed).
wasm_target_dir=${1:?target dir}
wasm_release="-Zunstable-options -Cpanic=immediate-abort"
wasm_env=(env -i HOME="$HOME" PATH=/usr/bin:/bin CARGO=/usr/bin/cargo RUSTC_BOOTSTRAP=1
  CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" CARGO_TARGET_DIR="$wasm_target_dir")
wasm_link="-C link-self-contained=no -L /usr/lib/wasm32-wasi"
