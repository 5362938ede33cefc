//! Canonical JSON: one byte sequence per JSON value, so that hashes and
//! signatures over configs and records do not depend on key order or spacing.
//!
//! The form: object keys sorted by their UTF-8 bytes, no insignificant whitespace,
//! strings and numbers written as serde_json writes them (shortest round-trip
//! numbers, minimal escapes).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Deepest nesting accepted; deeper values are refused rather than recursed into.
pub const MAX_DEPTH: usize = 128;

/// Why a value has no canonical form here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Writes the canonical form of `value`.
pub fn to_canonical_bytes(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::new();
    write(value, &mut out, 0)?;
    Ok(out)
}

fn write(value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), CanonicalError> {
    if depth > MAX_DEPTH {
        return Err(CanonicalError::TooDeep);
    }
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out, depth.saturating_add(1))?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write(item, out, depth.saturating_add(1))?;
            }
            out.push(b'}');
        }
        scalar => write_scalar(scalar, out),
    }
    Ok(())
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar Value into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    // A table, not `format!`: hex is on every audited request (hashes, ids).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(&d) = DIGITS.get(usize::from(nibble)) {
                s.push(char::from(d));
            }
        }
    }
    s
}

/// Writes `text` as a canonical JSON string (serde_json's escapes).
pub fn write_str(text: &str, out: &mut Vec<u8>) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(out, text);
}

/// Writes the canonical form of `value`, nested `depth` levels deep in the
/// document being written, into `out`.
pub fn write_canonical(
    value: &Value,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), CanonicalError> {
    write(value, out, depth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_spacing_do_not_change_the_canonical_form() {
        let a: Value =
            serde_json::from_str(r#"{ "b": [1, 2.5, "x"], "a": {"z": null, "y": true} }"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"y":true,"z":null},"b":[1,2.5,"x"]}"#).unwrap();
        let want = br#"{"a":{"y":true,"z":null},"b":[1,2.5,"x"]}"#;
        assert_eq!(to_canonical_bytes(&a).unwrap(), want);
        assert_eq!(to_canonical_bytes(&b).unwrap(), want);
    }

    #[test]
    fn strings_are_escaped_minimally_and_keys_sorted_by_bytes() {
        let v = json!({"é": "line\nbreak \"q\"", "Z": 1, "a": 2});
        assert_eq!(
            to_canonical_bytes(&v).unwrap(),
            "{\"Z\":1,\"a\":2,\"é\":\"line\\nbreak \\\"q\\\"\"}".as_bytes()
        );
    }

    #[test]
    fn parsed_floats_keep_the_shortest_form_of_their_value() {
        // serde_json's default float parser may land one ULP off (0.45999999999999996
        // read as 0.46): the canonical form then named another number. Needs
        // serde_json's `float_roundtrip` feature.
        for text in [
            "0.45999999999999996",
            "0.43000000000000005",
            "1.1500000000000001",
            "3.8015374509812167e-272",
            "-8.55776243443869e181",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let want = text.replace("e1", "e+1");
            assert_eq!(
                to_canonical_bytes(&value).unwrap(),
                want.as_bytes(),
                "{text}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = json!(1);
        for _ in 0..=MAX_DEPTH {
            v = json!([v]);
        }
        assert_eq!(to_canonical_bytes(&v), Err(CanonicalError::TooDeep));
    }

    #[test]
    fn sha256_is_lower_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
