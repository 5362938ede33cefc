//! Audit records and the per-VM hash chain that makes deletions, insertions,
//! edits and reordering detectable.
//!
//! A record's `mac` is its seal (base64url, unpadded): the HMAC-SHA256 or the
//! Ed25519 signature of the canonical JSON (RFC 8785) of the record without
//! its `mac` key, by the key its `kid` names; its `prev` is the lower-case hex
//! SHA-256 of the canonical JSON of the previous record of the same chain,
//! `mac` included (64 zeros for `seq` 0). Records are written one per line as
//! [`RECORD_PREFIX`] followed by that canonical JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::canon::canonical_path;
use super::keys::{b64url, MacKey, SealKey};
use crate::canonical::{hex, sha256_hex, write_canonical, write_str, MAX_SAFE_INTEGER};
use crate::request::RequestInfo;

/// Marks a record in a log line; everything after its first occurrence is the
/// record's JSON.
pub const RECORD_PREFIX: &str = "meshguard-audit-record: ";
/// The record format version this build writes and reads.
pub const RECORD_VERSION: u32 = 1;
/// `prev` of the first record of a chain.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Marks a record field cut by [`RecordFields::cap`]; `#` never appears in a
/// canonical path, so a cut path cannot be mistaken for a real one.
pub const TRUNCATED: &str = "#truncated";
/// Most bytes a record keeps of the host, the method, the peer and each decision.
pub const MAX_RECORD_HOST: usize = 256;
pub const MAX_RECORD_METHOD: usize = 64;
pub const MAX_RECORD_PEER: usize = 2048;
pub const MAX_RECORD_DECISION: usize = 256;
/// Most decisions a record keeps.
pub const MAX_RECORD_DECISIONS: usize = 8;
/// A bound on a capped record line without its path: the fixed fields and
/// keys (under 1 KiB: ids, hashes, numbers, the command name and key id the
/// config bounds), plus the capped text fields, each at most doubled by JSON
/// escaping (headers carry no control characters; `"` and `\` take 2 bytes).
pub const RECORD_BOUND_WITHOUT_PATH: usize = 2048
    + 2 * (MAX_RECORD_HOST + TRUNCATED.len())
    + 2 * (MAX_RECORD_METHOD + TRUNCATED.len())
    + 2 * (MAX_RECORD_PEER + TRUNCATED.len())
    + MAX_RECORD_DECISIONS * 2 * (MAX_RECORD_DECISION + TRUNCATED.len() + 64);

/// One audited request, as written to the log and sent to the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub v: u32,
    pub chain: String,
    pub seq: u64,
    pub prev: String,
    pub id: String,
    pub ts_ms: u64,
    pub peer: Option<String>,
    pub method: String,
    /// Canonical path, without the query (which may carry secrets; the command
    /// hash covers it).
    pub path: String,
    pub host: String,
    pub command: String,
    pub command_sha256: String,
    pub status: Option<u16>,
    pub duration_ms: Option<u64>,
    pub decisions: Map<String, Value>,
    pub config_fingerprint: Option<String>,
    pub kid: String,
    pub mac: String,
}

/// What the adapter knows about a request; [`Chain::seal`] adds the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFields {
    pub id: String,
    pub ts_ms: u64,
    pub peer: Option<String>,
    pub method: String,
    pub path: String,
    pub host: String,
    pub command: String,
    pub command_sha256: [u8; 32],
    pub status: Option<u16>,
    pub duration_ms: Option<u64>,
    /// Other meshguard filters' decisions, e.g. `{"identity": "allowed"}`.
    pub decisions: Map<String, Value>,
    pub config_fingerprint: Option<String>,
}

impl RecordFields {
    /// Fields for `request`: the method upper-cased, the path in canonical form
    /// without its query, the host lower-cased. The rest starts empty.
    pub fn new(
        id: impl Into<String>,
        ts_ms: u64,
        request: &RequestInfo<'_>,
        command: impl Into<String>,
        command_sha256: [u8; 32],
    ) -> Self {
        Self {
            id: id.into(),
            ts_ms,
            peer: None,
            method: request.method.to_ascii_uppercase(),
            path: canonical_path(request.path),
            host: request.host.to_ascii_lowercase(),
            command: command.into(),
            command_sha256,
            status: None,
            duration_ms: None,
            decisions: Map::new(),
            config_fingerprint: None,
        }
    }
}

impl RecordFields {
    /// Cuts the request-controlled fields to their caps (the path to
    /// `max_path` bytes), each cut field ending in [`TRUNCATED`], so that a
    /// record's size is bounded (`AuditPolicy::record_bound`) and the outbox
    /// can reserve room for it. The command hash still covers the whole request.
    pub fn cap(mut self, max_path: usize) -> Self {
        cut(&mut self.path, max_path);
        cut(&mut self.host, MAX_RECORD_HOST);
        cut(&mut self.method, MAX_RECORD_METHOD);
        if let Some(peer) = &mut self.peer {
            cut(peer, MAX_RECORD_PEER);
        }
        let decisions = std::mem::take(&mut self.decisions);
        for (key, value) in decisions.into_iter().take(MAX_RECORD_DECISIONS) {
            let mut key = key;
            cut(&mut key, 64);
            let value = match value {
                Value::String(mut s) => {
                    cut(&mut s, MAX_RECORD_DECISION);
                    Value::String(s)
                }
                other => {
                    let mut s = other.to_string();
                    cut(&mut s, MAX_RECORD_DECISION);
                    Value::String(s)
                }
            };
            self.decisions.insert(key, value);
        }
        self
    }
}

