# Sourced by the native build scripts: the environment of every native
# module build, so the shipped module and the test-only one share one
# target dir (target/native) without rebuilding each other. Sets:
#   native_env   the env(1) prefix for cargo
# Source paths are remapped: the checkout and cargo's registry never reach
# the binary, which makes it reproducible from any path.
native_root=${1:?repository root}
native_env=(env CARGO_TARGET_DIR="$native_root/target/native"
  RUSTFLAGS="--remap-path-prefix=$native_root=/meshguard --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo")
