//! The project's own RFC 9421 verifier for the audit profile: what an
//! upstream checks on a request meshguard signed (docs/audit.md, "RFC 9421
//! signatures"). `meshguard audit verify-request` runs it; the real-Envoy
//! tests hold it against two stock verifiers (PyPI and npm
//! `http-message-signatures`) on every case.
//!
//! The member is chosen by its label, must carry the profile's tag, cover the
//! profile's components (and `content-digest` when the request has a body),
//! and use only the parameters RFC 9421 defines; its signature base is rebuilt
//! from the request as received (the parameters re-serialized, as RFC 9421
//! section 2.3 says), checked with the key its `keyid` names (the algorithm
//! is the key's, never the `alg` parameter's), and timed with `created` and
//! `expires`. The `content-digest` it covers must match the body.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshguard_core::audit::httpsig::{
    self, authority_component, path_component, query_component, CONTENT_DIGEST, SIGNATURE,
    SIGNATURE_INPUT,
};
use meshguard_core::audit::{KeyLookup, Keyring};
use serde::Deserialize;
use sfv::{BareItem, Dictionary, ListEntry, ListSerializer, Parser};

/// Tolerated clock difference for `created` in the future, as the stock
/// verifiers allow.
pub const CLOCK_SKEW_SECONDS: u64 = 5;

/// A request as an upstream received it (the JSON `verify-request` reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceivedRequest {
    pub method: String,
    /// The `Host` header (HTTP/1.1) or `:authority` (HTTP/2).
    pub authority: String,
    /// The request target: path and query.
    pub target: String,
    /// Every header line, repeats kept, in order.
    pub headers: Vec<(String, String)>,
    /// The body in base64 (absent: empty).
    #[serde(default)]
    pub body_base64: Option<String>,
}

impl ReceivedRequest {
    pub fn body(&self) -> anyhow::Result<Vec<u8>> {
        match &self.body_base64 {
            Some(text) => STANDARD
                .decode(text)
                .map_err(|e| anyhow::anyhow!("body_base64 is not base64: {e}")),
            None => Ok(Vec::new()),
        }
    }

    /// A header's field lines combined as RFC 9421 section 2.1 says: each
    /// trimmed, joined with `, `.
    fn field(&self, name: &str) -> Option<String> {
        let lines: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect();
        (!lines.is_empty()).then(|| lines.join(", "))
    }
}

/// What a verifier pins: the label, the tag, and the audit headers' names.
#[derive(Debug, Clone)]
pub struct Profile {
    pub label: String,
    pub tag: String,
    pub command_header: String,
    pub id_header: String,
}

impl Default for Profile {
    fn default() -> Self {
        use meshguard_core::audit::config::{DEFAULT_COMMAND_HEADER, DEFAULT_ID_HEADER};
        Self {
            label: httpsig::DEFAULT_LABEL.into(),
            tag: httpsig::DEFAULT_TAG.into(),
            command_header: DEFAULT_COMMAND_HEADER.into(),
            id_header: DEFAULT_ID_HEADER.into(),
        }
    }
}

/// What a valid signature asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub keyid: String,
    pub alg: &'static str,
    pub created: u64,
    pub expires: Option<u64>,
    pub components: Vec<String>,
    pub audit_id: String,
    pub command_sha256: String,
    pub body_covered: bool,
}

