//! Audit keys: decoding the proxy's key from the VM environment (an HMAC
//! secret, or an Ed25519 private key in PKCS#8), looking verification keys up
//! by key id (rotation: secrets or public keys), and the primitives that
//! sign headers and seal records (HMAC-SHA256, Ed25519).

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use base64::engine::general_purpose::{
    STANDARD, STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD, URL_SAFE_PAD_INDIFFERENT,
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
    #[error(
        "this is an Ed25519 private key: set `algorithm` to \"ed25519\", or give an HMAC secret"
    )]
    PrivateKeyAsSecret,
    #[error(
        "not an Ed25519 private key: expected PKCS#8 (`-----BEGIN PRIVATE KEY-----`, as \
         `meshguard keygen --for audit` and `openssl genpkey -algorithm ed25519` write it), \
         or its DER in base64"
    )]
    NotPkcs8,
    #[error(
        "not an Ed25519 public key: expected `-----BEGIN PUBLIC KEY-----` (SPKI), its DER \
         in base64, or the 32-byte key in base64"
    )]
    NotPublicKey,
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
/// Implemented for [`Keyring`] and for the usual maps from key id to HMAC
/// secret bytes.
pub trait KeyLookup {
    fn key(&self, kid: &str) -> Option<VerifyKey<'_>>;
}

impl<S: BuildHasher> KeyLookup for std::collections::HashMap<String, Vec<u8>, S> {
    fn key(&self, kid: &str) -> Option<VerifyKey<'_>> {
        self.get(kid).map(|k| VerifyKey::Hmac(k))
    }
}

impl<S: BuildHasher> KeyLookup for hashbrown::HashMap<String, Vec<u8>, S> {
    fn key(&self, kid: &str) -> Option<VerifyKey<'_>> {
        self.get(kid).map(|k| VerifyKey::Hmac(k))
    }
}

impl KeyLookup for BTreeMap<String, Vec<u8>> {
    fn key(&self, kid: &str) -> Option<VerifyKey<'_>> {
        self.get(kid).map(|k| VerifyKey::Hmac(k))
    }
}

/// A single HMAC secret, whatever the key id.
#[derive(Debug, Clone, Copy)]
pub struct AnyKid<'a>(pub &'a [u8]);

impl KeyLookup for AnyKid<'_> {
    fn key(&self, _kid: &str) -> Option<VerifyKey<'_>> {
        Some(VerifyKey::Hmac(self.0))
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
    b64url_exact(text).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
}

/// Strict base64url-without-padding decoding of a seal: 32 bytes (HMAC) or
/// 64 (Ed25519), canonical spelling only.
pub(crate) fn b64url_seal(text: &str) -> Option<Vec<u8>> {
    b64url_exact(text).filter(|bytes| matches!(bytes.len(), 32 | 64))
}

fn b64url_exact(text: &str) -> Option<Vec<u8>> {
    if !matches!(text.len(), 43 | 86) {
        return None;
    }
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// What signs the headers sent upstream and seals the records (the
/// `algorithm` config key).
// Read from a string: a derived enum costs the module kilobytes of serde code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Algorithm {
    /// A secret shared with every verifier (RFC 9421 `hmac-sha256`).
    #[default]
    HmacSha256,
    /// A private key in the proxy only; verifiers hold its public key
    /// (RFC 9421 `ed25519`).
    Ed25519,
}

impl TryFrom<String> for Algorithm {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "hmac-sha256" => Ok(Self::HmacSha256),
            "ed25519" => Ok(Self::Ed25519),
            other => Err(format!(
                "unknown algorithm {other:?}: expected \"hmac-sha256\" or \"ed25519\""
            )),
        }
    }
}

impl Algorithm {
    /// The RFC 9421 algorithm name (the `alg` parameter).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::Ed25519 => "ed25519",
        }
    }
}

/// The proxy's audit key, ready to sign: an HMAC secret (its schedule done)
/// or an Ed25519 private key.
#[derive(Clone)]
pub enum SealKey {
    Hmac(MacKey),
    Ed25519(Box<SigningKey>),
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", self.algorithm().as_str())
    }
}

/// A signature or MAC: 32 bytes (HMAC-SHA256) or 64 (Ed25519).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    Hmac([u8; 32]),
    Ed25519([u8; 64]),
}

impl Seal {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Hmac(tag) => tag,
            Self::Ed25519(signature) => signature,
        }
    }
}

impl SealKey {
    /// The key the proxy reads from its environment variable's `text`, for
    /// `algorithm`: base64 of at least 32 bytes for HMAC (an Ed25519 private
    /// key is refused there: it must never double as a shared secret), a
    /// PKCS#8 Ed25519 private key for Ed25519.
    pub fn from_env_text(text: &str, algorithm: Algorithm) -> Result<Self, KeyError> {
        match algorithm {
            Algorithm::HmacSha256 => {
                if parse_private_key(text).is_ok() {
                    return Err(KeyError::PrivateKeyAsSecret);
                }
                let secret = decode_key(text)?;
                MacKey::new(&secret).map(Self::Hmac).ok_or(KeyError::Empty)
            }
            Algorithm::Ed25519 => {
                if text.trim().is_empty() {
                    return Err(KeyError::Empty);
                }
                parse_private_key(text).map(|k| Self::Ed25519(Box::new(k)))
            }
        }
    }

