//! The masking filter's plugin JSON, exactly as users write it.
//!
//! Unknown keys are refused everywhere (a typo must not silently leave data
//! unmasked); every field is documented in `docs/masking.md` and
//! `docs/schema/masking.schema.json`. For `Option` fields, `null` means the
//! same as leaving the key out.

use serde::Deserialize;

use super::detect::Detector;
use super::Direction;
pub use crate::config::Mode;

/// Default `max_body_bytes`: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Largest `max_body_bytes` accepted: 64 MiB.
pub const MAX_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Default `max_json_depth`.
pub const DEFAULT_MAX_JSON_DEPTH: u64 = 64;
/// Largest `max_json_depth` accepted.
pub const MAX_MAX_JSON_DEPTH: u64 = 128;
/// Default `hash_key_env`.
pub const DEFAULT_HASH_KEY_ENV: &str = "MESHGUARD_MASK_HASH_KEY";
/// Default `redact_token`.
pub const DEFAULT_REDACT_TOKEN: &str = "[REDACTED]";
/// Default `max_record_bytes`: 64 KiB.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 * 1024;
/// Default `keep_last`.
pub const DEFAULT_KEEP_LAST: u64 = 4;
/// Largest `keep_last` accepted.
pub const MAX_KEEP_LAST: u64 = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Free-form version label (reported, never interpreted).
    #[serde(default)]
    pub config_version: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// How request paths are canonicalized before rule scopes match (as in
    /// the identity filter: docs/identity.md).
    #[serde(default, deserialize_with = "crate::config::present")]
    pub path_normalization: Option<crate::path::PathNormalization>,
    /// Rule paths compare ASCII case-insensitively.
    #[serde(default)]
    pub path_case_insensitive: bool,
    /// Largest body the adapter buffers for masking.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Deepest JSON nesting masked.
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: u64,
    /// Largest record of a streamed body (an event, a line, a multipart
    /// part held to be masked) held while it is incomplete.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: u64,
    #[serde(default)]
    pub on_oversize: OversizeAction,
    #[serde(default)]
    pub on_malformed_json: MalformedJsonAction,
    #[serde(default)]
    pub on_compressed_request: CompressedAction,
    #[serde(default)]
    pub on_unsupported_content_type: UnsupportedAction,
    /// What to do with a text, form or query value that is not UTF-8.
    #[serde(default)]
    pub on_not_utf8: NotUtf8Action,
    /// What to do with a gRPC (protobuf) body that a rule would mask.
    #[serde(default)]
    pub on_grpc: GrpcAction,
    /// What to do with a binary part of a multipart body.
    #[serde(default)]
    pub on_binary_part: BinaryPartAction,
    /// What to do with an upgrade (WebSocket...) or CONNECT on a route
    /// whose rules mask bodies.
    #[serde(default)]
    pub on_upgrade: UpgradeAction,
    /// Run the selected rules' detectors and patterns over every header and
    /// trailer value, not only over the headers the rules name.
    #[serde(default)]
    pub scan_all_headers: bool,
    /// Name of the vmConfig environment variable holding the hash key.
    #[serde(default = "default_hash_key_env")]
    pub hash_key_env: String,
    pub rules: Vec<MaskRuleConfig>,
}

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

fn default_max_json_depth() -> u64 {
    DEFAULT_MAX_JSON_DEPTH
}

fn default_max_record_bytes() -> u64 {
    DEFAULT_MAX_RECORD_BYTES
}

fn default_hash_key_env() -> String {
    DEFAULT_HASH_KEY_ENV.into()
}

/// What the adapter does with a body larger than `max_body_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversizeAction {
    /// Refuse the message (413 for a request, 502 for a response).
    #[default]
    Reject,
    /// Forward it unmasked (counted and logged, without content).
    PassUnmasked,
}

impl OversizeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::PassUnmasked => "pass_unmasked",
        }
    }
}

/// What the adapter does with a JSON body that does not parse (or is too deep).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedJsonAction {
    #[default]
    Reject,
    /// Mask it as text instead (detectors and patterns only).
    MaskAsText,
}

impl MalformedJsonAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::MaskAsText => "mask_as_text",
        }
    }
}

