//! The audit filter's plugin JSON, exactly as users write it.
//!
//! Unknown keys are refused (a typo must not silently change what is audited);
//! every field is documented in `docs/audit.md` and `docs/schema/audit.schema.json`.
//! Validation beyond types (ranges, names, pointers, header names) happens when
//! [`super::AuditPolicy`] compiles this.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

pub const DEFAULT_KEY_ENV: &str = "MESHGUARD_AUDIT_KEY";
pub const DEFAULT_KEY_ID: &str = "default";
pub const DEFAULT_COMMAND_HEADER: &str = "x-meshguard-command-sha256";
pub const DEFAULT_AUDIT_HEADER: &str = "x-meshguard-audit";
pub const DEFAULT_ID_HEADER: &str = "x-meshguard-audit-id";
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_COLLECTOR_PATH: &str = "/v1/audit-records";
/// The OTLP/HTTP logs path of an OpenTelemetry Collector's `otlp` receiver.
pub const DEFAULT_OTLP_PATH: &str = "/v1/logs";
pub const DEFAULT_COLLECTOR_AUTHORITY: &str = "audit-collector";
pub const DEFAULT_COLLECTOR_TIMEOUT_MS: u64 = 2000;
pub const DEFAULT_COLLECTOR_MAX_QUEUE: u64 = 1000;
pub const DEFAULT_COLLECTOR_MAX_RETRIES: u64 = 3;
pub const DEFAULT_COLLECTOR_BATCH_SIZE: u64 = 50;
pub const DEFAULT_COLLECTOR_MAX_QUEUE_BYTES: u64 = 16 * 1024 * 1024;
pub const DEFAULT_COLLECTOR_MAX_IN_FLIGHT: u64 = 4;
pub const DEFAULT_MAX_RECORD_PATH_BYTES: u64 = 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Free-form version label (reported, never interpreted).
    #[serde(default)]
    pub config_version: Option<String>,
    /// Name of the VM environment variable holding the base64 HMAC key.
    #[serde(default = "default_key_env")]
    pub key_env: String,
    /// Name of the key, written into headers and records so keys can rotate.
    #[serde(default = "default_key_id")]
    pub key_id: String,
    #[serde(default = "default_command_header")]
    pub command_header: String,
    #[serde(default = "default_audit_header")]
    pub audit_header: String,
    #[serde(default = "default_id_header")]
    pub id_header: String,
    /// Most body bytes buffered for `json_pointer` parts.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Command definitions, tried in order; the first whose scope matches applies.
    #[serde(default)]
    pub commands: Vec<CommandConfig>,
    #[serde(default = "yes")]
    pub log_records: bool,
    #[serde(default)]
    pub collector: Option<CollectorConfig>,
    #[serde(default)]
    pub fail_closed: bool,
    /// Most bytes of the canonical path a record keeps.
    #[serde(default = "default_max_record_path_bytes")]
    pub max_record_path_bytes: u64,
    /// How request paths are canonicalized before commands are matched (as
    /// in the identity filter: docs/identity.md).
    #[serde(default, deserialize_with = "crate::config::present")]
    pub path_normalization: Option<crate::path::PathNormalization>,
    /// Command paths compare ASCII case-insensitively.
    #[serde(default)]
    pub path_case_insensitive: bool,
    /// What signs the headers and seals the records: `hmac-sha256` (a secret
    /// every verifier shares) or `ed25519` (verifiers hold the public key).
    #[serde(default)]
    pub algorithm: super::keys::Algorithm,
    /// Which signed headers the upstream receives.
    #[serde(default)]
    pub upstream_signature: UpstreamSignature,
    /// The RFC 9421 label of meshguard's `Signature-Input`/`Signature` members.
    #[serde(default = "default_signature_label")]
    pub signature_label: String,
    /// The RFC 9421 `tag` parameter.
    #[serde(default = "default_signature_tag")]
    pub signature_tag: String,
    /// The RFC 9421 `expires` parameter, in seconds after `created`.
    #[serde(default)]
    pub signature_expires_seconds: Option<u64>,
}

/// The signed headers sent upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum UpstreamSignature {
    /// meshguard's own `x-meshguard-audit` header (HMAC only).
    #[default]
    V1,
    /// RFC 9421 `Signature-Input` and `Signature` members.
    Rfc9421,
    /// Both, while upstreams migrate.
    Both,
}

impl TryFrom<String> for UpstreamSignature {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        [Self::V1, Self::Rfc9421, Self::Both]
            .into_iter()
            .find(|v| v.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "unknown upstream_signature {name:?}: expected \"v1\", \"rfc9421\" or \"both\""
                )
            })
    }
}

impl UpstreamSignature {
    pub fn v1(self) -> bool {
        matches!(self, Self::V1 | Self::Both)
    }

