//! Identity filter configs: any bytes compile or are refused, never panic;
//! a config that compiles judges a request.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::identity::{IdentityPolicy, RequestInfo, Transport};

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = IdentityPolicy::from_json(data) {
        let request = RequestInfo {
            path: "/api/orders/1",
            method: "GET",
            host: "orders.shop.svc.cluster.local",
        };
        let transport = Transport::from_host(
            Some(true),
            Some("TLSv1.3"),
            Some("spiffe://cluster.local/ns/shop/sa/frontend"),
        );
        let _ = policy.judge(transport, || (None, None), &request);
    }
});