/// What the adapter does with a compressed (`content-encoding`) request body
/// that some rule would mask: the engine only sees uncompressed bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressedAction {
    #[default]
    Reject,
    PassUnmasked,
}

impl CompressedAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::PassUnmasked => "pass_unmasked",
        }
    }
}

/// What the adapter does with a body whose content type is not masked
/// ([`super::BodyKind::Other`]) when body rules apply and the gate cannot
/// sniff it as text: it is binary, or larger than `max_body_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsupportedAction {
    /// Forward it unmasked (counted).
    Pass,
    /// Refuse the message (the default since multipart and streams are
    /// parsed: what is left is binary, see docs/masking.md).
    #[default]
    Reject,
}

impl UnsupportedAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Reject => "reject",
        }
    }
}

/// What the adapter does with text (a text body, a form field, a query
/// parameter) that is not UTF-8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotUtf8Action {
    /// Refuse the message.
    #[default]
    Reject,
    /// Run detectors and patterns over each valid UTF-8 run of the bytes; the
    /// invalid bytes are kept as they are.
    MaskBytes,
}

impl NotUtf8Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::MaskBytes => "mask_bytes",
        }
    }
}

/// What the adapter does with a gRPC body (`application/grpc*`) that a rule
/// would mask: the engine cannot read protobuf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrpcAction {
    #[default]
    Reject,
    /// Forward it unmasked (counted).
    PassUnmasked,
}

impl GrpcAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::PassUnmasked => "pass_unmasked",
        }
    }
}

/// What the adapter does with a multipart part of a binary type (or a
/// `content-transfer-encoding` such as base64), which it cannot mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryPartAction {
    /// Refuse the message.
    #[default]
    Reject,
    /// Forward the part unmasked (counted); the other parts are masked.
    Pass,
}

impl BinaryPartAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Pass => "pass",
        }
    }
}

/// What the adapter does with an upgraded (WebSocket...) or CONNECT stream
/// on a route whose rules mask bodies: its bytes are not HTTP bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeAction {
    /// Refuse the request (`501`).
    #[default]
    Reject,
    /// Let the stream through with its headers masked, its bytes unmasked (counted).
    PassUnmasked,
}

impl UpgradeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::PassUnmasked => "pass_unmasked",
        }
    }
}

/// How a selected value or a match is masked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// Replace with `redact_token`.
    #[default]
    Redact,
    /// Keep the last `keep_last` characters, star the other letters and digits.
    Partial,
    /// `hash:` and a keyed HMAC-SHA256 of the value (22 base64url characters).
    Hash,
    /// Delete: object members and headers removed, array elements nulled,
    /// text matches deleted.
    Remove,
}

impl StrategyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redact => "redact",
            Self::Partial => "partial",
            Self::Hash => "hash",
            Self::Remove => "remove",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskRuleConfig {
    pub name: String,
    /// `request`, `response` or both (the default).
    #[serde(default)]
    pub directions: Option<Vec<Direction>>,
    // Scope fields, as in every rule type: serde's `flatten` does not work with `deny_unknown_fields`.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub not_paths: Option<Vec<String>>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub not_methods: Option<Vec<String>>,
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    #[serde(default)]
    pub not_hosts: Option<Vec<String>>,
    /// Callers this rule does not apply to (principal patterns).
    #[serde(default)]
    pub except_principals: Option<Vec<String>>,
    /// JSON Pointer paths with `*` and `**` wildcards.
    #[serde(default)]
    pub json_paths: Option<Vec<String>>,
    /// Object member names, matched case-insensitively at any depth.
    #[serde(default)]
    pub json_keys: Option<Vec<String>>,
    #[serde(default)]
    pub detectors: Option<Vec<Detector>>,
    #[serde(default)]
    pub patterns: Option<Vec<PatternConfig>>,
    /// Header names whose values are masked.
    #[serde(default)]
    pub headers: Option<Vec<String>>,
    #[serde(default)]
    pub strategy: StrategyKind,
    /// Only with `strategy: "redact"`; default `[REDACTED]`.
    #[serde(default)]
    pub redact_token: Option<String>,
    /// Only with `strategy: "partial"`; default 4.
    #[serde(default)]
    pub keep_last: Option<u64>,
}

/// A user-defined pattern (regex-lite syntax).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    pub name: String,
    pub regex: String,
}
