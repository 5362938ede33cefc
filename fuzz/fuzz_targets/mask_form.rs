//! `application/x-www-form-urlencoded` body masking, both directions: never
//! panics; a masked body (possibly equal to its input: `*` masks to `*`) keeps the number of `&`-separated pairs unless a
//! `remove` strategy dropped some.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::identity::RequestInfo;
use meshguard_core::masking::{BodyKind, Direction};

fuzz_target!(|data: &[u8]| {
    let policy = meshguard_fuzz::masking_policy();
    let pairs = data.split(|&b| b == b'&').count();
    for (direction, path) in [
        (Direction::Request, "/login"),
        (Direction::Response, "/users/1"),
    ] {
        let request = RequestInfo {
            path,
            method: "POST",
            host: "api",
        };
        let selection = policy.select(direction, None, &request);
        if let Ok(masked) = policy.mask_body(&selection, BodyKind::Form, data) {
            if let Some(body) = masked.body {
                assert!(
                    body.split(|&b| b == b'&').count() <= pairs,
                    "pairs were added"
                );
            }
        }
    }
});
