//! Audit filter configs: any bytes compile or are refused, never panic;
//! a config that compiles hashes a request.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::audit::AuditPolicy;

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = AuditPolicy::from_json(data) {
        let _ = policy.hash_request("POST", "/api/orders?b=2&a=1", "orders", br#"{"id":1}"#);
    }
});
