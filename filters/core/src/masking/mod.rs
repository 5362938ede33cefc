//! Data masking: redacts, partially masks, hashes or removes sensitive values in
//! request and response bodies and headers.
//!
//! This is the pure engine; the Envoy adapter buffers bodies and applies the
//! results. The flow per request:
//!
//! 1. [`MaskingPolicy::from_json`] once per configuration: everything (patterns,
//!    JSON paths, regexes, the hash key) is compiled here;
//! 2. [`MaskingPolicy::select`] per direction: which rules apply to this caller
//!    and route. An empty [`Selection`] means "do nothing, do not buffer";
//! 3. [`MaskingPolicy::mask_headers`] and [`MaskingPolicy::mask_body`]: the edits,
//!    and per-rule hit counts (which dry-run mode reports without applying).
//!
//! Nothing here ever puts a masked value (or any body content) into an error,
//! a `Debug` string or anything else the adapter might log.
//!
//! The reference is `docs/masking.md`; the schema `docs/schema/masking.schema.json`.

mod charset;
pub mod config;
mod detect;
mod fold;
mod form;
pub mod gate;
mod json;
mod multipart;
mod paths;
mod policy;
mod strategy;
mod stream;
mod text;

pub use config::{
    BinaryPartAction, CompressedAction, GrpcAction, MalformedJsonAction, MaskRuleConfig,
    MaskingConfig, NotUtf8Action, OversizeAction, PatternConfig, StrategyKind, UnsupportedAction,
    UpgradeAction,
};
pub use detect::Detector;
pub use gate::{
    is_tunnel, tunnel, wants_identity_response, Answer, Gate, HeadersStep, Reason, Report, Skip,
    Verdict,
};
pub use policy::{
    MaskingPolicy, MAX_HEADERS, MAX_JSON_KEYS, MAX_JSON_PATHS, MAX_NAME_LEN, MAX_PATTERNS,
    MAX_REGEX_LEN, MAX_RULES,
};

pub use crate::config::Mode;

use serde::Deserialize;

/// Which message of the exchange is being masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Request => 1,
            Self::Response => 2,
        }
    }
}

/// How a body is masked, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// `application/json` and every `+json` type: JSON paths, keys, detectors.
    Json,
    /// `text/*`: detectors and patterns over the whole text.
    Text,
    /// `application/x-www-form-urlencoded`: field names as keys, values scanned.
    Form,
    /// `application/grpc` and its `+proto`, `+json`, `-web` variants:
    /// length-prefixed protobuf frames the engine cannot read (`on_grpc`).
    Grpc,
    /// `text/event-stream`: server-sent events, masked event by event.
    EventStream,
    /// NDJSON / JSON Lines (`application/x-ndjson`, `application/jsonl`...):
    /// masked line by line, each line as JSON.
    JsonLines,
    /// `application/json-seq` (RFC 7464): masked text by text, as JSON.
    JsonSeq,
    /// `multipart/*` (`form-data`, `mixed`...): parsed part by part.
    Multipart,
    /// Anything else, or no content type: the gate sniffs it (UTF-8 text is
    /// masked as `Text`); `mask_body` leaves it alone.
    Other,
}

impl BodyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Text => "text",
            Self::Form => "form",
            Self::Grpc => "grpc",
            Self::EventStream => "event_stream",
            Self::JsonLines => "json_lines",
            Self::JsonSeq => "json_seq",
            Self::Multipart => "multipart",
            Self::Other => "other",
        }
    }
}

/// The body kind of a `content-type` value: media type compared ASCII
/// case-insensitively, parameters (`; charset=...`) ignored.
pub fn body_kind(content_type: Option<&str>) -> BodyKind {
    let Some(value) = content_type else {
        return BodyKind::Other;
    };
    let media = value.split(';').next().unwrap_or("").trim();
    let Some((top, sub)) = media.split_once('/') else {
        return BodyKind::Other;
    };
    let (top, sub) = (top.trim(), sub.trim());
    if top.is_empty() || sub.is_empty() {
        return BodyKind::Other;
    }
    let sub_ends_with_json = sub
        .len()
        .checked_sub(5)
        .and_then(|i| sub.get(i..))
        .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"));
    let grpc = top.eq_ignore_ascii_case("application")
        && sub
            .get(..4)
            .is_some_and(|head| head.eq_ignore_ascii_case("grpc"))
        && matches!(sub.as_bytes().get(4), None | Some(b'+' | b'-'));
    let application = top.eq_ignore_ascii_case("application");
    let json_lines = [
        "x-ndjson",
        "ndjson",
        "jsonl",
        "x-jsonl",
        "jsonlines",
        "x-jsonlines",
        "json-lines",
    ]
    .iter()
    .any(|s| sub.eq_ignore_ascii_case(s));
    if grpc {
        BodyKind::Grpc
    } else if top.eq_ignore_ascii_case("text") && sub.eq_ignore_ascii_case("event-stream") {
        BodyKind::EventStream
    } else if application && json_lines {
        BodyKind::JsonLines
    } else if application && sub.eq_ignore_ascii_case("json-seq") {
        BodyKind::JsonSeq
    } else if top.eq_ignore_ascii_case("multipart") {
        BodyKind::Multipart
    } else if (top.eq_ignore_ascii_case("application") && sub.eq_ignore_ascii_case("json"))
        || sub_ends_with_json
    {
        BodyKind::Json
    } else if top.eq_ignore_ascii_case("text") {
        BodyKind::Text
    } else if top.eq_ignore_ascii_case("application")
        && sub.eq_ignore_ascii_case("x-www-form-urlencoded")
    {
        BodyKind::Form
    } else {
        BodyKind::Other
    }
}

