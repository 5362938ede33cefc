#!/usr/bin/env bash
# Runs the core's unit tests compiled to wasm32-wasip1 (32-bit usize, the
# filters' real target) under wasmtime, the WASI runtime, through its PyPI
# package (a prebuilt wheel: no runtime to compile; installed into
# target/wasi-venv on first use). Same toolchain as scripts/build-wasm.sh.
#   scripts/wasm-unit-tests.sh [TEST-FILTER...]
# Tests that spawn threads cannot run on wasm32-wasip1 (no threads): they are
# skipped by name below. A failing test aborts the run (panic=abort). See
# docs/fuzzing.md ("The core's unit tests on wasm32").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# Unwinding-free but message-keeping panics here: a failing test must say why.
# shellcheck source=scripts/wasm-env.sh
. scripts/wasm-env.sh "$root/target/wasm-test"
wasm_env+=(RUSTFLAGS="$wasm_link")
# A test binary is a WASI command: link wasi-libc's command start file (the
# toolchain links no start files itself: link-self-contained=no). Passed to
# this crate's link only, so dependencies and std keep their build.
# Debian's wasi-libc has no pthread stubs, which libtest's std references:
# they are left as imports and answered "not supported" by the runner below.
"${wasm_env[@]}" /usr/bin/cargo rustc --locked -p meshguard-core --lib --profile test \
  -Zbuild-std=std,panic_abort,test -Zpanic-abort-tests --target wasm32-wasip1 \
  --message-format=json -- -C link-arg=/usr/lib/wasm32-wasi/crt1-command.o \
  -C link-arg=--allow-undefined \
  >target/wasm-test-build.json
module=$(python3 -c '
import json, sys
for line in open("target/wasm-test-build.json"):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") \
            and m["target"]["name"] == "meshguard_core":
        print(m["filenames"][0])
')
[ -x target/wasi-venv/bin/python ] || {
  python3 -m venv target/wasi-venv
  target/wasi-venv/bin/pip install -q wasmtime
}
target/wasi-venv/bin/python - "$module" "$@" <<'PY'
import sys
from wasmtime import Config, Engine, ExitTrap, Linker, Module, Store, WasiConfig

module_path, filters = sys.argv[1], sys.argv[2:]
engine = Engine(Config())
store = Store(engine)
wasi = WasiConfig()
# Spawns a thread with a small stack (no threads on wasm32-wasip1).
skips = ["--skip", "deep_documents_fail_with_too_deep_and_never_overflow_the_stack"]
wasi.argv = ["meshguard-core-tests", "--test-threads", "1", *skips, *filters]
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
print(f"wasm32-wasip1 unit tests of meshguard-core: exit {code}")
sys.exit(code)
PY
