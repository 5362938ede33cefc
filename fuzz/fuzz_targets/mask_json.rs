//! JSON body masking under examples/masking/pii.json, both directions.
//! Differential properties, whenever the input is JSON serde_json accepts:
//! - masking succeeds or refuses with a stable error, never panics;
//! - the output is JSON;
//! - nothing outside masked values changes: every object keeps its keys
//!   (a `remove` strategy may drop some, never add one), arrays keep their
//!   length, and every scalar is unchanged unless it became a masked string.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::identity::RequestInfo;
use meshguard_core::masking::{BodyKind, Direction};
use serde_json::Value;

/// Whether `out` is `input` with some values masked (replaced by strings) or removed.
fn only_masked(input: &Value, out: &Value) -> bool {
    match (input, out) {
        (_, Value::String(_)) => true,
        (Value::Object(a), Value::Object(b)) => b
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|orig| only_masked(orig, v))),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| only_masked(x, y))
        }
        (a, b) => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let policy = meshguard_fuzz::masking_policy();
    let input: Option<Value> = serde_json::from_slice(data).ok();
    for (direction, path) in [
        (Direction::Request, "/api/users"),
        (Direction::Response, "/users/1"),
    ] {
        let request = RequestInfo {
            path,
            method: "POST",
            host: "api",
        };
        let selection = policy.select(direction, None, &request);
        let Ok(masked) = policy.mask_body(&selection, BodyKind::Json, data) else {
            continue;
        };
        let (Some(input), Some(body)) = (&input, &masked.body) else {
            continue;
        };
        let out: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => panic!(
                "masked output is not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            ),
        };
        assert!(
            only_masked(input, &out),
            "masking changed more than masked values:\n in: {input}\nout: {out}"
        );
    }
});