/// Why a request does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("no {0} header")]
    Missing(&'static str),
    #[error("{0} is not a Structured Field Dictionary: {1}")]
    NotDictionary(&'static str, String),
    #[error("no member labelled {0:?}")]
    NoMember(String),
    #[error("malformed signature member: {0}")]
    Malformed(String),
    #[error("the tag is {0:?}, not the profile's {1:?}")]
    WrongTag(Option<String>, String),
    #[error("the signature does not cover {0}")]
    NotCovered(String),
    #[error("no key is known for keyid {0:?}")]
    UnknownKey(String),
    #[error("alg {0:?} is not the algorithm of key {1:?} ({2})")]
    WrongAlgorithm(String, String, &'static str),
    #[error("created {0} is in the future")]
    Future(u64),
    #[error("expired at {0}")]
    Expired(u64),
    #[error("a covered component cannot be derived: {0}")]
    Component(String),
    #[error("bad signature: a covered component was altered, or another key signed")]
    BadSignature,
    #[error("content-digest does not match the body: {0}")]
    Digest(String),
}

/// Verifies meshguard's member of `request` at `now` (Unix seconds).
pub fn verify(
    request: &ReceivedRequest,
    body: &[u8],
    keys: &Keyring,
    profile: &Profile,
    now: u64,
) -> Result<Verified, Invalid> {
    let dictionary = |name: &'static str| -> Result<Dictionary, Invalid> {
        let value = request.field(name).ok_or(Invalid::Missing(name))?;
        Parser::new(&value)
            .parse::<Dictionary>()
            .map_err(|e| Invalid::NotDictionary(name, e.to_string()))
    };
    let inputs = dictionary(SIGNATURE_INPUT)?;
    let signatures = dictionary(SIGNATURE)?;
    let member = |d: &Dictionary| -> Option<ListEntry> {
        d.iter()
            .find(|(k, _)| k.as_str() == profile.label)
            .map(|(_, v)| v.clone())
    };
    let Some(ListEntry::InnerList(input)) = member(&inputs) else {
        return Err(Invalid::NoMember(profile.label.clone()));
    };
    let signature = match member(&signatures) {
        Some(ListEntry::Item(item)) => match item.bare_item {
            BareItem::ByteSequence(bytes) => bytes,
            _ => {
                return Err(Invalid::Malformed(
                    "Signature is not a byte sequence".into(),
                ))
            }
        },
        _ => return Err(Invalid::NoMember(profile.label.clone())),
    };

    // Parameters: only RFC 9421's, with their types.
    let (mut created, mut expires, mut keyid, mut alg, mut tag) = (None, None, None, None, None);
    for (key, value) in &input.params {
        let integer = || {
            value
                .as_integer()
                .and_then(|i| u64::try_from(i64::from(i)).ok())
                .ok_or_else(|| Invalid::Malformed(format!("{key} is not a non-negative integer")))
        };
        let string = || {
            value
                .as_string()
                .map(|s| s.as_str().to_owned())
                .ok_or_else(|| Invalid::Malformed(format!("{key} is not a string")))
        };
        match key.as_str() {
            "created" => created = Some(integer()?),
            "expires" => expires = Some(integer()?),
            "keyid" => keyid = Some(string()?),
            "alg" => alg = Some(string()?),
            "tag" => tag = Some(string()?),
            "nonce" => {
                string()?;
            }
            other => return Err(Invalid::Malformed(format!("unknown parameter {other:?}"))),
        }
    }
    if tag.as_deref() != Some(profile.tag.as_str()) {
        return Err(Invalid::WrongTag(tag, profile.tag.clone()));
    }
    let created = created.ok_or_else(|| Invalid::Malformed("no created parameter".into()))?;
    let keyid = keyid.ok_or_else(|| Invalid::Malformed("no keyid parameter".into()))?;

    // The covered components: strings without parameters, each once.
    let mut components: Vec<String> = Vec::new();
    for item in &input.items {
        let name = item
            .bare_item
            .as_string()
            .map(|s| s.as_str().to_owned())
            .ok_or_else(|| Invalid::Malformed("a component is not a string".into()))?;
        if !item.params.is_empty() {
            return Err(Invalid::Malformed(format!(
                "component {name:?} has parameters, which this profile does not use"
            )));
        }
        if components.contains(&name) {
            return Err(Invalid::Malformed(format!(
                "component {name:?} is listed twice"
            )));
        }
        components.push(name);
    }
    let mut required = vec![
        "@method".to_owned(),
        "@authority".to_owned(),
        "@path".to_owned(),
        "@query".to_owned(),
        profile.command_header.clone(),
        profile.id_header.clone(),
    ];
    if !body.is_empty() || request.field(CONTENT_DIGEST).is_some() {
        required.push(CONTENT_DIGEST.to_owned());
    }
    if let Some(missing) = required.iter().find(|r| !components.contains(r)) {
        return Err(Invalid::NotCovered(missing.clone()));
    }

    // The signature base, from the request as received.
    let mut values = Vec::with_capacity(components.len());
    for name in &components {
        let value = match name.as_str() {
            "@method" => request.method.clone(),
            "@authority" => authority_component(&request.authority),
            "@path" => path_component(&request.target).to_owned(),
            "@query" => query_component(&request.target),
            derived if derived.starts_with('@') => {
                return Err(Invalid::Component(format!(
                    "{derived} is not in the profile"
                )))
            }
            field => request
                .field(field)
                .ok_or_else(|| Invalid::Component(format!("no {field} header")))?,
        };
        if value.bytes().any(|b| b.is_ascii_control() || !b.is_ascii()) {
            return Err(Invalid::Component(format!(
                "{name} holds control or non-ASCII characters"
            )));
        }
        values.push((name.clone(), value));
    }
    let mut serializer = ListSerializer::new();
    serializer.members([&ListEntry::InnerList(input.clone())]);
    let params = serializer
        .finish()
        .ok_or_else(|| Invalid::Malformed("empty signature parameters".into()))?;
    let base = httpsig::signature_base(&values, &params);

    let key = keys
        .key(&keyid)
        .ok_or_else(|| Invalid::UnknownKey(keyid.clone()))?;
    let key_alg = key.algorithm().as_str();
    if let Some(alg) = &alg {
        if alg != key_alg {
            return Err(Invalid::WrongAlgorithm(alg.clone(), keyid, key_alg));
        }
    }
    if !key.verify(base.as_bytes(), &signature) {
        return Err(Invalid::BadSignature);
    }
    if created > now.saturating_add(CLOCK_SKEW_SECONDS) {
        return Err(Invalid::Future(created));
    }
    if let Some(expires) = expires.filter(|&e| now > e) {
        return Err(Invalid::Expired(expires));
    }
    let body_covered = components.iter().any(|c| c == CONTENT_DIGEST);
    if body_covered {
        check_digest(&request.field(CONTENT_DIGEST).unwrap_or_default(), body)?;
    }
    let value_of = |name: &str| {
        values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    Ok(Verified {
        keyid,
        alg: key_alg,
        created,
        expires,
        audit_id: value_of(&profile.id_header),
        command_sha256: value_of(&profile.command_header),
        components,
        body_covered,
    })
}

/// RFC 9530: every digest of the field (sha-256, sha-512) must match the body.
fn check_digest(value: &str, body: &[u8]) -> Result<(), Invalid> {
    use sha2::Digest as _;
    let digests = Parser::new(value)
        .parse::<Dictionary>()
        .map_err(|e| Invalid::Digest(format!("not a Dictionary: {e}")))?;
    if digests.is_empty() {
        return Err(Invalid::Digest("no digest".into()));
    }
    for (algorithm, entry) in &digests {
        let ListEntry::Item(item) = entry else {
            return Err(Invalid::Digest(format!(
                "{algorithm} is not a byte sequence"
            )));
        };
        let given = item
            .bare_item
            .as_byte_sequence()
            .ok_or_else(|| Invalid::Digest(format!("{algorithm} is not a byte sequence")))?;
        let actual: Vec<u8> = match algorithm.as_str() {
            "sha-256" => sha2::Sha256::digest(body).to_vec(),
            "sha-512" => sha2::Sha512::digest(body).to_vec(),
            other => return Err(Invalid::Digest(format!("unsupported algorithm {other:?}"))),
        };
        if given != actual.as_slice() {
            return Err(Invalid::Digest(format!("{algorithm} differs")));
        }
    }
    Ok(())
}
