//! The signed audit header sent upstream with each request:
//!
//! ```text
//! v=1;kid=<key id>;id=<audit id>;ts=<unix ms>;peer=<SPIFFE ID or ->;cfg=<fingerprint or ->;cmd=<hex sha256>;sig=<base64url HMAC-SHA256>
//! ```
//!
//! The MAC input is `"meshguard-audit-v1\n"` followed by the values of every
//! field before `sig`, in that order, joined by `"\n"` (no trailing newline).
//! See `docs/audit.md` for a worked example.

use super::canon::parse_digest_hex;
use super::keys::{b64url, b64url_tag, AnyKid, KeyLookup, MacKey, VerifyKey};
use super::policy::{is_valid_key_id, MAX_KEY_ID_LEN};
use crate::canonical::hex;

/// The header format version this build writes and reads.
pub const HEADER_VERSION: &str = "1";
/// First line of the MAC input.
pub const HEADER_MAC_DOMAIN: &str = "meshguard-audit-v1";
/// Longest header value accepted by the verifier.
pub const MAX_HEADER_LEN: usize = 4096;
/// Longest audit id.
pub const MAX_ID_LEN: usize = 256;
/// Longest peer (the SPIFFE limit).
pub const MAX_PEER_LEN: usize = 2048;
/// Longest configuration fingerprint.
pub const MAX_CFG_LEN: usize = 128;
/// Written for an absent peer or fingerprint.
pub const ABSENT: &str = "-";

const FIELDS: [&str; 8] = ["v", "kid", "id", "ts", "peer", "cfg", "cmd", "sig"];

/// What the audit header asserts about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditStamp {
    pub key_id: String,
    /// The audit id shared by the header and the request's record.
    pub id: String,
    /// Host time when the request was seen, in Unix milliseconds.
    pub ts_ms: u64,
    /// The caller's SPIFFE ID, if it had one.
    pub peer: Option<String>,
    pub config_fingerprint: Option<String>,
    pub command_sha256: [u8; 32],
}

/// Why a stamp cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    #[error("audit header field `{field}`: {problem}")]
    BadField {
        field: &'static str,
        problem: String,
    },
    #[error("the HMAC key was refused")]
    BadKey,
}

/// Why a header did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed audit header: {0}")]
    Malformed(String),
    #[error("unknown audit header version v={0:?} (this build reads v=1)")]
    UnknownVersion(String),
    #[error("no key is known for key id {0:?}")]
    UnknownKeyId(String),
    #[error("bad signature: the header was altered, or signed with another key")]
    BadSignature,
    #[error(
        "key id {0:?} names an Ed25519 public key: v1 headers are HMAC only (Ed25519 signs RFC 9421 headers)"
    )]
    NotHmac(String),
}

/// Whether `value` may be a header field value: 1 to `max` bytes of visible
/// ASCII other than `;`, `=` and `,`.
pub fn is_header_token(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b'=' | b','))
}

