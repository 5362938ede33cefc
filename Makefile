# meshguard: the two commands the README names are `make demo` and `make test`.
# Every target installs what it needs (scripts/install-tools.sh is idempotent).
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help tools wasm lint unit test demo bench manifests clean
.PHONY: oci fuzz soak wasm-unit mutants test-combined native native-verify test-native soak-native

help:
	@echo "make test   install tools, build the wasm filters, lint, unit + real-Envoy + manifest tests"
	@echo "make demo   install tools, build, run two sidecars with all filters: decisions, masking, audit verify, drift, metrics"
	@echo "make test-combined  the real-Envoy suites again, the module deployed once with the combined config"
	@echo "make wasm   build dist/*.wasm only;  make lint   fmt + clippy (native and wasm32)"
	@echo "make bench  every filter in the real Envoy vs native RBAC/Lua (docs/benchmarks.md);  make manifests  render istio-manifests/ into dist/istio/"
	@echo "make oci    package dist/meshguard.wasm as the Istio Wasm OCI image every plugin pulls (layout in dist/oci/meshguard)"
	@echo "make fuzz   every cargo-fuzz target for FUZZ_SECONDS (default 20) each (docs/fuzzing.md)"
	@echo "make soak   fixed-rate mixed load through all filters, reloads under load (docs/soak.md)"
	@echo "make wasm-unit  the core's tests compiled to wasm32-wasip1, run under wasmtime"
	@echo "make native     build dist/libmeshguard.so (Envoy dynamic module) reproducibly, record its sha256 (docs/native.md)"
	@echo "make test-native  the parity matrix: the real-Envoy suites against dist/libmeshguard.so (MESHGUARD_TEST_BUILD=native)"
	@echo "make mutants    rerun docs/testing.md's cargo mutants runs, regenerate its table (MUTANTS=\"xfcc-scope ...\" for some)"

tools:
	@scripts/install-tools.sh

wasm: tools
	@scripts/build-wasm.sh

lint: tools
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	scripts/build-wasm.sh clippy

unit:
	cargo test --workspace --locked --exclude meshguard-host-tests

# The native module (docs/native.md): dist/libmeshguard.so and its sha256 in
# dist/libmeshguard.so.sha256. native-verify also builds it a second time from
# scratch and requires the same bytes.
native: tools
	@scripts/build-native.sh

native-verify: tools
	@scripts/build-native.sh verify

# The parity matrix (docs/testing.md): the real-Envoy suites, unchanged, with
# the server sidecar's filters in the native module, plus its own checks (ABI,
# process env, panic answer, the example); about 5 minutes.
NATIVE_SUITES := identity masking masking_shapes masking_streams audit audit_shapes integrity \
  workers observability paths shadow hostile hostile_peers gateway_identity waypoint \
  fuzz_findings failure_strategies native
test-native: native wasm
	MESHGUARD_TEST_BUILD=native cargo test --locked -p meshguard-host-tests $(addprefix --test ,$(NATIVE_SUITES))

# The host tests run the dist/*.wasm modules in real Envoy processes.
test: wasm native lint
	cargo test --workspace --locked
	BENCH_SMOKE=1 BENCH_OUT=target/bench-smoke.md scripts/bench.sh

# The same real-Envoy suites with one plugin instance and the combined config
# (host-tests/src/mesh.rs, Deployment; docs/testing.md).
test-combined: wasm
	MESHGUARD_TEST_DEPLOYMENT=combined cargo test --locked -p meshguard-host-tests

# Quiet builds, then the demo: it checks every claim it prints, exits 1 with
# one line naming the failed step, and keeps its services' logs in target/demo/.
demo: tools
	@echo "make demo: building dist/*.wasm, the meshguard CLI and the demo (quiet; minutes on a fresh clone)"
	@MESHGUARD_QUIET=1 scripts/build-wasm.sh
	@cargo build --quiet --locked -p meshguard-cli
	@cargo run --quiet --locked -p meshguard-host-tests --bin demo

manifests: wasm
	scripts/render-manifests.sh

# Istio's "compat" Wasm image of dist/meshguard.wasm, one for every plugin, as an OCI layout (push with skopeo, docs/deploy.md).
oci: wasm
	scripts/build-oci.sh

# Every filter in the real Envoy against native RBAC and Lua, the native
# module's cells beside the Wasm ones, plus the native engine
# microbenchmarks; writes docs/benchmarks.md (~15 minutes).
bench: wasm native
	scripts/bench.sh

# Needs the rustup nightly toolchain; installs cargo-fuzz if missing (docs/fuzzing.md).
fuzz:
	scripts/fuzz.sh

# Not part of `make test`. Short CI variant: SOAK_REQUESTS=6000 SOAK_RATE=200 make soak
soak: wasm
	scripts/soak.sh

# The soak with the combined plugin in the native module (docs/soak.md):
# SOAK_DELIVERY=ecds pushes a new filter config every SOAK_RELOAD_SECONDS.
soak-native: wasm native
	MESHGUARD_TEST_BUILD=native MESHGUARD_TEST_DEPLOYMENT=combined scripts/soak.sh

# The mutation runs of docs/testing.md, one job at a time; rewrites their table
# rows. Hours for all (detect.rs ~1 h); MUTANTS="xfcc-scope spiffe" for some.
mutants: tools
	scripts/mutants.sh $(MUTANTS)

# 32-bit usize: the core's unit tests on the filters' own target (docs/fuzzing.md).
wasm-unit: tools
	scripts/wasm-unit-tests.sh

clean:
	rm -rf target dist
