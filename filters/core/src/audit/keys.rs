//! HMAC keys: decoding the key from the VM environment, looking keys up by
//! key id (rotation), and the HMAC-SHA256 primitives used by headers and records.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use base64::engine::general_purpose::{
    STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD, URL_SAFE_PAD_INDIFFERENT,
};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted: the HMAC-SHA256 output size.
pub const MIN_KEY_BYTES: usize = 32;
/// Longest key accepted (bounds decoding work on a misconfigured variable).
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest key text: [`MAX_KEY_BYTES`] in padded base64.
const MAX_KEY_TEXT: usize = MAX_KEY_BYTES.div_ceil(3) * 4;

/// Why the key text (the environment variable's value) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty (the environment variable is unset or blank)")]
    Empty,
    #[error("the key is not base64: {0}")]
    NotBase64(String),
    #[error("the key decodes to {len} bytes; at least {MIN_KEY_BYTES} are needed")]
    TooShort { len: usize },
    #[error("the key is longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
}

/// Decodes a key written in base64: the standard (`+/`) or the URL-safe (`-_`)
/// alphabet, padding optional, surrounding whitespace ignored. At least
/// [`MIN_KEY_BYTES`] bytes once decoded.
pub fn decode_key(text: &str) -> Result<Vec<u8>, KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    if text.len() > MAX_KEY_TEXT {
        return Err(KeyError::TooLong);
    }
    let decoded = if text.contains(['-', '_']) {
        URL_SAFE_PAD_INDIFFERENT.decode(text)
    } else {
        STANDARD_PAD_INDIFFERENT.decode(text)
    }
    .map_err(|e| KeyError::NotBase64(e.to_string()))?;
    if decoded.len() < MIN_KEY_BYTES {
        return Err(KeyError::TooShort { len: decoded.len() });
    }
    if decoded.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong);
    }
    Ok(decoded)
}

/// Keys by key id, for verifying headers and records signed over a rotation.
/// Implemented for the usual maps from key id to key bytes.
pub trait KeyLookup {
    fn key(&self, kid: &str) -> Option<&[u8]>;
}

impl<S: BuildHasher> KeyLookup for std::collections::HashMap<String, Vec<u8>, S> {
    fn key(&self, kid: &str) -> Option<&[u8]> {
        self.get(kid).map(Vec::as_slice)
    }
}

impl<S: BuildHasher> KeyLookup for hashbrown::HashMap<String, Vec<u8>, S> {
    fn key(&self, kid: &str) -> Option<&[u8]> {
        self.get(kid).map(Vec::as_slice)
    }
}

impl KeyLookup for BTreeMap<String, Vec<u8>> {
    fn key(&self, kid: &str) -> Option<&[u8]> {
        self.get(kid).map(Vec::as_slice)
    }
}

/// A single key, whatever the key id.
#[derive(Debug, Clone, Copy)]
pub struct AnyKid<'a>(pub &'a [u8]);

impl KeyLookup for AnyKid<'_> {
    fn key(&self, _kid: &str) -> Option<&[u8]> {
        Some(self.0)
    }
}

/// An HMAC-SHA256 key with its key schedule done once (the inner and outer
/// pads hashed): each tag then costs only the data's blocks.
#[derive(Clone)]
pub struct MacKey(HmacSha256);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl MacKey {
    /// `None` only if the MAC refused the key, which HMAC never does.
    pub fn new(key: &[u8]) -> Option<Self> {
        HmacSha256::new_from_slice(key).ok().map(Self)
    }

    /// HMAC-SHA256 of `data`.
    pub fn tag(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

/// Constant-time check of a tag over `data`.
pub(crate) fn hmac_verify(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.verify_slice(tag).is_ok()
        }
        Err(_) => false,
    }
}

/// base64url without padding, as written in headers and records.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url-without-padding decoding of a 32-byte tag: the canonical
/// spelling only (no padding, no stray bits), so a tag has exactly one text form.
pub(crate) fn b64url_tag(text: &str) -> Option<[u8; 32]> {
    if text.len() != 43 {
        return None;
    }
    let mut out = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut out) {
        Ok(32) => Some(out),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_base64_of_at_least_32_bytes_in_either_alphabet() {
        let raw: Vec<u8> = (0u8..40)
            .map(|i| i.wrapping_mul(37).wrapping_add(250))
            .collect();
        let std_text = base64::engine::general_purpose::STANDARD.encode(&raw);
        let url_text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        assert_ne!(std_text.trim_end_matches('='), url_text);
        assert_eq!(decode_key(&std_text).unwrap(), raw);
        assert_eq!(decode_key(&format!("  {url_text}\n")).unwrap(), raw);
        let cases = [
            ("", KeyError::Empty),
            ("   ", KeyError::Empty),
            ("c2hvcnQ=", KeyError::TooShort { len: 5 }),
        ];
        for (text, want) in cases {
            assert_eq!(decode_key(text).unwrap_err(), want, "{text:?}");
        }
        assert!(matches!(
            decode_key("not base64 at all!"),
            Err(KeyError::NotBase64(_))
        ));
        assert_eq!(decode_key(&"A".repeat(4000)), Err(KeyError::TooLong));
    }

    #[test]
    fn tags_have_one_spelling() {
        let tag = [7u8; 32];
        let text = b64url(&tag);
        assert_eq!(text.len(), 43);
        assert_eq!(b64url_tag(&text), Some(tag));
        assert_eq!(b64url_tag(&format!("{text}=")), None);
        assert_eq!(b64url_tag(&text[..42]), None);
        // The last character carries 2 stray bits, which must be zero.
        let mut other = text.clone();
        other.pop();
        other.push('d');
        assert_eq!(b64url_tag(&other), None);
    }
}