/// Keeps at most `max` bytes of `text` (on a character boundary), marked.
fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    // 0 is always a boundary.
    let end = (0..=max)
        .rev()
        .find(|&end| text.is_char_boundary(end))
        .unwrap_or(0);
    text.truncate(end);
    text.push_str(TRUNCATED);
}

/// Why a record could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the record's decisions are nested too deeply to canonicalize")]
    TooDeep,
    #[error("the HMAC key was refused")]
    BadKey,
    #[error("chain {0:?} has used every sequence number")]
    Exhausted(String),
    #[error(
        "the record's {0} is beyond 2^53, which canonical JSON (RFC 8785) cannot write exactly"
    )]
    OutOfRange(&'static str),
}

fn opt_string(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

fn opt_u64(v: Option<u64>) -> Value {
    v.map_or(Value::Null, Value::from)
}

impl Record {
    /// The record as a JSON object, `mac` included or not.
    pub fn to_value(&self, with_mac: bool) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        put("v", Value::from(self.v));
        put("chain", Value::from(self.chain.as_str()));
        put("seq", Value::from(self.seq));
        put("prev", Value::from(self.prev.as_str()));
        put("id", Value::from(self.id.as_str()));
        put("ts_ms", Value::from(self.ts_ms));
        put("peer", opt_string(&self.peer));
        put("method", Value::from(self.method.as_str()));
        put("path", Value::from(self.path.as_str()));
        put("host", Value::from(self.host.as_str()));
        put("command", Value::from(self.command.as_str()));
        put("command_sha256", Value::from(self.command_sha256.as_str()));
        put("status", opt_u64(self.status.map(u64::from)));
        put("duration_ms", opt_u64(self.duration_ms));
        put("decisions", Value::Object(self.decisions.clone()));
        put("config_fingerprint", opt_string(&self.config_fingerprint));
        put("kid", Value::from(self.kid.as_str()));
        if with_mac {
            put("mac", Value::from(self.mac.as_str()));
        }
        Value::Object(m)
    }

    /// Canonical JSON of the record, `mac` included or not: the same bytes
    /// as the canonical form of [`Record::to_value`], written field by field
    /// (a record's keys are fixed: they are written in sorted order here).
    pub fn canonical_bytes(&self, with_mac: bool) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(512);
        let key = |name: &str, out: &mut Vec<u8>| {
            out.push(if name == "chain" { b'{' } else { b',' });
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        let opt_str = |v: &Option<String>, out: &mut Vec<u8>| match v {
            Some(v) => write_str(v, out),
            None => out.extend_from_slice(b"null"),
        };
        let num = |n: u64, out: &mut Vec<u8>| out.extend_from_slice(n.to_string().as_bytes());
        let opt_num = |n: Option<u64>, out: &mut Vec<u8>| match n {
            Some(n) => num(n, out),
            None => out.extend_from_slice(b"null"),
        };
        // Sorted by the keys' bytes, as the canonical form sorts them.
        key("chain", &mut out);
        write_str(&self.chain, &mut out);
        key("command", &mut out);
        write_str(&self.command, &mut out);
        key("command_sha256", &mut out);
        write_str(&self.command_sha256, &mut out);
        key("config_fingerprint", &mut out);
        opt_str(&self.config_fingerprint, &mut out);
        key("decisions", &mut out);
        // One level below the record, as in the record's canonical form.
        write_canonical(&Value::Object(self.decisions.clone()), &mut out, 1)
            .map_err(|_| RecordError::TooDeep)?;
        key("duration_ms", &mut out);
        opt_num(self.duration_ms, &mut out);
        key("host", &mut out);
        write_str(&self.host, &mut out);
        key("id", &mut out);
        write_str(&self.id, &mut out);
        key("kid", &mut out);
        write_str(&self.kid, &mut out);
        if with_mac {
            key("mac", &mut out);
            write_str(&self.mac, &mut out);
        }
        key("method", &mut out);
        write_str(&self.method, &mut out);
        key("path", &mut out);
        write_str(&self.path, &mut out);
        key("peer", &mut out);
        opt_str(&self.peer, &mut out);
        key("prev", &mut out);
        write_str(&self.prev, &mut out);
        key("seq", &mut out);
        num(self.seq, &mut out);
        key("status", &mut out);
        opt_num(self.status.map(u64::from), &mut out);
        key("ts_ms", &mut out);
        num(self.ts_ms, &mut out);
        key("v", &mut out);
        num(u64::from(self.v), &mut out);
        out.push(b'}');
        Ok(out)
    }

    /// What the next record's `prev` must be.
    pub fn chain_hash(&self) -> Result<String, RecordError> {
        Ok(sha256_hex(&self.canonical_bytes(true)?))
    }

    /// The log line: [`RECORD_PREFIX`] and the canonical JSON. A record too
    /// deep to canonicalize (only possible when built by hand, never from
    /// [`Chain::seal`] or a parsed line) is written in serde_json's compact form.
    pub fn to_line(&self) -> String {
        let json = match self.canonical_bytes(true) {
            Ok(bytes) => String::from_utf8(bytes).unwrap_or_default(),
            Err(_) => self.to_value(true).to_string(),
        };
        format!("{RECORD_PREFIX}{json}")
    }
}

