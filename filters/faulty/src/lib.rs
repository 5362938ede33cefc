//! TEST ONLY. A filter that fails on purpose, so that the real-Envoy test
//! `host-tests/tests/failure_strategies.rs` can show what each failure policy
//! (Istio `failStrategy`) does when a VM dies. It is never shipped:
//! `scripts/build-faulty-wasm.sh` writes it to `target/test-wasm/`, and the
//! dist, OCI and manifest scripts name only the real filters.
//!
//! Per request, by the value of [`FAULT_HEADER`]:
//! - `panic`: panics (a trap: the VM is marked failed);
//! - `oom`: allocates until the VM's memory is exhausted (the module is linked
//!   with a small `--max-memory`, so this takes milliseconds and bounded RSS);
//! - anything else or absent: passes the request on with [`SEEN_HEADER`] set to
//!   this VM's id, so the test can prove every request that reached the
//!   upstream went through a live filter, and which VM it was.
//!
//! Its config goes through the shipped filters' loader (signature, release
//! scope, anti-rollback), as filter `faulty`: the test also shows what a VM
//! Envoy recreates does with the config it was configured with.

// Crashing is this crate's purpose: the workspace's panic denials exist to
// keep exactly this out of the real filters. For the same reason it does not
// carry the shipped crates' `clippy::arithmetic_side_effects` denial
// (docs/fuzzing.md, "Arithmetic"): it is never built into dist/.
#![allow(clippy::panic)]

use meshguard_core::config::ConfigError;
use meshguard_host::integrity::{FilterRoot, Guard, Root};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

/// The request header that picks a fault.
pub const FAULT_HEADER: &str = "x-meshguard-fault";
/// The header added to every request the filter passes on: the VM's id.
pub const SEEN_HEADER: &str = "x-meshguard-faulty-vm";

proxy_wasm::main! {{
    Root::<FaultyRoot>::register();
}}

/// The shipped filters' root (config loading with every integrity check), so
/// that a VM Envoy recreates goes through the same `on_configure` as theirs.
/// A new VM gets a new id: the host time when its config was accepted.
struct FaultyRoot {
    vm: u64,
}

impl FilterRoot for FaultyRoot {
    const NAME: &'static str = "faulty";
    /// Any JSON object: this filter has no settings of its own.
    type Compiled = ();

    fn compile(_: &[u8]) -> Result<(), ConfigError> {
        Ok(())
    }

    fn start(_context_id: u32, (): (), _guard: &Guard) -> Self {
        let vm = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Self {
            vm: u64::try_from(vm).unwrap_or(u64::MAX),
        }
    }

    fn http_context(state: Option<&Self>) -> Box<dyn HttpContext> {
        Box::new(Faulty {
            vm: state.map(|s| s.vm),
        })
    }
}

/// `vm` is `None` when no config was accepted: every request is refused.
struct Faulty {
    vm: Option<u64>,
}

impl Context for Faulty {}

impl HttpContext for Faulty {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(vm) = self.vm else {
            if !meshguard_host::send_json_reply(503, Some("not_configured"), b"{}") {
                meshguard_host::reset_request();
            }
            return Action::Pause;
        };
        let fault = hostcalls::get_map_value(MapType::HttpRequestHeaders, FAULT_HEADER)
            .ok()
            .flatten();
        match fault.as_deref() {
            Some("panic") => panic!("meshguard-faulty: panic requested"),
            Some("oom") => exhaust_memory(),
            _ => {
                let _ = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    SEEN_HEADER,
                    Some(&vm.to_string()),
                );
                Action::Continue
            }
        }
    }
}

/// Allocates and touches 1 MiB blocks until an allocation fails, which aborts
/// (a trap) as any out-of-memory does in a wasm VM.
fn exhaust_memory() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&held);
    }
}
