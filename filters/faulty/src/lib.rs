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

// Crashing is this crate's purpose: the workspace's panic denials exist to
// keep exactly this out of the real filters. For the same reason it does not
// carry the shipped crates' `clippy::arithmetic_side_effects` denial
// (docs/fuzzing.md, "Arithmetic"): it is never built into dist/.
#![allow(clippy::panic)]

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

/// The request header that picks a fault.
pub const FAULT_HEADER: &str = "x-meshguard-fault";
/// The header added to every request the filter passes on: the VM's id.
pub const SEEN_HEADER: &str = "x-meshguard-faulty-vm";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FaultyRoot { vm: 0 }) });
}}

/// A new VM gets a new id: the host time when its root context started.
struct FaultyRoot {
    vm: u128,
}

impl Context for FaultyRoot {}

impl RootContext for FaultyRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        self.vm = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Faulty { vm: self.vm }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Faulty {
    vm: u128,
}

impl Context for Faulty {}

impl HttpContext for Faulty {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let fault = hostcalls::get_map_value(MapType::HttpRequestHeaders, FAULT_HEADER)
            .ok()
            .flatten();
        match fault.as_deref() {
            Some("panic") => panic!("meshguard-faulty: panic requested"),
            Some("oom") => exhaust_memory(),
            _ => {
                let vm = self.vm.to_string();
                let _ =
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, SEEN_HEADER, Some(&vm));
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
