//! Canonical JSON (config fingerprints, record MACs, command hashes):
//! never panics; the canonical form parses back to the same value and is a
//! fixed point; key order and whitespace of the input do not matter.
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
    assert_eq!(reparsed, value, "{}", String::from_utf8_lossy(&canonical));
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