/// Replaces every byte that may not appear in a header field value with `_`
/// and truncates to `max` bytes: for building chain ids from host-provided
/// names (node id, plugin name...).
pub fn sanitize_token(text: &str, max: usize) -> String {
    let mut out: String = text
        .bytes()
        .take(max)
        .map(|b| {
            if b.is_ascii_graphic() && !matches!(b, b';' | b'=' | b',') {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The audit id of the `seq`-th request seen by the VM whose chain is
/// `chain_id`: `"<chain_id>-<seq>"`.
pub fn audit_id(chain_id: &str, seq: u64) -> String {
    format!("{chain_id}-{seq}")
}

fn check_token(
    field: &'static str,
    value: &str,
    max: usize,
    may_be_absent_marker: bool,
) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value.len() > max {
        return Err(format!("is longer than {max} bytes"));
    }
    if !is_header_token(value, max) {
        return Err(format!(
            "{} contains a character other than visible ASCII, or one of `;` `=` `,`",
            excerpt(value)
        ));
    }
    if value == ABSENT && !may_be_absent_marker {
        return Err(format!(
            "{ABSENT:?} is reserved for \"none\" in {field}; use None"
        ));
    }
    Ok(())
}

impl AuditStamp {
    /// Checks every field can be written unambiguously.
    pub fn check(&self) -> Result<(), StampError> {
        let bad = |field: &'static str| move |problem| StampError::BadField { field, problem };
        if !is_valid_key_id(&self.key_id) {
            return Err(StampError::BadField {
                field: "kid",
                problem: format!(
                    "{} is not a key id (letters, digits, `.`, `_`, `-`; 1 to {MAX_KEY_ID_LEN} bytes)",
                    excerpt(&self.key_id)
                ),
            });
        }
        check_token("id", &self.id, MAX_ID_LEN, true).map_err(bad("id"))?;
        if let Some(peer) = &self.peer {
            check_token("peer", peer, MAX_PEER_LEN, false).map_err(bad("peer"))?;
        }
        if let Some(cfg) = &self.config_fingerprint {
            check_token("cfg", cfg, MAX_CFG_LEN, false).map_err(bad("cfg"))?;
        }
        Ok(())
    }

    /// The field values before `sig`, in header order.
    fn values(&self) -> [String; 7] {
        [
            HEADER_VERSION.into(),
            self.key_id.clone(),
            self.id.clone(),
            self.ts_ms.to_string(),
            self.peer.clone().unwrap_or_else(|| ABSENT.into()),
            self.config_fingerprint
                .clone()
                .unwrap_or_else(|| ABSENT.into()),
            hex(&self.command_sha256),
        ]
    }

    /// The exact bytes the signature covers.
    pub fn mac_input(&self) -> String {
        let mut s = String::from(HEADER_MAC_DOMAIN);
        for value in self.values() {
            s.push('\n');
            s.push_str(&value);
        }
        s
    }

    /// The header value, signed with `key`.
    pub fn sign(&self, key: &[u8]) -> Result<String, StampError> {
        self.sign_with(&MacKey::new(key).ok_or(StampError::BadKey)?)
    }

    /// The header value, signed with a key whose schedule is done.
    pub fn sign_with(&self, key: &MacKey) -> Result<String, StampError> {
        self.check()?;
        let tag = key.tag(self.mac_input().as_bytes());
        let mut out = String::with_capacity(256);
        for (name, value) in FIELDS.iter().zip(self.values()) {
            out.push_str(name);
            out.push('=');
            out.push_str(&value);
            out.push(';');
        }
        out.push_str("sig=");
        out.push_str(&b64url(&tag));
        Ok(out)
    }
}

/// Verifies a header value signed with `key` (whatever its `kid`) and returns
/// what it asserts.
pub fn verify_header(value: &str, key: &[u8]) -> Result<AuditStamp, VerifyError> {
    verify_header_with_keys(value, &AnyKid(key))
}

/// Verifies a header value with the key its `kid` names.
pub fn verify_header_with_keys<K: KeyLookup + ?Sized>(
    value: &str,
    keys: &K,
) -> Result<AuditStamp, VerifyError> {
    let (stamp, tag) = parse_header(value)?;
    let key = match keys.key(&stamp.key_id) {
        Some(key @ VerifyKey::Hmac(_)) => key,
        Some(VerifyKey::Ed25519(_)) => return Err(VerifyError::NotHmac(stamp.key_id.clone())),
        None => return Err(VerifyError::UnknownKeyId(stamp.key_id.clone())),
    };
    if key.verify(stamp.mac_input().as_bytes(), &tag) {
        Ok(stamp)
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// Parses a header value without checking its signature: only the canonical
/// spelling [`AuditStamp::sign`] writes is accepted.
pub fn parse_header(value: &str) -> Result<(AuditStamp, [u8; 32]), VerifyError> {
    let malformed = |m: String| VerifyError::Malformed(m);
    let value = value.trim_matches([' ', '\t']);
    if value.len() > MAX_HEADER_LEN {
        return Err(malformed(format!(
            "{} bytes, over the limit of {MAX_HEADER_LEN}",
            value.len()
        )));
    }
    if value.is_empty() {
        return Err(malformed("the header is empty".into()));
    }
    let fields: Vec<&str> = value.split(';').collect();
    // The version decides the layout, so it is read first.
    match fields.first().and_then(|f| f.strip_prefix("v=")) {
        Some(HEADER_VERSION) => {}
        Some(other) => {
            return Err(VerifyError::UnknownVersion(
                other.chars().take(64).collect(),
            ))
        }
        None => {
            return Err(malformed(format!(
                "it must start with `v=`, not {}",
                excerpt(fields.first().copied().unwrap_or(""))
            )))
        }
    }
    if let Some(extra) = fields.get(FIELDS.len()) {
        return Err(malformed(format!(
            "unexpected {} after `sig`",
            excerpt(extra)
        )));
    }
    let mut values: [&str; 8] = [""; 8];
    let mut given = fields.iter();
    for (n, (slot, expected)) in (1usize..).zip(values.iter_mut().zip(FIELDS)) {
        let Some(field) = given.next() else {
            return Err(malformed(format!("the field `{expected}` is missing")));
        };
        match field.split_once('=') {
            Some((name, v)) if name == expected => *slot = v,
            Some((name, _)) => {
                return Err(malformed(format!(
                    "field {n} is {}, expected `{expected}` (fields: v;kid;id;ts;peer;cfg;cmd;sig)",
                    excerpt(name)
                )))
            }
            None => {
                return Err(malformed(format!(
                    "field {n} ({}) has no `=`",
                    excerpt(field)
                )))
            }
        }
    }
    let [_, kid, id, ts, peer, cfg, cmd, sig] = values;
    let optional = |v: &str| (v != ABSENT).then(|| v.to_owned());
    let stamp = AuditStamp {
        key_id: kid.into(),
        id: id.into(),
        ts_ms: parse_decimal(ts).ok_or_else(|| {
            malformed(format!(
                "ts {} is not a decimal number of milliseconds",
                excerpt(ts)
            ))
        })?,
        peer: optional(peer),
        config_fingerprint: optional(cfg),
        command_sha256: parse_digest_hex(cmd).ok_or_else(|| {
            malformed(format!(
                "cmd {} is not 64 lower-case hex digits",
                excerpt(cmd)
            ))
        })?,
    };
    stamp.check().map_err(|e| malformed(e.to_string()))?;
    let tag = b64url_tag(sig).ok_or_else(|| {
        malformed(format!(
            "sig {} is not 43 characters of unpadded base64url (a 32-byte HMAC-SHA256)",
            excerpt(sig)
        ))
    })?;
    Ok((stamp, tag))
}

/// A canonical decimal u64: digits only, no leading zero (except `0`).
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

/// A value quoted for an error message, cut at 64 characters.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((i, _)) => format!("{:?}...", text.get(..i).unwrap_or(text)),
        None => format!("{text:?}"),
    }
}