/// One VM's sequence of records. Each VM (worker thread) keeps its own chain
/// with a unique id; `seq` counts from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    id: String,
    next_seq: u64,
    prev_hash: String,
}

impl Chain {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            next_seq: 0,
            prev_hash: GENESIS_PREV.into(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `seq` the next sealed record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The `prev` the next sealed record gets.
    pub fn prev_hash(&self) -> &str {
        &self.prev_hash
    }

    /// Turns `fields` into the chain's next record, signed with the HMAC
    /// `key` under the key id `kid`, and advances the chain. On error the
    /// chain is unchanged.
    pub fn seal(
        &mut self,
        fields: RecordFields,
        key: &[u8],
        kid: &str,
    ) -> Result<Record, RecordError> {
        let key = MacKey::new(key).ok_or(RecordError::BadKey)?;
        self.seal_line(fields, &SealKey::Hmac(key), kid)
            .map(|(record, _)| record)
    }

    /// As [`Chain::seal`], with the proxy's key (HMAC, its schedule done, or
    /// Ed25519), and also returns the record's log line (its canonical JSON
    /// is computed once, for the chain and the line).
    pub fn seal_line(
        &mut self,
        fields: RecordFields,
        key: &SealKey,
        kid: &str,
    ) -> Result<(Record, String), RecordError> {
        // Every number of a record stays within what RFC 8785 writes exactly.
        let next_seq = self
            .next_seq
            .checked_add(1)
            .filter(|&n| n <= MAX_SAFE_INTEGER)
            .ok_or_else(|| RecordError::Exhausted(self.id.clone()))?;
        if fields.ts_ms > MAX_SAFE_INTEGER {
            return Err(RecordError::OutOfRange("ts_ms"));
        }
        if fields.duration_ms.is_some_and(|d| d > MAX_SAFE_INTEGER) {
            return Err(RecordError::OutOfRange("duration_ms"));
        }
        let mut record = Record {
            v: RECORD_VERSION,
            chain: self.id.clone(),
            seq: self.next_seq,
            prev: self.prev_hash.clone(),
            id: fields.id,
            ts_ms: fields.ts_ms,
            peer: fields.peer,
            method: fields.method,
            path: fields.path,
            host: fields.host,
            command: fields.command,
            command_sha256: hex(&fields.command_sha256),
            status: fields.status,
            duration_ms: fields.duration_ms,
            decisions: fields.decisions,
            config_fingerprint: fields.config_fingerprint,
            kid: kid.into(),
            mac: String::new(),
        };
        let unsigned = record.canonical_bytes(false)?;
        record.mac = b64url(key.seal(&unsigned).as_bytes());
        let signed = record.canonical_bytes(true)?;
        self.prev_hash = sha256_hex(&signed);
        self.next_seq = next_seq;
        let mut line = String::with_capacity(RECORD_PREFIX.len().saturating_add(signed.len()));
        line.push_str(RECORD_PREFIX);
        line.push_str(&String::from_utf8_lossy(&signed));
        Ok((record, line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditPolicy;

    #[test]
    fn capped_records_stay_within_the_policy_bound() {
        let policy = AuditPolicy::from_json(br#"{"max_record_path_bytes": 16}"#).unwrap();
        let path = format!("/{}", "a".repeat(5000));
        let host = "h\"".repeat(3000);
        let method = "M".repeat(3000);
        let request = RequestInfo {
            path: &path,
            method: &method,
            host: &host,
        };
        let mut fields = RecordFields::new("id", 1, &request, "c", [0; 32]).cap(16);
        assert_eq!(fields.path, format!("/{}{TRUNCATED}", "a".repeat(15)));
        assert!(fields.host.ends_with(TRUNCATED) && fields.method.ends_with(TRUNCATED));
        fields.peer = Some("é\\".repeat(5000));
        for i in 0..20 {
            fields
                .decisions
                .insert(format!("f{i}"), Value::String("\"".repeat(9000)));
        }
        let fields = fields.cap(16);
        assert_eq!(fields.decisions.len(), MAX_RECORD_DECISIONS);
        let record = Chain::new("c".repeat(16))
            .seal(fields, b"k", "kid")
            .unwrap();
        let len = record.to_line().len() - RECORD_PREFIX.len();
        assert!(
            len <= policy.record_bound(),
            "{len} > {}",
            policy.record_bound()
        );
    }
}