    pub fn rfc9421(self) -> bool {
        matches!(self, Self::Rfc9421 | Self::Both)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::Rfc9421 => "rfc9421",
            Self::Both => "both",
        }
    }
}

/// How records are POSTed to the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum CollectorFormat {
    /// One record per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// OTLP/HTTP JSON log records (`application/json`), for an OpenTelemetry
    /// Collector's `otlp` receiver.
    OtlpJson,
}

impl TryFrom<String> for CollectorFormat {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "ndjson" => Ok(Self::Ndjson),
            "otlp_json" => Ok(Self::OtlpJson),
            other => Err(format!(
                "unknown format {other:?}: expected \"ndjson\" or \"otlp_json\""
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub name: String,
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
    pub parts: Vec<PartConfig>,
}

/// One part of a command: `"method"`, `"path"`, `"query"`, `"body"` or
/// `{"json_pointer": "/a/b"}` (nothing else: not `{"method": null}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartConfig {
    Method,
    Path,
    Query,
    Body,
    JsonPointer(String),
}

const PART_FORMS: &str =
    "\"method\", \"path\", \"query\", \"body\" or {\"json_pointer\": \"/...\"}";

impl<'de> Deserialize<'de> for PartConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PartVisitor)
    }
}

struct PartVisitor;

impl<'de> Visitor<'de> for PartVisitor {
    type Value = PartConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a part: {PART_FORMS}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PartConfig, E> {
        match v {
            "method" => Ok(PartConfig::Method),
            "path" => Ok(PartConfig::Path),
            "query" => Ok(PartConfig::Query),
            "body" => Ok(PartConfig::Body),
            other => Err(E::custom(format!(
                "unknown part {other:?}: expected {PART_FORMS}"
            ))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PartConfig, A::Error> {
        let mut pointer = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "json_pointer" {
                return Err(de::Error::custom(format!(
                    "unknown key {key:?} in a part: the only object part is {{\"json_pointer\": \"/...\"}}"
                )));
            }
            if pointer.is_some() {
                return Err(de::Error::duplicate_field("json_pointer"));
            }
            pointer = Some(map.next_value::<String>()?);
        }
        pointer
            .map(PartConfig::JsonPointer)
            .ok_or_else(|| de::Error::missing_field("json_pointer"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// The Envoy cluster records are POSTed to.
    pub cluster: String,
    /// `ndjson` (default) or `otlp_json`.
    #[serde(default)]
    pub format: CollectorFormat,
    /// Default: `/v1/audit-records` for `ndjson`, `/v1/logs` for `otlp_json`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "default_collector_authority")]
    pub authority: String,
    #[serde(default = "default_collector_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_collector_max_queue")]
    pub max_queue: u64,
    #[serde(default = "default_collector_max_retries")]
    pub max_retries: u64,
    #[serde(default = "default_collector_batch_size")]
    pub batch_size: u64,
    #[serde(default = "default_collector_max_queue_bytes")]
    pub max_queue_bytes: u64,
    #[serde(default = "default_collector_max_in_flight")]
    pub max_in_flight: u64,
}

fn default_key_env() -> String {
    DEFAULT_KEY_ENV.into()
}
fn default_key_id() -> String {
    DEFAULT_KEY_ID.into()
}
fn default_command_header() -> String {
    DEFAULT_COMMAND_HEADER.into()
}
fn default_audit_header() -> String {
    DEFAULT_AUDIT_HEADER.into()
}
fn default_id_header() -> String {
    DEFAULT_ID_HEADER.into()
}
fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}
fn yes() -> bool {
    true
}
fn default_signature_label() -> String {
    super::httpsig::DEFAULT_LABEL.into()
}
fn default_signature_tag() -> String {
    super::httpsig::DEFAULT_TAG.into()
}
fn default_collector_authority() -> String {
    DEFAULT_COLLECTOR_AUTHORITY.into()
}
fn default_collector_timeout_ms() -> u64 {
    DEFAULT_COLLECTOR_TIMEOUT_MS
}
fn default_collector_max_queue() -> u64 {
    DEFAULT_COLLECTOR_MAX_QUEUE
}
fn default_collector_max_retries() -> u64 {
    DEFAULT_COLLECTOR_MAX_RETRIES
}
fn default_collector_batch_size() -> u64 {
    DEFAULT_COLLECTOR_BATCH_SIZE
}
fn default_collector_max_queue_bytes() -> u64 {
    DEFAULT_COLLECTOR_MAX_QUEUE_BYTES
}
fn default_collector_max_in_flight() -> u64 {
    DEFAULT_COLLECTOR_MAX_IN_FLIGHT
}
fn default_max_record_path_bytes() -> u64 {
    DEFAULT_MAX_RECORD_PATH_BYTES
}