/// The rules that apply to one message: indices into the policy's rules, in
/// policy order. Cheap to keep per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    rules: Vec<u16>,
    body: bool,
    headers: bool,
}

impl Selection {
    /// No rule applies: the adapter leaves the message alone (and never buffers it).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Some selected rule masks bodies (`json_paths`, `json_keys`, `detectors`
    /// or `patterns`): the adapter must buffer the body.
    pub fn needs_body(&self) -> bool {
        self.body
    }

    /// Some selected rule masks `headers`.
    pub fn needs_headers(&self) -> bool {
        self.headers
    }

    /// Keeps the header rules only: the body is not masked (an upgraded
    /// stream let through by `on_upgrade: pass_unmasked`).
    pub fn drop_body_rules(&mut self) {
        self.body = false;
    }

    /// The selected rule indices, in policy order (see [`MaskingPolicy::rule_name`]).
    pub fn rules(&self) -> impl Iterator<Item = usize> + '_ {
        self.rules.iter().map(|&r| usize::from(r))
    }
}

/// The result of masking a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Masked {
    /// The new body; `None` when nothing changed (forward the original bytes).
    pub body: Option<Vec<u8>>,
    /// Values or matches masked, per rule (only rules with a hit, in rule order).
    pub hits: Vec<RuleHits>,
    /// Some text was not UTF-8 and was scanned run by run
    /// (`on_not_utf8: mask_bytes`): counted by the adapter.
    pub scanned_bytes: bool,
}

/// How many values (JSON values, form fields, headers) or matches (detector or
/// pattern matches in text) one rule masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleHits {
    pub rule: usize,
    pub count: u32,
}

/// Header edits to apply, one per header name, in the order the names first
/// appear in the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub edits: Vec<HeaderEdit>,
    pub hits: Vec<RuleHits>,
}

/// One header edit. `Replace` sets the header to a single value (all previous
/// values of that name are replaced); `Remove` removes every value of the name.
/// `Values` sets the name to these values, one field line each (for
/// `set-cookie`, whose values cannot be joined).
#[derive(Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    Replace { name: String, value: String },
    Remove { name: String },
    Values { name: String, values: Vec<String> },
}

impl HeaderEdit {
    pub fn name(&self) -> &str {
        match self {
            Self::Replace { name, .. } | Self::Remove { name } | Self::Values { name, .. } => name,
        }
    }
}

/// `Debug` never shows the new value: it is derived from a sensitive one (a
/// partial mask keeps characters; a hash is linkable).
impl std::fmt::Debug for HeaderEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Replace { name, .. } => f
                .debug_struct("Replace")
                .field("name", name)
                .finish_non_exhaustive(),
            Self::Remove { name } => f.debug_struct("Remove").field("name", name).finish(),
            Self::Values { name, values } => f
                .debug_struct("Values")
                .field("name", name)
                .field("count", &values.len())
                .finish_non_exhaustive(),
        }
    }
}

/// Why a body could not be masked. Messages never contain body content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// Not JSON (or not UTF-8 JSON). The adapter applies `on_malformed_json`.
    #[error("malformed JSON: {detail}")]
    MalformedJson { detail: String },
    /// Nested deeper than `max_json_depth`. The adapter applies `on_malformed_json`.
    #[error("JSON nested deeper than {max} levels")]
    TooDeep { max: usize },
    /// A text body that is not UTF-8: not masked; the adapter forwards it
    /// unchanged and reports the skip.
    #[error("the body is not valid UTF-8")]
    NotUtf8,
    /// Text in a charset that cannot be read (UTF-32, UTF-7, an unknown
    /// charset on text that is not ASCII), or masked text that cannot be
    /// written back in it.
    #[error("the body's charset cannot be read or written back")]
    Charset,
}

impl MaskError {
    /// A stable code for logs and metrics.
    pub fn as_code(&self) -> &'static str {
        match self {
            Self::MalformedJson { .. } => "malformed_json",
            Self::TooDeep { .. } => "too_deep",
            Self::NotUtf8 => "not_utf8",
            Self::Charset => "charset",
        }
    }
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
