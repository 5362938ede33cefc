//! TEST ONLY. The meshguard module with faults on request, so that the
//! real-Envoy test `host-tests/tests/failure_strategies.rs` can show what
//! each failure policy (Istio `failStrategy`) does when a VM dies. It is
//! never shipped: `scripts/build-faulty-wasm.sh` writes it to
//! `target/test-wasm/`, and the dist, OCI and manifest scripts name only the
//! real module.
//!
//! It is the shipped pipeline (config loading with every integrity check,
//! every section), exporting the same ABI, except that at the request
//! headers, by the value of [`FAULT_HEADER`]:
//! - `panic`: panics (a trap: the VM is marked failed);
//! - `oom`: allocates until the VM's memory is exhausted (the module is linked
//!   with a small `--max-memory`, so this takes milliseconds and bounded RSS);
//! - anything else or absent: the request goes through the pipeline, and a
//!   request it passes on carries [`SEEN_HEADER`] set to this VM's id (the
//!   host time when its config was accepted), so the test can prove every
//!   request that reached the upstream went through a live VM, and which.
//!
//! With [`FLOOR_ENV`] set in the VM's environment it is the benchmark's floor
//! for any wasm filter instead: each request only reads one header and sets
//! one (no pipeline, no per-stream state).
//!
//! With [`LATER_VMS_REVOKE_ENV`] set to `N:KEY_ID`, every VM that loads its
//! config after the proxy's first `N` loads (counted in shared data) sees
//! `MESHGUARD_REVOKED_KEYS=KEY_ID` in its environment: a worker that decides
//! differently from the main thread, which the shipped module never is.

// Crashing is this crate's purpose: the workspace's panic denials exist to
// keep exactly this out of the real module. For the same reason it does not
// carry the shipped crates' `clippy::arithmetic_side_effects` denial
// (docs/fuzzing.md, "Arithmetic"): it is never built into dist/.
#![allow(clippy::panic)]

/// The request header that picks a fault.
pub const FAULT_HEADER: &str = "x-meshguard-fault";
/// The header added to every request the module passes on: the VM's id.
pub const SEEN_HEADER: &str = "x-meshguard-faulty-vm";
/// Set (to anything) in `vmConfig.env`: the module is the wasm floor.
pub const FLOOR_ENV: &str = "MESHGUARD_TEST_FLOOR";
/// `N:KEY_ID` in `vmConfig.env`: the VMs configured after the first `N`
/// loads revoke `KEY_ID`.
pub const LATER_VMS_REVOKE_ENV: &str = "MESHGUARD_TEST_LATER_VMS_REVOKE";

#[cfg(target_family = "wasm")]
mod exports {
    #![allow(unsafe_code)] // the ABI's exports: the host calls them by name

    use std::cell::Cell;

    use meshguard_host::wasm::{self, abi};

    use super::{FAULT_HEADER, FLOOR_ENV, LATER_VMS_REVOKE_ENV, SEEN_HEADER};

    /// The proxy's count of config loads ([`LATER_VMS_REVOKE_ENV`]).
    const LOADS_KEY: &str = "meshguard-faulty.loads";

