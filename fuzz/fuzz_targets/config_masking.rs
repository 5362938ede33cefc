//! Masking filter configs: any bytes compile or are refused, never panic;
//! a config that compiles masks a small JSON body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::identity::RequestInfo;
use meshguard_core::masking::{BodyKind, Direction, MaskingPolicy};

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = MaskingPolicy::from_json(data, Some(meshguard_fuzz::HASH_KEY)) {
        let request = RequestInfo {
            path: "/users/1",
            method: "GET",
            host: "api",
        };
        let selection = policy.select(Direction::Response, None, &request);
        let _ = policy.mask_body(
            &selection,
            BodyKind::Json,
            br#"{"users":[{"ssn":"123-45-6789","password":"x","email":"a@b.co"}]}"#,
        );
    }
});
