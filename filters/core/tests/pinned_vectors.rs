//! Pinned vectors for the masking strategies whose output a reader cannot
//! check by eye: `hash` (a keyed HMAC) and `partial`. Every expected value was
//! computed OUTSIDE this code, from the documented definitions
//! (docs/masking.md "Strategies"), so a change to the output is a visible
//! break of the documented format, never a silent re-baseline:
//!
//! ```text
//! python3 -c 'import hmac, hashlib, base64
//! k = b"meshguard-pinned-vector-key-0001"
//! v = "ann@example.com"
//! print("hash:" + base64.urlsafe_b64encode(
//!     hmac.new(k, v.encode(), hashlib.sha256).digest()).decode().rstrip("=")[:22])'
//! ```
//!
//! `partial`: keep the last `keep_last` characters, replace every other
//! letter or digit (any script) with `*`, keep the rest; non-strings as their
//! compact JSON text. In Envoy, host-tests/tests/masking.rs pins a `hash`
//! pseudonym computed the same way (`requests_are_masked_before_the_upstream_sees_them`)
//! and checks that `meshguard mask` and the filter agree byte for byte
//! (`what_meshguard_mask_prints_is_byte_for_byte_what_envoy_forwards`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use meshguard_core::masking::{BodyKind, Direction, MaskingPolicy};
use meshguard_core::request::RequestInfo;
use serde_json::{json, Value};

const KEY: &[u8] = b"meshguard-pinned-vector-key-0001";

fn mask(policy: &str, body: &Value) -> Value {
    let policy = MaskingPolicy::from_json(policy.as_bytes(), Some(KEY)).unwrap();
    let request = RequestInfo {
        path: "/",
        method: "POST",
        host: "svc",
    };
    let selection = policy.select(Direction::Request, None, &request);
    let masked = policy
        .mask_body(&selection, BodyKind::Json, body.to_string().as_bytes())
        .unwrap();
    serde_json::from_slice(&masked.body.expect("the body changed")).unwrap()
}

#[test]
fn hash_is_hmac_sha256_base64url_cut_to_22_characters() {
    let policy = r#"{"rules": [{"name": "h", "strategy": "hash",
        "json_keys": ["email", "ssn", "empty", "name", "num", "obj", "flag", "card"]}]}"#;
    let body = json!({
        "email": "ann@example.com",
        "ssn": "078-05-1120",
        "empty": "",
        "name": "Zoë Ünicøde",
        "num": 123456789,
        "obj": {"a": [1, "x y"]},
        "flag": true,
        "card": "4111 1111 1111 1111",
        "kept": "ann@example.com"
    });
    let want = json!({
        "email": "hash:yxTmEyHiRKTF6gfj4bT3lo",
        "ssn": "hash:Uj0v8B4sAHQwuti9eKUTMq",
        "empty": "hash:Fx_Z4e6O_yNsgNkgfC26jS",
        "name": "hash:ei9KHWOAwv94pinnrI5o27",
        "num": "hash:SKBdDJKt7cM79YdAm90q20",
        "obj": "hash:QJ-QJk6UqyK0rz6Py8wHWz",
        "flag": "hash:rVRWIuQv4o6ioEFmtdpf0c",
        "card": "hash:QDM2ZLCsXsn6G9Fo1I0rlb",
        "kept": "ann@example.com"
    });
    assert_eq!(mask(policy, &body), want);
}

#[test]
fn partial_keeps_the_last_characters_and_the_separators() {
    let policy = r#"{"rules": [
        {"name": "p4", "strategy": "partial", "keep_last": 4,
         "json_keys": ["card", "ssn", "email", "short", "num", "flag", "name"]},
        {"name": "p0", "strategy": "partial", "keep_last": 0, "json_keys": ["secret"]}]}"#;
    let body = json!({
        "card": "4111 1111 1111 1111",
        "ssn": "123-45-6789",
        "email": "john.doe@example.com",
        "short": "1234",
        "num": 123456789,
        "flag": true,
        "name": "Zoë Ünicøde",
        "secret": "secret"
    });
    let want = json!({
        "card": "**** **** **** 1111",
        "ssn": "***-**-6789",
        "email": "****.***@*******.com",
        "short": "****",
        "num": "*****6789",
        "flag": "****",
        "name": "*** ***cøde",
        "secret": "******"
    });
    assert_eq!(mask(policy, &body), want);
}