    /// A key of `algorithm` that stands for the proxy's when a config is
    /// validated away from the proxy (it never signs anything that leaves).
    pub fn placeholder(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::HmacSha256 => match MacKey::new(&[0; MIN_KEY_BYTES]) {
                Some(key) => Self::Hmac(key),
                None => Self::Ed25519(Box::new(SigningKey::from_bytes(&[0; 32]))),
            },
            Algorithm::Ed25519 => Self::Ed25519(Box::new(SigningKey::from_bytes(&[0; 32]))),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hmac(_) => Algorithm::HmacSha256,
            Self::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// The HMAC key, for the v1 header (HMAC only).
    pub fn mac_key(&self) -> Option<&MacKey> {
        match self {
            Self::Hmac(key) => Some(key),
            Self::Ed25519(_) => None,
        }
    }

    /// The public key verifiers hold, for an Ed25519 key.
    pub fn public_key(&self) -> Option<VerifyingKey> {
        match self {
            Self::Hmac(_) => None,
            Self::Ed25519(key) => Some(key.verifying_key()),
        }
    }

    /// Signs (or MACs) `data`.
    pub fn seal(&self, data: &[u8]) -> Seal {
        match self {
            Self::Hmac(key) => Seal::Hmac(key.tag(data)),
            Self::Ed25519(key) => Seal::Ed25519(key.sign(data).to_bytes()),
        }
    }
}

/// A key that checks seals: an HMAC secret or an Ed25519 public key. The
/// algorithm comes from the key the verifier holds for a key id, never from
/// what is being verified.
#[derive(Debug, Clone, Copy)]
pub enum VerifyKey<'a> {
    Hmac(&'a [u8]),
    Ed25519(&'a VerifyingKey),
}

impl VerifyKey<'_> {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hmac(_) => Algorithm::HmacSha256,
            Self::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// Whether `seal` is this key's seal of `data` (constant time for HMAC;
    /// Ed25519's strict verification, which refuses malleable signatures).
    pub fn verify(&self, data: &[u8], seal: &[u8]) -> bool {
        match self {
            Self::Hmac(key) => hmac_verify(key, data, seal),
            Self::Ed25519(key) => ed25519_dalek::Signature::from_slice(seal)
                .is_ok_and(|signature| key.verify_strict(data, &signature).is_ok()),
        }
    }
}

/// A verifier's keys by key id: HMAC secrets and Ed25519 public keys, for
/// the keys of a rotation.
#[derive(Debug, Clone, Default)]
pub struct Keyring(BTreeMap<String, KnownKey>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum KnownKey {
    Hmac(Vec<u8>),
    Ed25519(VerifyingKey),
}

/// Why a key cannot join a [`Keyring`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key id {0:?} is given twice, with different keys")]
pub struct ConflictingKey(pub String);

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_secret(&mut self, kid: &str, secret: Vec<u8>) -> Result<(), ConflictingKey> {
        self.add(kid, KnownKey::Hmac(secret))
    }

    pub fn add_public(&mut self, kid: &str, key: VerifyingKey) -> Result<(), ConflictingKey> {
        self.add(kid, KnownKey::Ed25519(key))
    }

    fn add(&mut self, kid: &str, key: KnownKey) -> Result<(), ConflictingKey> {
        match self.0.get(kid) {
            Some(known) if *known != key => Err(ConflictingKey(kid.to_owned())),
            _ => {
                self.0.insert(kid.to_owned(), key);
                Ok(())
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl KeyLookup for Keyring {
    fn key(&self, kid: &str) -> Option<VerifyKey<'_>> {
        self.0.get(kid).map(|k| match k {
            KnownKey::Hmac(secret) => VerifyKey::Hmac(secret),
            KnownKey::Ed25519(public) => VerifyKey::Ed25519(public),
        })
    }
}

/// The DER of an Ed25519 PKCS#8 v1 private key (RFC 8410) before its seed:
/// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The DER of an Ed25519 SubjectPublicKeyInfo (RFC 8410) before its key.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER inside a PEM block labelled `label`, or the base64 DER itself.
fn pem_or_base64(text: &str, label: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let body = match text.strip_prefix(&format!("-----BEGIN {label}-----")) {
        Some(rest) => rest.strip_suffix(&format!("-----END {label}-----"))?,
        None => text,
    };
    let compact: String = body.split_ascii_whitespace().collect();
    if compact.len() > MAX_KEY_TEXT {
        return None;
    }
    STANDARD_PAD_INDIFFERENT.decode(compact).ok()
}

/// An Ed25519 private key in PKCS#8 (PEM, or its DER in base64).
pub fn parse_private_key(text: &str) -> Result<SigningKey, KeyError> {
    let der = pem_or_base64(text, "PRIVATE KEY").ok_or(KeyError::NotPkcs8)?;
    let seed = der
        .strip_prefix(&PKCS8_ED25519_PREFIX)
        .and_then(|seed| <[u8; 32]>::try_from(seed).ok())
        .ok_or(KeyError::NotPkcs8)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// An Ed25519 public key: SPKI PEM (`-----BEGIN PUBLIC KEY-----`), its DER in
/// base64, or the raw 32 bytes in base64 (as `meshguard keygen` prints it).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let der = pem_or_base64(text, "PUBLIC KEY").ok_or(KeyError::NotPublicKey)?;
    let raw = der.strip_prefix(&SPKI_ED25519_PREFIX).unwrap_or(&der);
    let raw = <[u8; 32]>::try_from(raw).map_err(|_| KeyError::NotPublicKey)?;
    VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::NotPublicKey)
}

/// PEM text of a DER document, lines of 64 characters.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An Ed25519 private key as PKCS#8 PEM (what OpenSSL writes).
pub fn private_key_pem(key: &SigningKey) -> String {
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    pem("PRIVATE KEY", &der)
}

/// An Ed25519 public key as SPKI PEM (what OpenSSL writes).
pub fn public_key_pem(key: &VerifyingKey) -> String {
    let mut der = SPKI_ED25519_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    pem("PUBLIC KEY", &der)
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
