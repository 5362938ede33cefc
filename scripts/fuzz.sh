#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS each (default 20) and
# prints executions, executions per second and the outcome per target.
#   scripts/fuzz.sh                 every target
#   scripts/fuzz.sh path xfcc       only these
# FUZZ_RUNS=N stops each target after N executions instead (a long run;
# FUZZ_SECONDS still bounds it). FUZZ_JOBS=N runs N targets at once (default 1).
# FUZZ_SANITIZER=none builds without AddressSanitizer (default: address), about
# six times faster, for long runs: meshguard's fuzzed crates have no unsafe
# code, so ASan only watches their dependencies. New corpus entries go to
# target/fuzz-corpus/<target> (the committed seeds in fuzz/corpus/ are only
# read); a crash leaves its input in target/fuzz-artifacts/<target>/ and the
# script exits non-zero after running the others. See docs/fuzzing.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-1}
runs=${FUZZ_RUNS:-0}
sanitizer=${FUZZ_SANITIZER:-address}
case "$sanitizer" in
  address) build_dir=fuzz/target ;;
  # Its own build directory: a rebuild never replaces a running target's binary.
  none) build_dir=target/fuzz-build-none ;;
  *) echo "FUZZ_SANITIZER must be address or none, not $sanitizer" >&2; exit 2 ;;
esac

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "cargo-fuzz needs the nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked
fi

mapfile -t all < <(cargo +nightly fuzz list --fuzz-dir fuzz)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

# -a: debug assertions, so arithmetic overflow traps as it does in tests.
fuzz_flags=(-a -s "$sanitizer" --fuzz-dir fuzz --target-dir "$build_dir")
cargo +nightly fuzz build "${fuzz_flags[@]}"

logs="$root/target/fuzz-logs"
mkdir -p "$logs"
run_one() {
  local t=$1
  local corpus="$root/target/fuzz-corpus/$t" artifacts="$root/target/fuzz-artifacts/$t/"
  mkdir -p "$corpus" "$artifacts"
  if cargo +nightly fuzz run "${fuzz_flags[@]}" "$t" "$corpus" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -runs="$((runs > 0 ? runs : -1))" -artifact_prefix="$artifacts" -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 >"$logs/$t.log" 2>&1; then
    echo ok >"$logs/$t.status"
  else
    echo CRASH >"$logs/$t.status"
  fi
}

running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=0
printf '%-18s %12s %10s %8s  %s\n' target executions exec/s seconds result
for t in "${targets[@]}"; do
  log="$logs/$t.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  status=$(cat "$logs/$t.status")
  printf '%-18s %12s %10s %8s  %s\n' "$t" "${runs:-?}" "${speed:-?}" "$seconds" "$status"
  if [ "$status" != ok ]; then
    failed=1
    grep -m3 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | sed 's/^/    /' || true
    ls "$root/target/fuzz-artifacts/$t/" 2>/dev/null | sed 's/^/    artifact: /' || true
  fi
done
echo "logs: target/fuzz-logs/; reproduce a crash: cargo +nightly fuzz run -a --fuzz-dir fuzz TARGET target/fuzz-artifacts/TARGET/crash-..."
exit "$failed"
