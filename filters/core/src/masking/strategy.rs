//! What a masked value becomes.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Shortest hash key accepted, in bytes.
pub const MIN_HASH_KEY_LEN: usize = 16;
/// Characters of base64url kept from the HMAC (132 bits).
pub const HASH_CHARS: usize = 22;
/// Prefix of every hashed value.
pub const HASH_PREFIX: &str = "hash:";

/// A compiled strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Strategy {
    Redact(Box<str>),
    Partial { keep_last: usize },
    Hash,
    Remove,
}

/// The HMAC key, keyed once. `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct HashKey(Hmac<Sha256>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    /// `None` only if the MAC refuses the key length, which HMAC never does.
    pub(crate) fn new(key: &[u8]) -> Option<Self> {
        Hmac::<Sha256>::new_from_slice(key).ok().map(Self)
    }

    /// `hash:` + the first 22 characters of base64url(HMAC-SHA256(key, value)).
    pub(crate) fn write(&self, value: &str, out: &mut String) {
        let mut mac = self.0.clone();
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        out.push_str(HASH_PREFIX);
        out.push_str(encoded.get(..HASH_CHARS).unwrap_or(&encoded));
    }
}

/// Keeps the last `keep_last` characters and replaces every other letter or
/// digit with `*`; separators and punctuation stay. A value of at most
/// `keep_last` characters is masked entirely.
pub(crate) fn write_partial(value: &str, keep_last: usize, out: &mut String) {
    let total = value.chars().count();
    let masked_prefix = match total.checked_sub(keep_last) {
        Some(shown_from) if shown_from > 0 => shown_from,
        // At most `keep_last` characters: all masked.
        _ => total,
    };
    out.reserve(value.len());
    for (k, c) in value.chars().enumerate() {
        if k < masked_prefix && c.is_alphanumeric() {
            out.push('*');
        } else {
            out.push(c);
        }
    }
}

impl Strategy {
    /// Appends the masked form of `value` (nothing for `Remove`). `key` is
    /// always present for `Hash` in a compiled policy; without one the value
    /// is redacted rather than leaked.
    pub(crate) fn write(&self, value: &str, key: Option<&HashKey>, out: &mut String) {
        match self {
            Self::Redact(token) => out.push_str(token),
            Self::Partial { keep_last } => write_partial(value, *keep_last, out),
            Self::Hash => match key {
                Some(k) => k.write(value, out),
                None => out.push_str(super::config::DEFAULT_REDACT_TOKEN),
            },
            Self::Remove => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_keeps_the_last_characters_and_separators() {
        let cases = [
            ("4111 1111 1111 1111", 4, "**** **** **** 1111"),
            ("john.doe@example.com", 4, "****.***@*******.com"),
            ("123-45-6789", 4, "***-**-6789"),
            ("1234", 4, "****"),
            ("12", 4, "**"),
            ("a-b", 4, "*-*"),
            ("secret", 0, "******"),
            ("héllo wörld", 3, "***** **rld"),
            ("", 4, ""),
        ];
        for (value, keep, want) in cases {
            let mut out = String::new();
            write_partial(value, keep, &mut out);
            assert_eq!(out, want, "{value:?} keep {keep}");
        }
    }

    #[test]
    fn hashes_are_stable_keyed_and_22_characters() {
        let k1 = HashKey::new(b"0123456789abcdef").unwrap();
        let k2 = HashKey::new(b"fedcba9876543210").unwrap();
        let h = |k: &HashKey, v: &str| {
            let mut s = String::new();
            k.write(v, &mut s);
            s
        };
        let a = h(&k1, "alice@example.com");
        assert_eq!(a, h(&k1, "alice@example.com"));
        assert_ne!(a, h(&k1, "bob@example.com"));
        assert_ne!(a, h(&k2, "alice@example.com"));
        assert_eq!(a.len(), HASH_PREFIX.len() + HASH_CHARS);
        assert!(a.starts_with("hash:"));
        assert!(a[5..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(format!("{k1:?}"), "HashKey(..)");
    }
}
