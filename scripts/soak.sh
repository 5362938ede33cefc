#!/usr/bin/env bash
# The soak (host-tests/tests/soak.rs, #[ignore]d so `make test` skips it):
# a fixed-rate mixed load through identity → masking → audit with a live
# collector, listener pushes under load, audit chain verification. Settings:
#   SOAK_REQUESTS (default 10000)  SOAK_RATE req/s (default 300)
#   SOAK_CONNECTIONS (default 8)   SOAK_RELOAD_SECONDS (default 5; 0 = no pushes)
# CI's short variant: SOAK_REQUESTS=6000 SOAK_RATE=200 make soak (about 30 s).
# The report is printed and kept in target/soak/last.md (docs/soak.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export SOAK_RELOAD_SECONDS=${SOAK_RELOAD_SECONDS:-5}
mkdir -p target/soak
cargo test --locked -p meshguard-host-tests --test soak -- --ignored --nocapture --test-threads 1 \
  | tee target/soak/output.txt
# libtest may print `test soak ... ` on the report's first line.
sed -n '/## Soak result/,/^- audit:/p' target/soak/output.txt | sed 's/^test .* \.\.\. ##/##/' \
  >target/soak/last.md
echo "report: target/soak/last.md"
