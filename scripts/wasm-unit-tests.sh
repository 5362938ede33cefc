#!/usr/bin/env bash
# Runs the core's tests compiled to wasm32-wasip1 (32-bit usize, the
# filters' real target) under wasmtime, the WASI runtime, through its PyPI
# package (a prebuilt wheel: no runtime to compile; installed into
# target/wasi-venv on first use). Same toolchain as scripts/build-wasm.sh.
# Every test target of meshguard-core: the unit tests and each integration
# test in filters/core/tests/.
#   scripts/wasm-unit-tests.sh [TEST-FILTER...]
# wasm32-wasip1 has no threads: the tests that run a check on a small-stack
# thread run it on the module's own stack there. A failing test aborts that
# target's run (panic=abort). See docs/fuzzing.md ("The core's tests on
# wasm32").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# Unwinding-free but message-keeping panics here: a failing test must say why.
# shellcheck source=scripts/wasm-env.sh
. scripts/wasm-env.sh "$root/target/wasm-test"
# Optimized (the robustness suite runs minutes unoptimized under wasmtime),
# with the test profile's debug assertions and overflow checks kept.
wasm_env+=(RUSTFLAGS="$wasm_link" CARGO_PROFILE_TEST_OPT_LEVEL=2)
# A test binary is a WASI command: link wasi-libc's command start file (the
# toolchain links no start files itself: link-self-contained=no). Passed to
# each test crate's link only, so dependencies and std keep their build.
# Debian's wasi-libc has no pthread stubs, which libtest's std references:
# they are left as imports and answered "not supported" by the runner below.
targets=(--lib)
for t in filters/core/tests/*.rs; do
  targets+=("--test=$(basename "$t" .rs)")
done
modules=()
for target in "${targets[@]}"; do
  "${wasm_env[@]}" /usr/bin/cargo rustc --locked -p meshguard-core "$target" --profile test \
    -Zbuild-std=std,panic_abort,test -Zpanic-abort-tests --target wasm32-wasip1 \
    --message-format=json -- -C link-arg=/usr/lib/wasm32-wasi/crt1-command.o \
    -C link-arg=--allow-undefined \
    >target/wasm-test-build.json
  name=${target#--test=}
  [ "$name" != --lib ] || name=meshguard_core
  modules+=("$(python3 - "$name" <<'PY'
import json, sys
for line in open("target/wasm-test-build.json"):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") \
            and m["target"]["name"] == sys.argv[1]:
        print(m["filenames"][0])
PY
)")
done
[ -x target/wasi-venv/bin/python ] || {
  python3 -m venv target/wasi-venv
  target/wasi-venv/bin/pip install -q wasmtime
}
failed=0
for module in "${modules[@]}"; do
  target/wasi-venv/bin/python - "$module" "$@" <<'PY' || failed=1
import os, sys
from wasmtime import Config, Engine, ExitTrap, Linker, Module, Store, WasiConfig

module_path, filters = sys.argv[1], sys.argv[2:]
name = os.path.basename(module_path).rsplit("-", 1)[0]
engine = Engine(Config())
store = Store(engine)
wasi = WasiConfig()
wasi.argv = [name, "--test-threads", "1", *filters]
wasi.inherit_stdout()
wasi.inherit_stderr()
store.set_wasi(wasi)
linker = Linker(engine)
linker.define_wasi()
module = Module.from_file(engine, module_path)
# pthread_* (thread spawning): fail with ENOTSUP (58 in wasi-libc), as a
# runtime without threads does; the harness runs tests on one thread.
for imp in module.imports:
    if imp.module == "env" and imp.name.startswith("pthread_"):
        results = imp.type.results
        def stub(*args, _n=len(results)):
            return 58 if _n else None
        linker.define_func("env", imp.name, imp.type, stub)
instance = linker.instantiate(store, module)
try:
    instance.exports(store)["_start"](store)
    code = 0
except ExitTrap as e:
    code = e.code
print(f"wasm32-wasip1 tests of meshguard-core, {name}: exit {code}")
sys.exit(code)
PY
done
exit "$failed"
