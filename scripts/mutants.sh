#!/usr/bin/env bash
# Reruns the `cargo mutants` runs docs/testing.md records ("Mutation scores")
# and regenerates their rows of its table from the output.
#   scripts/mutants.sh                  every run (hours: detect.rs alone ~1 h)
#   scripts/mutants.sh xfcc-scope spiffe   only these runs
# One job at a time (-j 1), as the shared machines need. Installs
# cargo-mutants $version with `cargo install` when missing. Output per run in
# target/mutants/<run>/mutants.out (caught.txt, missed.txt, timeout.txt,
# unviable.txt); the script fails when a run could not start, not when a
# mutant survives (the table says so).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=27.1.0

if ! cargo mutants --version 2>/dev/null | grep -q "$version"; then
  echo "installing cargo-mutants $version (cargo install cargo-mutants --locked)" >&2
  cargo install cargo-mutants --locked --version "$version"
fi

# name | timeout (s) | files. The timeout is ten times the tests' run where
# mutants make a scanner loop forever (detect.rs), else generous.
runs=(
  "xfcc-scope|120|filters/core/src/identity/xfcc.rs filters/core/src/scope.rs"
  "spiffe|120|filters/core/src/spiffe.rs"
  "pattern|120|filters/core/src/pattern.rs"
  "policy|120|filters/core/src/identity/policy.rs"
  "canon|120|filters/core/src/audit/canon.rs"
  "canonical|120|filters/core/src/canonical.rs"
  "detect|30|filters/core/src/masking/detect.rs"
)

selected=("$@")
ran=()
for run in "${runs[@]}"; do
  IFS='|' read -r name timeout files <<<"$run"
  if [ ${#selected[@]} -gt 0 ] && ! printf '%s\n' "${selected[@]}" | grep -qx "$name"; then
    continue
  fi
  args=()
  for f in $files; do args+=(-f "$f"); done
  out="target/mutants/$name"
  rm -rf "$out"
  mkdir -p "$out"
  echo "== cargo mutants -p meshguard-core ${args[*]} --timeout $timeout -j 1 -- --lib --test mutation_kills" >&2
  # Exit 2: some mutants were missed; 3: some timed out (caught). Both are results.
  status=0
  cargo mutants -p meshguard-core "${args[@]}" --timeout "$timeout" -j 1 \
    --output "$out" -- --lib --test mutation_kills || status=$?
  case $status in
    0|2|3) ;;
    *) echo "cargo mutants failed on $name (exit $status)" >&2; exit "$status" ;;
  esac
  ran+=("$name|$files")
done

if [ ${#ran[@]} -eq 0 ]; then
  echo "no run named ${selected[*]}; runs: $(printf '%s ' "${runs[@]%%|*}")" >&2
  exit 2
fi
node scripts/mutants-table.mjs docs/testing.md "${ran[@]}"
