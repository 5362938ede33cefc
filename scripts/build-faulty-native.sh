#!/usr/bin/env bash
# TEST ONLY: builds the deliberately failing native module (filters/faulty,
# feature `native`) into target/test-native/libmeshguard_faulty.so, never
# dist/, so no packaging script can pick it up. Called by
# host-tests/tests/native.rs; the profile of scripts/build-native.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/native-env.sh
. scripts/native-env.sh "$root"
"${native_env[@]}" cargo build --quiet --locked --profile native -p meshguard-faulty --features native
mkdir -p target/test-native
cp target/native/native/libmeshguard_faulty.so target/test-native/libmeshguard_faulty.so
echo "target/test-native/libmeshguard_faulty.so (TEST ONLY, never shipped)"