    /// Counts this load; from the `N+1`th on, revokes the key in this VM's
    /// environment (what the pipeline reads as `MESHGUARD_REVOKED_KEYS`).
    fn later_vms_revoke() {
        let Some(setting) = std::env::var(LATER_VMS_REVOKE_ENV).ok() else {
            return;
        };
        let Some((first, key_id)) = setting.split_once(':') else {
            return;
        };
        let first: u64 = first.parse().unwrap_or(u64::MAX);
        for _ in 0..8 {
            let (loads, cas) = match abi::shared_data(LOADS_KEY) {
                Some((bytes, cas)) => (
                    std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0),
                    cas,
                ),
                None => (0, 0),
            };
            let this = loads.saturating_add(1);
            if abi::set_shared_data(LOADS_KEY, this.to_string().as_bytes(), cas).is_ok() {
                if this > first {
                    std::env::set_var("MESHGUARD_REVOKED_KEYS", key_id);
                }
                return;
            }
        }
    }

    thread_local! {
        /// This VM's id: the host time (ns) its config was accepted.
        static VM: Cell<Option<u64>> = const { Cell::new(None) };
        /// The VM is the benchmark's floor ([`FLOOR_ENV`]).
        static FLOOR: Cell<bool> = const { Cell::new(false) };
    }

    fn floor() -> bool {
        FLOOR.with(Cell::get)
    }

    #[no_mangle]
    pub extern "C" fn _initialize() {
        wasm::initialize()
    }
    #[no_mangle]
    pub extern "C" fn proxy_abi_version_0_2_1() {}
    #[no_mangle]
    pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
        wasm::on_memory_allocate(size)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
        if parent_id != 0 && floor() {
            return;
        }
        wasm::on_context_create(context_id, parent_id)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_vm_start(context_id: u32, size: usize) -> bool {
        wasm::on_vm_start(context_id, size)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_configure(context_id: u32, size: usize) -> bool {
        if std::env::var_os(FLOOR_ENV).is_some() {
            FLOOR.with(|f| f.set(true));
            return true;
        }
        later_vms_revoke();
        let accepted = wasm::on_configure(context_id, size);
        if accepted {
            VM.with(|vm| vm.set(abi::now_ns()));
        }
        accepted
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_tick(context_id: u32) {
        wasm::on_tick(context_id)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_queue_ready(context_id: u32, queue_id: u32) {
        wasm::on_queue_ready(context_id, queue_id)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_http_call_response(
        context_id: u32,
        token: u32,
        headers: usize,
        body: usize,
        trailers: usize,
    ) {
        wasm::on_http_call_response(context_id, token, headers, body, trailers)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_request_headers(context_id: u32, n: usize, end: bool) -> u32 {
        let fault = abi::header_value(abi::MapKind::RequestHeaders, FAULT_HEADER);
        if floor() {
            // One header read (above), one header set: nothing else.
            abi::replace_header(abi::MapKind::RequestHeaders, SEEN_HEADER, "floor");
            return 0;
        }
        match fault.as_deref() {
            Some(b"panic") => panic!("meshguard-faulty: panic requested"),
            Some(b"oom") => exhaust_memory(),
            _ => {}
        }
        let action = wasm::on_request_headers(context_id, n, end);
        if let Some(vm) = VM.with(Cell::get) {
            abi::replace_header(abi::MapKind::RequestHeaders, SEEN_HEADER, &vm.to_string());
        }
        action
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_request_body(context_id: u32, size: usize, end: bool) -> u32 {
        wasm::on_request_body(context_id, size, end)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_request_trailers(context_id: u32, n: usize) -> u32 {
        wasm::on_request_trailers(context_id, n)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_response_headers(context_id: u32, n: usize, end: bool) -> u32 {
        wasm::on_response_headers(context_id, n, end)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_response_body(context_id: u32, size: usize, end: bool) -> u32 {
        wasm::on_response_body(context_id, size, end)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_response_trailers(context_id: u32, n: usize) -> u32 {
        wasm::on_response_trailers(context_id, n)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_log(context_id: u32) {
        wasm::on_log(context_id)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_done(context_id: u32) -> bool {
        wasm::on_done(context_id)
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_delete(context_id: u32) {
        wasm::on_delete(context_id)
    }

    /// Allocates and touches 1 MiB blocks until an allocation fails, which
    /// aborts (a trap) as any out-of-memory does in a wasm VM.
    fn exhaust_memory() -> ! {
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop {
            held.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&held);
        }
    }
}

/// The native test module: the shipped dynamic module (the same exports and
/// pipeline), except that a request asking for `panic` in [`FAULT_HEADER`]
/// panics in the request headers hook, where the module's panic guard must
/// turn it into the documented answer (`host-tests/tests/native.rs`).
#[cfg(all(feature = "native", not(target_family = "wasm")))]
pub mod native_exports {
    use meshguard_host::host::{Map, StreamHost};
    use meshguard_host::native::host::NativeStream;

    use super::FAULT_HEADER;

    /// Panics when the request asks for it.
    pub fn fault(host: &mut NativeStream<'_>) {
        if host.header(Map::RequestHeaders, FAULT_HEADER).as_deref() == Some("panic") {
            panic!("meshguard-faulty: the panic the request asked for");
        }
    }

    meshguard_host::export_envoy_dynamic_module!(crate::native_exports::fault);
}
