//! The command hash: SHA-256 over a framed encoding of the command's parts.
//!
//! ```text
//! "meshguard-command-v1\n"
//! for each part, in the configured order:
//!     <part name> ":" <decimal byte length of the part bytes> ":" <part bytes> "\n"
//! ```
//!
//! Part names and bytes: `method` (canonical method), `path` (canonical path),
//! `query` (canonical query), `body` (the lower-case hex SHA-256 of the raw
//! body, so a body can be hashed as it streams, and its framed length is always
//! 64), `json:<pointer>` (canonical JSON of the value at the pointer, or
//! `<absent>`). See `docs/audit.md`.

use sha2::{Digest, Sha256};

use super::canon::{canonical_method, canonical_path, canonical_query};
use super::json::{self, JsonValue};
use crate::canonical::hex;
use crate::request::RequestInfo;

/// First line of every hash input; a new framing gets a new version.
pub const COMMAND_PREAMBLE: &[u8] = b"meshguard-command-v1\n";
/// The bytes of a `json_pointer` part whose pointer matches nothing. Never
/// valid JSON, so it cannot collide with a value.
pub const ABSENT_MARKER: &[u8] = b"<absent>";

/// One part of a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    Method,
    Path,
    Query,
    Body,
    /// An RFC 6901 pointer into the JSON body, validated when compiled.
    JsonPointer(Box<str>),
}

impl Part {
    /// The name framed into the hash input (`json:/a/b` for a pointer).
    pub fn frame_name(&self) -> String {
        match self {
            Self::Method => "method".into(),
            Self::Path => "path".into(),
            Self::Query => "query".into(),
            Self::Body => "body".into(),
            Self::JsonPointer(p) => format!("json:{p}"),
        }
    }

    /// Whether the part depends on the request body.
    pub fn uses_body(&self) -> bool {
        matches!(self, Self::Body | Self::JsonPointer(_))
    }
}

/// Why a command hash could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error(
        "the body exceeds max_body_bytes ({limit} bytes), the most buffered for json_pointer parts"
    )]
    TooLarge { limit: usize },
    #[error("the body is not JSON, which json_pointer parts need: {0}")]
    NotJson(String),
}

/// A part waiting for the body.
#[derive(Debug, Clone)]
enum Pending {
    Ready(&'static str, Vec<u8>),
    Body,
    Json(Box<str>),
}

/// Computes one request's command hash. Parts that do not depend on the body
/// are hashed when the hasher is created; the body is streamed into a SHA-256
/// and, only when the command has `json_pointer` parts, buffered (at most
/// `max_body_bytes`).
#[derive(Debug, Clone)]
pub struct CommandHasher {
    outer: Sha256,
    pending: Vec<Pending>,
    body_digest: Option<Sha256>,
    buffer: Option<Vec<u8>>,
    max_body: usize,
    error: Option<HashError>,
}

impl CommandHasher {
    /// `body_digest`: also keep the SHA-256 of the raw body when a part reads
    /// the body (for the RFC 9530 `content-digest` of a signed request).
    pub(crate) fn new(
        parts: &[Part],
        request: &RequestInfo<'_>,
        max_body: usize,
        body_digest: bool,
    ) -> Self {
        let mut outer = Sha256::new();
        outer.update(COMMAND_PREAMBLE);
        let mut pending = Vec::new();
        let (mut has_body, mut has_json) = (false, false);
        for part in parts {
            let ready = match part {
                Part::Method => ("method", canonical_method(request.method).into_bytes()),
                Part::Path => ("path", canonical_path(request.path).into_bytes()),
                Part::Query => ("query", canonical_query(request.path).into_bytes()),
                Part::Body => {
                    has_body = true;
                    pending.push(Pending::Body);
                    continue;
                }
                Part::JsonPointer(p) => {
                    has_json = true;
                    pending.push(Pending::Json(p.clone()));
                    continue;
                }
            };
            if pending.is_empty() {
                frame(&mut outer, ready.0.as_bytes(), &ready.1);
            } else {
                pending.push(Pending::Ready(ready.0, ready.1));
            }
        }
        Self {
            outer,
            pending,
            body_digest: (has_body || (body_digest && has_json)).then(Sha256::new),
            buffer: has_json.then(Vec::new),
            max_body,
            error: None,
        }
    }

    /// Feeds the next body chunk. Beyond `max_body_bytes` of a buffered body
    /// this fails with [`HashError::TooLarge`], and so do later calls and
    /// [`Self::finish`]; the buffer is released at once.
    pub fn update_body(&mut self, chunk: &[u8]) -> Result<(), HashError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if let Some(buffer) = &mut self.buffer {
            if chunk.len() > self.max_body.saturating_sub(buffer.len()) {
                let e = HashError::TooLarge {
                    limit: self.max_body,
                };
                self.buffer = None;
                self.error = Some(e.clone());
                return Err(e);
            }
            buffer.extend_from_slice(chunk);
        }
        if let Some(digest) = &mut self.body_digest {
            digest.update(chunk);
        }
        Ok(())
    }

    /// The command hash, once the whole body (if any) has been fed.
    pub fn finish(self) -> Result<[u8; 32], HashError> {
        self.finish_with_body_digest().map(|(hash, _)| hash)
    }

    /// The command hash, and the SHA-256 of the raw body when it was kept
    /// (a command that reads the body).
    pub fn finish_with_body_digest(self) -> Result<([u8; 32], Option<[u8; 32]>), HashError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut outer = self.outer;
        let document = match &self.buffer {
            Some(body) => Some(parse_strict_json(body)?),
            None => None,
        };
        let body_sha256: Option<[u8; 32]> = self.body_digest.map(|d| d.finalize().into());
        let body_hex = body_sha256.map(|d| hex(&d));
        for item in &self.pending {
            match item {
                Pending::Ready(name, bytes) => frame(&mut outer, name.as_bytes(), bytes),
                Pending::Body => frame(
                    &mut outer,
                    b"body",
                    body_hex.as_deref().unwrap_or_default().as_bytes(),
                ),
                Pending::Json(pointer) => {
                    let value = document.as_ref().and_then(|d| d.pointer(pointer));
                    let bytes = value.map_or_else(|| ABSENT_MARKER.to_vec(), JsonValue::canonical);
                    let name = format!("json:{pointer}");
                    frame(&mut outer, name.as_bytes(), &bytes);
                }
            }
        }
        Ok((outer.finalize().into(), body_sha256))
    }
}

/// `<name>:<len>:<bytes>\n`
fn frame(h: &mut Sha256, name: &[u8], bytes: &[u8]) {
    h.update(name);
    h.update(b":");
    h.update(bytes.len().to_string().as_bytes());
    h.update(b":");
    h.update(bytes);
    h.update(b"\n");
}

/// The framed hash input for already-canonical part bytes, as documented; for
/// tests and for tools that show what was hashed.
pub fn framed_input(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = COMMAND_PREAMBLE.to_vec();
    for (name, bytes) in parts {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(bytes.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(bytes);
        out.push(b'\n');
    }
    out
}

/// Parses a JSON body strictly, numbers kept exact (see [`super::json`]):
/// duplicate object keys are refused (parsers disagree on which one wins, so
/// the audited value could differ from the executed one).
pub fn parse_strict_json(bytes: &[u8]) -> Result<JsonValue, HashError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HashError::NotJson("the body is empty".into()));
    }
    json::parse(bytes).map_err(|e| HashError::NotJson(e.to_string()))
}
