//! Canonical JSON (config fingerprints, record MACs, command hashes):
//! never panics; the canonical form parses back to the same value (numbers
//! compared as the numbers they denote: RFC 8785 writes -0 as 0 and 1.0 as
//! 1) and is a fixed point; key order and whitespace of the input do not
//! matter.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::canonical::to_canonical_bytes;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(canonical) = to_canonical_bytes(&value) else {
        return;
    };
    let reparsed: Value = serde_json::from_slice(&canonical).expect("canonical JSON parses");
    assert!(
        same(&reparsed, &value),
        "{}",
        String::from_utf8_lossy(&canonical)
    );
    assert_eq!(
        to_canonical_bytes(&reparsed).as_deref(),
        Ok(canonical.as_slice())
    );
    let pretty = serde_json::to_vec_pretty(&value).expect("a value serializes");
    let from_pretty: Value = serde_json::from_slice(&pretty).expect("pretty JSON parses");
    assert_eq!(
        to_canonical_bytes(&from_pretty).as_deref(),
        Ok(canonical.as_slice())
    );
});

/// Equal values, numbers by what they denote.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
