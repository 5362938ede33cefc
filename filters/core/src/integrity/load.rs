//! Loading a plugin config: signature, fingerprint, integrity section.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::Deserialize;
use serde_json::Value;

use super::env::IntegrityEnv;
use crate::canonical::{sha256_hex, to_canonical_bytes};
use crate::config::{parse_json, ConfigError, StrictObject};
use crate::pattern::PathPattern;
use crate::scope::path_pattern;

const SIGNATURE_KEY: &str = "signature";
const INTEGRITY_KEY: &str = "integrity";
const RELEASE_KEY: &str = "release";

/// What a drifted workload does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDrift {
    /// Metrics and a warning log only.
    #[default]
    Report,
    /// Refuse all traffic but `health_paths` with 503 until the config matches again.
    Quarantine,
    /// Refuse to load a config that does not match the intended one.
    Reject,
}

impl OnDrift {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Quarantine => "quarantine",
            Self::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntegrityConfig {
    #[serde(default)]
    on_drift: OnDrift,
    #[serde(default)]
    health_paths: Vec<String>,
    #[serde(default = "service_unavailable")]
    quarantine_status: u16,
    #[serde(default)]
    source_of_truth: Option<SourceConfig>,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        Self {
            on_drift: OnDrift::default(),
            health_paths: Vec::new(),
            quarantine_status: service_unavailable(),
            source_of_truth: None,
        }
    }
}

fn service_unavailable() -> u16 {
    503
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceConfig {
    cluster: String,
    path: String,
    #[serde(default = "default_authority")]
    authority: String,
    #[serde(default = "default_poll")]
    poll_interval_ms: u64,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
}

fn default_authority() -> String {
    "meshguard-intended".into()
}
fn default_poll() -> u64 {
    10_000
}
fn default_timeout() -> u64 {
    2_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureConfig {
    key_id: String,
    ed25519: String,
}

/// The scope a signed config is released for: which filter, which
/// workloads, when, and its place in the release order (anti-rollback).
/// Covered by the signature; never handed to the filter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub filter: String,
    /// `NAMESPACE/WORKLOAD_NAME`, `NAMESPACE/*` or `*`.
    pub workloads: Vec<String>,
    /// Monotonic: a sidecar refuses a serial below the newest it accepted.
    pub serial: u64,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
    /// On an Istio waypoint, the Services (`NAME.NAMESPACE.svc.DOMAIN`) the
    /// release is for: the plugin refuses every request of another Service's
    /// filter chain, so a policy attached to one Service never judges
    /// another's traffic (`targetRefs` edited, or the plugin moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
}

impl Release {
    /// Whether `workload` (`NAMESPACE/NAME`) is one this release is for.
    pub fn covers(&self, workload: &str) -> bool {
        self.workloads.iter().any(|w| {
            w == "*"
                || w == workload
                || w.strip_suffix('*').is_some_and(|ns| {
                    ns.ends_with('/') && workload.starts_with(ns) && workload.len() > ns.len()
                })
        })
    }
}

/// The Service host of an Istio waypoint's filter chain
/// (`inbound-vip|PORT|PROTOCOL|HOST`); `None` for any other chain name.
pub fn waypoint_service(filter_chain: &str) -> Option<&str> {
    let mut parts = filter_chain.split('|');
    let (Some("inbound-vip"), Some(_port), Some(_protocol), Some(host), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (!host.is_empty()).then_some(host)
}

impl Release {
    /// Whether a request on `filter_chain` is in the release's Service scope
    /// (always, for a release that names no Service; never, when the chain
    /// names no Service it covers).
    pub fn covers_chain(&self, filter_chain: Option<&str>) -> bool {
        let Some(services) = &self.services else {
            return true;
        };
        filter_chain
            .and_then(waypoint_service)
            .is_some_and(|host| services.iter().any(|s| s.eq_ignore_ascii_case(host)))
    }
}

/// Where and how often to ask for the intended version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOfTruth {
    /// Envoy cluster the `dispatch_http_call` goes to.
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub poll_interval_ms: u64,
    pub timeout_ms: u64,
}

/// The compiled `integrity` section.
#[derive(Debug, Clone)]
pub struct IntegritySettings {
    pub on_drift: OnDrift,
    pub health_paths: Vec<PathPattern>,
    pub quarantine_status: u16,
    pub source_of_truth: Option<SourceOfTruth>,
    /// Where each judging setting came from (`env`, `signed config`, `config`, `default`).
    pub origin: SettingsOrigin,
}

/// Where the settings that judge a config came from (logged at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingsOrigin {
    pub on_drift: Origin,
    pub health_paths: Origin,
    pub source_of_truth: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Environment,
    SignedConfig,
    /// An unsigned config, in an environment that asks for no integrity.
    Config,
    Default,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "env",
            Self::SignedConfig => "signed config",
            Self::Config => "config",
            Self::Default => "default",
        }
    }
}

impl IntegritySettings {
    pub fn is_health_path(&self, path: &str) -> bool {
        self.health_paths.iter().any(|p| p.matches(path))
    }
}

/// How the config's signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    Verified {
        key_id: String,
    },
    /// No signature, and none required.
    Unsigned,
    /// A signature was present but no trusted keys are configured to check it.
    Unchecked {
        key_id: String,
    },
}

impl std::fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Verified { key_id } => write!(f, "verified by {key_id}"),
            Self::Unsigned => f.write_str("unsigned"),
            Self::Unchecked { key_id } => {
                write!(
                    f,
                    "present ({key_id}), not checked (no MESHGUARD_TRUSTED_KEYS)"
                )
            }
        }
    }
}

/// A config that passed the integrity checks.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The filter's own keys (without `signature` and `integrity`), as JSON.
    pub filter_config: Vec<u8>,
    /// Hex SHA-256 of the canonical config without `signature`.
    pub fingerprint: String,
    pub config_version: Option<String>,
    pub signature: SignatureStatus,
    pub settings: IntegritySettings,
    /// The intended version known at load time (from the environment).
    pub intended_from_env: Option<Intended>,
    /// The scope of a config signed by a trusted key (`None` otherwise).
    pub release: Option<Release>,
}

impl Loaded {
    /// Whether the config's own `config_version` can be believed: only a
    /// trusted signature makes a version label more than a claim.
    pub fn label_trusted(&self) -> bool {
        matches!(self.signature, SignatureStatus::Verified { .. })
    }
}

/// Why a config was not loaded. `Unauthorized` and `Drift` are counted apart
/// from plain mistakes: they are what an operator must look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("unauthorized config: {0}")]
    Unauthorized(String),
    #[error("config drift, refused (on_drift: reject): {0}")]
    Drift(String),
    #[error("config refused ({}): {detail}", .reason.as_str())]
    Refused { reason: Refusal, detail: String },
}

/// Why a config was refused by the trust checks; each is its own `result`
/// label of `meshguard_config_loads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An unsigned config sets judging settings while the environment asks for integrity.
    UnsignedIntegrity,
    /// Signed by a key in `MESHGUARD_REVOKED_KEYS`.
    Revoked,
    /// Signed, but without a `release` scope.
    Unscoped,
    WrongFilter,
    WrongWorkload,
    NotYetValid,
    Expired,
    /// Serial below `MESHGUARD_MIN_SERIAL` (or unsigned while a minimum is set).
    BelowMinimum,
    /// Serial below the newest this proxy accepted (or the same serial, other config).
    Rollback,
    /// Serial above [`MAX_SERIAL`], or more than [`MAX_SERIAL_STEP`] past the newest.
    SerialOutOfRange,
}

impl Refusal {
    pub const ALL: [Self; 10] = [
        Self::UnsignedIntegrity,
        Self::Revoked,
        Self::Unscoped,
        Self::WrongFilter,
        Self::WrongWorkload,
        Self::NotYetValid,
        Self::Expired,
        Self::BelowMinimum,
        Self::Rollback,
        Self::SerialOutOfRange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsignedIntegrity => "unsigned_integrity",
            Self::Revoked => "revoked",
            Self::Unscoped => "unscoped",
            Self::WrongFilter => "wrong_filter",
            Self::WrongWorkload => "wrong_workload",
            Self::NotYetValid => "not_yet_valid",
            Self::Expired => "expired",
            Self::BelowMinimum => "below_minimum",
            Self::Rollback => "rollback",
            Self::SerialOutOfRange => "serial_out_of_range",
        }
    }
}

impl LoadError {
    fn refused(reason: Refusal, detail: impl Into<String>) -> Self {
        Self::Refused {
            reason,
            detail: detail.into(),
        }
    }

    /// The `result` label of `meshguard_config_loads_total`.
    pub fn result_label(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "refused",
            Self::Unauthorized(_) => "unauthorized",
            Self::Drift(_) => "drift_rejected",
            Self::Refused { reason, .. } => reason.as_str(),
        }
    }
}

/// Every `result` label of `meshguard_config_loads_total`.
pub fn load_results() -> impl Iterator<Item = &'static str> {
    ["accepted", "refused", "unauthorized", "drift_rejected"]
        .into_iter()
        .chain(Refusal::ALL.iter().map(|r| r.as_str()))
}

/// What the proxy knows about itself when it admits a config: never taken
/// from the config.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    /// The filter's name (`identity`, `masking`, `audit`).
    pub filter: &'a str,
    /// `NAMESPACE/WORKLOAD_NAME` from the proxy's node metadata.
    pub workload: Option<&'a str>,
    /// Host time, Unix seconds.
    pub now_s: u64,
    /// The newest `(serial, fingerprint)` this proxy accepted for this filter.
    pub newest: Option<(u64, &'a str)>,
    /// This config (fingerprint) was already admitted on this proxy: a VM
    /// Envoy creates later (a worker, a VM recreated under FAIL_RELOAD) loads
    /// it again, possibly after its window closed or a newer serial arrived.
    /// Its time and serial were judged when it was first admitted; a newer
    /// serial since then supersedes it at request time (503
    /// `config_superseded`), never by failing that VM's `on_configure`.
    pub admitted_here: bool,
}

/// The highest serial a release may carry: the largest integer every JSON
/// implementation reads exactly (2^53 - 1), so no verifier reads another one.
pub const MAX_SERIAL: u64 = (1 << 53) - 1;

/// How far a new serial may jump past the newest one this proxy accepted: a
/// serial far ahead would lock out every later release until a restart.
pub const MAX_SERIAL_STEP: u64 = 1_000_000;

/// The scope checks of a loaded config against what the proxy knows: filter,
/// workload, validity window, serial floor and anti-rollback. Each refusal
/// has its own reason.
pub fn admit(loaded: &Loaded, env: &IntegrityEnv, at: &Admission<'_>) -> Result<(), LoadError> {
    let Some(release) = &loaded.release else {
        if let Some(min) = env.min_serial {
            return Err(LoadError::refused(
                Refusal::BelowMinimum,
                format!("the config carries no signed serial and MESHGUARD_MIN_SERIAL is {min}"),
            ));
        }
        return Ok(());
    };
    if release.filter != at.filter {
        return Err(LoadError::refused(
            Refusal::WrongFilter,
            format!(
                "signed for filter {}, this is the {} filter",
                quoted(&release.filter),
                at.filter
            ),
        ));
    }
    match at.workload {
        Some(w) if release.covers(w) => {}
        workload => {
            return Err(LoadError::refused(
                Refusal::WrongWorkload,
                format!(
                    "signed for workloads {}, this proxy is {}",
                    quoted(&release.workloads.join(",")),
                    workload.map_or_else(|| "unknown (no node metadata)".into(), quoted)
                ),
            ))
        }
    }
    if release.serial > MAX_SERIAL {
        return Err(LoadError::refused(
            Refusal::SerialOutOfRange,
            format!(
                "serial {} is above the highest serial, {MAX_SERIAL} (2^53 - 1)",
                release.serial
            ),
        ));
    }
    // The validity window and the release order are judged when a config is
    // first admitted on this proxy. Envoy configures the same config again
    // in every VM it creates later (a worker, a VM recreated under
    // FAIL_RELOAD), possibly after the window closed or a newer serial was
    // accepted: refusing it there would leave that worker without the filter.
    // The environment's checks (revocation, the serial floor) still apply.
    let running_here = at.newest.is_some_and(|(serial, fingerprint)| {
        serial == release.serial && fingerprint == loaded.fingerprint
    });
    let admitted = at.admitted_here || running_here;
    if !admitted {
        check_window(release, at.now_s)?;
    }
    if let Some(min) = env.min_serial.filter(|min| release.serial < *min) {
        return Err(LoadError::refused(
            Refusal::BelowMinimum,
            format!(
                "serial {} is below MESHGUARD_MIN_SERIAL {min}",
                release.serial
            ),
        ));
    }
    if let Some((newest, fingerprint)) = at.newest.filter(|_| !admitted) {
        if release.serial > newest.saturating_add(MAX_SERIAL_STEP) {
            return Err(LoadError::refused(
                Refusal::SerialOutOfRange,
                format!(
                    "serial {} jumps more than {MAX_SERIAL_STEP} past serial {newest}, the newest accepted here",
                    release.serial
                ),
            ));
        }
        if release.serial < newest
            || (release.serial == newest && fingerprint != loaded.fingerprint)
        {
            return Err(LoadError::refused(
                Refusal::Rollback,
                format!(
                    "serial {} is older than serial {newest} (fingerprint {}) already accepted",
                    release.serial,
                    short(fingerprint)
                ),
            ));
        }
    }
    Ok(())
}

/// `not_before` ≤ `now_s` ≤ `not_after`.
fn check_window(release: &Release, now_s: u64) -> Result<(), LoadError> {
    if let Some(nb) = release.not_before.filter(|nb| now_s < *nb) {
        return Err(LoadError::refused(
            Refusal::NotYetValid,
            format!("valid from {nb}, now is {now_s}"),
        ));
    }
    if let Some(na) = release.not_after.filter(|na| now_s > *na) {
        return Err(LoadError::refused(
            Refusal::Expired,
            format!("valid until {na}, now is {now_s}"),
        ));
    }
    Ok(())
}

/// Attacker-supplied text for a log line: quoted and escaped, at most 64 characters.
pub fn quoted(text: &str) -> String {
    format!("{:?}", text.chars().take(64).collect::<String>())
}

/// The intended config of a workload: a version, a fingerprint or both.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intended {
    #[serde(default)]
    pub config_version: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl Intended {
    /// Whether `loaded` is what is intended. The fingerprint decides when
    /// given (it catches edits that keep the version label); a version alone
    /// counts only for a config signed by a trusted key.
    pub fn matches(&self, loaded: &Loaded) -> bool {
        self.matches_active(
            &loaded.fingerprint,
            loaded.config_version.as_deref(),
            loaded.label_trusted(),
        )
    }

    pub fn matches_active(
        &self,
        fingerprint: &str,
        version: Option<&str>,
        label_trusted: bool,
    ) -> bool {
        match (&self.fingerprint, &self.config_version) {
            (Some(f), _) => f == fingerprint,
            (None, Some(v)) => label_trusted && Some(v.as_str()) == version,
            (None, None) => false,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "version={} fingerprint={}",
            self.config_version
                .as_deref()
                .map_or_else(|| "unset".into(), quoted),
            self.fingerprint.as_deref().map_or("unset", short)
        )
    }
}

/// The first 12 hex digits: enough for humans and logs.
pub fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

/// Parses a plugin config, checks its signature against `env`, and splits
/// out the integrity and release sections. The settings that judge the config
/// come from `env` first, then from a config signed by a trusted key; an
/// unsigned config may set them only when `env` asks for no integrity at all.
pub fn load(bytes: &[u8], env: &IntegrityEnv) -> Result<Loaded, LoadError> {
    let StrictObject(mut config) = parse_json(bytes)?;
    let signature = match config.remove(SIGNATURE_KEY) {
        Some(v) => Some(
            serde_json::from_value::<SignatureConfig>(v)
                .map_err(|e| ConfigError::invalid(SIGNATURE_KEY, e.to_string()))?,
        ),
        None => None,
    };
    let canonical = to_canonical_bytes(&Value::Object(config.clone()))
        .map_err(|e| ConfigError::invalid("config", e.to_string()))?;
    let fingerprint = sha256_hex(&canonical);
    // Checked before the signature requirement: an unsigned attempt to set
    // what judges the config is the more telling refusal.
    if signature.is_none() && config.contains_key(INTEGRITY_KEY) && env.asks_for_integrity() {
        return Err(unsigned_integrity());
    }
    let signature = check_signature(signature, &canonical, env)?;
    let verified = matches!(signature, SignatureStatus::Verified { .. });

    let release = match config.remove(RELEASE_KEY) {
        Some(v) => Some(
            serde_json::from_value::<Release>(v)
                .map_err(|e| ConfigError::invalid(RELEASE_KEY, e.to_string()))?,
        ),
        None => None,
    };
    if verified && release.is_none() {
        return Err(LoadError::refused(
            Refusal::Unscoped,
            "a signed config must name its filter, workloads and serial (`meshguard sign --filter --workload --serial`)",
        ));
    }
    let integrity_origin = if verified {
        Origin::SignedConfig
    } else {
        Origin::Config
    };
    let integrity: Option<IntegrityConfig> = match config.remove(INTEGRITY_KEY) {
        Some(_) if !verified && env.asks_for_integrity() => return Err(unsigned_integrity()),
        Some(v) => Some(
            serde_json::from_value(v)
                .map_err(|e| ConfigError::invalid(INTEGRITY_KEY, e.to_string()))?,
        ),
        None => None,
    };
    let settings = compile_settings(integrity, integrity_origin, env)?;
    let config_version = match config.get("config_version") {
        Some(Value::String(v)) => Some(v.clone()),
        _ => None,
    };
    let intended_from_env = (env.intended_version.is_some() || env.intended_fingerprint.is_some())
        .then(|| Intended {
            config_version: env.intended_version.clone(),
            fingerprint: env.intended_fingerprint.clone(),
        });
    let filter_config = serde_json::to_vec(&Value::Object(config))
        .map_err(|e| ConfigError::invalid("config", e.to_string()))?;
    let loaded = Loaded {
        filter_config,
        fingerprint,
        config_version,
        signature,
        settings,
        intended_from_env,
        release: if verified { release } else { None },
    };
    if let Some(intended) = &loaded.intended_from_env {
        if loaded.settings.on_drift == OnDrift::Reject && !intended.matches(&loaded) {
            return Err(LoadError::Drift(format!(
                "active version={} fingerprint={} signature={}, intended {}",
                loaded
                    .config_version
                    .as_deref()
                    .map_or_else(|| "unset".into(), quoted),
                short(&loaded.fingerprint),
                loaded.signature,
                intended.describe()
            )));
        }
    }
    Ok(loaded)
}

fn unsigned_integrity() -> LoadError {
    LoadError::refused(
        Refusal::UnsignedIntegrity,
        "a config not signed by a trusted key may not carry an `integrity` section while the environment asks for integrity (a MESHGUARD_* integrity variable is set)",
    )
}

/// Why a signature does not make a document trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignatureProblem {
    Revoked(String),
    NotTrusted(String),
    Malformed(&'static str),
    Mismatch(String),
}

impl std::fmt::Display for SignatureProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Revoked(id) => write!(
                f,
                "signed with key {}, which is in MESHGUARD_REVOKED_KEYS",
                quoted(id)
            ),
            Self::NotTrusted(id) => write!(
                f,
                "signed with key {}, which is not in MESHGUARD_TRUSTED_KEYS",
                quoted(id)
            ),
            Self::Malformed(what) => f.write_str(what),
            Self::Mismatch(id) => write!(
                f,
                "the signature by key {} does not match the config (modified after signing?)",
                quoted(id)
            ),
        }
    }
}

/// Verifies a signature by `key_id` over `canonical` with the trusted,
/// unrevoked keys of `env`.
pub(crate) fn verify_signature(
    key_id: &str,
    ed25519: &str,
    canonical: &[u8],
    env: &IntegrityEnv,
) -> Result<(), SignatureProblem> {
    if env.is_revoked(key_id) {
        return Err(SignatureProblem::Revoked(key_id.into()));
    }
    let Some((_, key)) = env.trusted_keys.iter().find(|(id, _)| id == key_id) else {
        return Err(SignatureProblem::NotTrusted(key_id.into()));
    };
    let bytes = STANDARD
        .decode(ed25519)
        .map_err(|_| SignatureProblem::Malformed("signature.ed25519 is not base64"))?;
    let signature = Signature::from_slice(&bytes).map_err(|_| {
        SignatureProblem::Malformed("signature.ed25519 is not an ed25519 signature")
    })?;
    key.verify_strict(canonical, &signature)
        .map_err(|_| SignatureProblem::Mismatch(key_id.into()))
}

fn check_signature(
    signature: Option<SignatureConfig>,
    canonical: &[u8],
    env: &IntegrityEnv,
) -> Result<SignatureStatus, LoadError> {
    let Some(sig) = signature else {
        return if env.require_signature {
            Err(LoadError::Unauthorized(
                "the config is not signed and MESHGUARD_REQUIRE_SIGNATURE is true".into(),
            ))
        } else {
            Ok(SignatureStatus::Unsigned)
        };
    };
    if env.trusted_keys.is_empty() {
        return Ok(SignatureStatus::Unchecked { key_id: sig.key_id });
    }
    match verify_signature(&sig.key_id, &sig.ed25519, canonical, env) {
        Ok(()) => Ok(SignatureStatus::Verified { key_id: sig.key_id }),
        Err(p @ SignatureProblem::Revoked(_)) => {
            Err(LoadError::refused(Refusal::Revoked, p.to_string()))
        }
        Err(p) => Err(LoadError::Unauthorized(p.to_string())),
    }
}

fn compile_settings(
    c: Option<IntegrityConfig>,
    config_origin: Origin,
    env: &IntegrityEnv,
) -> Result<IntegritySettings, ConfigError> {
    let from_config = c.is_some();
    let c = c.unwrap_or_default();
    let pick = |env_set: bool, config_set: bool| {
        if env_set {
            Origin::Environment
        } else if config_set {
            config_origin
        } else {
            Origin::Default
        }
    };
    let origin = SettingsOrigin {
        on_drift: pick(env.on_drift.is_some(), from_config),
        health_paths: pick(env.health_paths.is_some(), !c.health_paths.is_empty()),
        source_of_truth: pick(env.source_of_truth.is_some(), c.source_of_truth.is_some()),
    };
    let health_paths = match &env.health_paths {
        Some(paths) => paths
            .iter()
            .enumerate()
            .map(|(i, p)| path_pattern(&format!("env MESHGUARD_HEALTH_PATHS[{i}]"), p))
            .collect::<Result<Vec<_>, _>>()?,
        None => c
            .health_paths
            .iter()
            .enumerate()
            .map(|(i, p)| path_pattern(&format!("integrity.health_paths[{i}]"), p))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if !(500..=599).contains(&c.quarantine_status) {
        return Err(ConfigError::invalid(
            "integrity.quarantine_status",
            format!("{} is not a 5xx status", c.quarantine_status),
        ));
    }
    let source_of_truth = match &env.source_of_truth {
        Some(json) => Some(compile_source(
            "env MESHGUARD_SOURCE_OF_TRUTH",
            parse_json(json.as_bytes()).map_err(|e| {
                ConfigError::invalid("env MESHGUARD_SOURCE_OF_TRUTH", e.to_string())
            })?,
        )?),
        None => match c.source_of_truth {
            Some(s) => Some(compile_source("integrity.source_of_truth", s)?),
            None => None,
        },
    };
    Ok(IntegritySettings {
        on_drift: env.on_drift.unwrap_or(c.on_drift),
        health_paths,
        quarantine_status: c.quarantine_status,
        source_of_truth,
        origin,
    })
}

fn compile_source(at: &str, s: SourceConfig) -> Result<SourceOfTruth, ConfigError> {
    if s.cluster.trim().is_empty() {
        return Err(ConfigError::invalid(
            format!("{at}.cluster"),
            "must name an Envoy cluster",
        ));
    }
    if !s.path.starts_with('/') {
        return Err(ConfigError::invalid(
            format!("{at}.path"),
            "must start with `/`",
        ));
    }
    if !(1_000..=3_600_000).contains(&s.poll_interval_ms) {
        return Err(ConfigError::invalid(
            format!("{at}.poll_interval_ms"),
            "must be between 1000 and 3600000",
        ));
    }
    if !(100..=60_000).contains(&s.timeout_ms) || s.timeout_ms >= s.poll_interval_ms {
        return Err(ConfigError::invalid(
            format!("{at}.timeout_ms"),
            "must be between 100 and 60000 and shorter than poll_interval_ms",
        ));
    }
    Ok(SourceOfTruth {
        cluster: s.cluster,
        authority: s.authority,
        path: s.path,
        poll_interval_ms: s.poll_interval_ms,
        timeout_ms: s.timeout_ms,
    })
}

/// The fingerprint of a config as `load` computes it (for the CLI and the
/// reference source of truth).
pub fn fingerprint(bytes: &[u8]) -> Result<String, ConfigError> {
    let StrictObject(mut config) = parse_json(bytes)?;
    config.remove(SIGNATURE_KEY);
    let canonical = to_canonical_bytes(&Value::Object(config))
        .map_err(|e| ConfigError::invalid("config", e.to_string()))?;
    Ok(sha256_hex(&canonical))
}

/// Returns the config with its `release` scope set to `release` and a
/// `signature` section over its canonical form (replacing any previous
/// signature). Output is pretty JSON.
pub fn sign_release(
    bytes: &[u8],
    release: &Release,
    key_id: &str,
    key: &SigningKey,
) -> Result<Vec<u8>, ConfigError> {
    let StrictObject(mut config) = parse_json(bytes)?;
    config.insert(
        RELEASE_KEY.into(),
        serde_json::to_value(release)
            .map_err(|e| ConfigError::invalid(RELEASE_KEY, e.to_string()))?,
    );
    let bytes = serde_json::to_vec(&Value::Object(config))
        .map_err(|e| ConfigError::invalid("config", e.to_string()))?;
    sign_config(&bytes, key_id, key)
}

/// Returns the JSON object with a `signature` section over its canonical form
/// (replacing any previous signature). Output is pretty JSON.
pub fn sign_config(bytes: &[u8], key_id: &str, key: &SigningKey) -> Result<Vec<u8>, ConfigError> {
    let StrictObject(mut config) = parse_json(bytes)?;
    config.remove(SIGNATURE_KEY);
    let canonical = to_canonical_bytes(&Value::Object(config.clone()))
        .map_err(|e| ConfigError::invalid("config", e.to_string()))?;
    let signature = key.sign(&canonical);
    config.insert(
        SIGNATURE_KEY.into(),
        serde_json::json!({"key_id": key_id, "ed25519": STANDARD.encode(signature.to_bytes())}),
    );
    serde_json::to_vec_pretty(&Value::Object(config))
        .map_err(|e| ConfigError::invalid("config", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &[u8] = br#"{"config_version": "v1", "rules": [], "integrity": {"on_drift": "quarantine", "health_paths": ["/healthz"]}}"#;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[42; 32])
    }

    fn release(serial: u64) -> Release {
        Release {
            filter: "identity".into(),
            workloads: vec!["default/backend".into()],
            serial,
            not_before: Some(100),
            not_after: Some(200),
            services: None,
        }
    }

    fn env_with_key(require: bool) -> IntegrityEnv {
        IntegrityEnv {
            trusted_keys: vec![("release".into(), key().verifying_key())],
            require_signature: require,
            ..IntegrityEnv::default()
        }
    }

    #[test]
    fn the_filter_gets_its_own_keys_and_the_fingerprint_covers_everything_but_the_signature() {
        let loaded = load(CONFIG, &IntegrityEnv::default()).unwrap();
        let filter: Value = serde_json::from_slice(&loaded.filter_config).unwrap();
        assert_eq!(
            filter,
            serde_json::json!({"config_version": "v1", "rules": []})
        );
        assert_eq!(loaded.config_version.as_deref(), Some("v1"));
        assert_eq!(loaded.settings.on_drift, OnDrift::Quarantine);
        assert!(loaded.settings.is_health_path("/healthz"));
        assert_eq!(loaded.fingerprint, fingerprint(CONFIG).unwrap());
        // Spacing and key order do not change the fingerprint; any value does.
        let reordered = br#"{"integrity": {"health_paths": ["/healthz"], "on_drift": "quarantine"}, "rules": [], "config_version": "v1"}"#;
        assert_eq!(fingerprint(reordered).unwrap(), loaded.fingerprint);
        let edited = br#"{"config_version": "v1", "rules": [], "integrity": {"on_drift": "report", "health_paths": ["/healthz"]}}"#;
        assert_ne!(fingerprint(edited).unwrap(), loaded.fingerprint);
        assert_eq!(loaded.signature, SignatureStatus::Unsigned);
    }

    #[test]
    fn signatures_are_verified_against_trusted_keys_only() {
        let signed = sign_release(CONFIG, &release(1), "release", &key()).unwrap();
        let loaded = load(&signed, &env_with_key(true)).unwrap();
        assert_eq!(
            loaded.signature,
            SignatureStatus::Verified {
                key_id: "release".into()
            }
        );
        assert_eq!(
            loaded.fingerprint,
            fingerprint(&signed).unwrap(),
            "signing does not change the fingerprint"
        );

        let tampered = String::from_utf8(signed.clone())
            .unwrap()
            .replace("quarantine", "report");
        let other_key = sign_release(
            CONFIG,
            &release(1),
            "release",
            &SigningKey::from_bytes(&[1; 32]),
        )
        .unwrap();
        let unknown_id = sign_release(CONFIG, &release(1), "someone", &key()).unwrap();
        let cases: [(&[u8], &str); 4] = [
            (
                tampered.as_bytes(),
                "does not match the config (modified after signing?)",
            ),
            (&other_key, "does not match the config"),
            (
                &unknown_id,
                "signed with key \"someone\", which is not in MESHGUARD_TRUSTED_KEYS",
            ),
            (
                br#"{"rules": []}"#,
                "the config is not signed and MESHGUARD_REQUIRE_SIGNATURE is true",
            ),
        ];
        for (bytes, want) in cases {
            let err = load(bytes, &env_with_key(true)).unwrap_err();
            assert!(matches!(err, LoadError::Unauthorized(_)), "{err}");
            assert_eq!(err.result_label(), "unauthorized");
            assert!(err.to_string().contains(want), "{err} / {want}");
        }
        // A bad signature is refused even when signatures are optional.
        assert!(load(tampered.as_bytes(), &env_with_key(false)).is_err());
        // Unsigned is fine when not required, without judging settings.
        assert_eq!(
            load(br#"{"rules": []}"#, &env_with_key(false))
                .unwrap()
                .signature,
            SignatureStatus::Unsigned
        );
    }

    #[test]
    fn an_unsigned_config_never_sets_what_judges_it_when_the_environment_asks_for_integrity() {
        let widening = [
            &br#"{"integrity": {"health_paths": ["/*"]}}"#[..],
            br#"{"integrity": {"on_drift": "report"}}"#,
            br#"{"integrity": {"source_of_truth": {"cluster": "attacker", "path": "/"}}}"#,
            br#"{"integrity": {}}"#,
        ];
        let envs = [
            env_with_key(false),
            IntegrityEnv {
                intended_fingerprint: Some("0".repeat(64)),
                ..IntegrityEnv::default()
            },
            IntegrityEnv {
                health_paths: Some(vec!["/healthz".into()]),
                ..IntegrityEnv::default()
            },
        ];
        for env in &envs {
            for config in widening {
                let err = load(config, env).unwrap_err();
                assert_eq!(err.result_label(), "unsigned_integrity", "{err}");
            }
        }
        // A config signed by a trusted key may set them; the environment still wins.
        let env = IntegrityEnv {
            health_paths: Some(vec!["/ready".into()]),
            on_drift: Some(OnDrift::Quarantine),
            ..env_with_key(true)
        };
        let signed = sign_release(
            br#"{"integrity": {"health_paths": ["/*"], "on_drift": "report"}}"#,
            &release(1),
            "release",
            &key(),
        )
        .unwrap();
        let loaded = load(&signed, &env).unwrap();
        assert!(!loaded.settings.is_health_path("/api"));
        assert!(loaded.settings.is_health_path("/ready"));
        assert_eq!(loaded.settings.on_drift, OnDrift::Quarantine);
        assert_eq!(loaded.settings.origin.health_paths, Origin::Environment);
        // With no integrity environment at all, the config's own section applies.
        let dev = load(CONFIG, &IntegrityEnv::default()).unwrap();
        assert_eq!(dev.settings.origin.on_drift, Origin::Config);
    }

    #[test]
    fn a_signed_config_is_admitted_only_in_its_scope_and_never_rolled_back() {
        let signed = sign_release(CONFIG, &release(5), "release", &key()).unwrap();
        let loaded = load(&signed, &env_with_key(true)).unwrap();
        let fp = loaded.fingerprint.clone();
        let at = Admission {
            filter: "identity",
            workload: Some("default/backend"),
            now_s: 150,
            newest: None,
            admitted_here: false,
        };
        admit(&loaded, &env_with_key(true), &at).unwrap();
        let newest_same = Admission {
            newest: Some((5, &fp)),
            ..at
        };
        admit(&loaded, &env_with_key(true), &newest_same).unwrap();
        // The config this proxy already runs loads again in a VM Envoy
        // creates later, whatever the time: its window was judged when it
        // was first accepted here.
        for now_s in [99, 201, u64::MAX] {
            admit(
                &loaded,
                &env_with_key(true),
                &Admission {
                    now_s,
                    ..newest_same
                },
            )
            .unwrap();
        }
        let other = "0".repeat(64);
        // Admitted here before: a later VM loads it whatever the time and
        // whatever serial arrived since (the superseded check refuses its
        // traffic then, with a stable reason).
        admit(
            &loaded,
            &env_with_key(true),
            &Admission {
                now_s: 201,
                newest: Some((9, &other)),
                admitted_here: true,
                ..at
            },
        )
        .unwrap();
        let min = IntegrityEnv {
            min_serial: Some(6),
            ..env_with_key(true)
        };
        let cases: [(&str, Admission<'_>, &IntegrityEnv, &str); 11] = [
            (
                "another filter",
                Admission {
                    filter: "masking",
                    ..at
                },
                &env_with_key(true),
                "wrong_filter",
            ),
            (
                "another workload",
                Admission {
                    workload: Some("default/frontend"),
                    ..at
                },
                &env_with_key(true),
                "wrong_workload",
            ),
            (
                "a proxy without node metadata",
                Admission {
                    workload: None,
                    ..at
                },
                &env_with_key(true),
                "wrong_workload",
            ),
            (
                "before not_before",
                Admission { now_s: 99, ..at },
                &env_with_key(true),
                "not_yet_valid",
            ),
            (
                "after not_after",
                Admission { now_s: 201, ..at },
                &env_with_key(true),
                "expired",
            ),
            (
                "an older serial",
                Admission {
                    newest: Some((6, &other)),
                    ..at
                },
                &env_with_key(true),
                "rollback",
            ),
            (
                "the same serial, another config",
                Admission {
                    newest: Some((5, &other)),
                    ..at
                },
                &env_with_key(true),
                "rollback",
            ),
            ("a serial below the floor", at, &min, "below_minimum"),
            (
                "the config this proxy runs, in a VM with a raised floor",
                Admission {
                    newest: Some((5, &fp)),
                    ..at
                },
                &min,
                "below_minimum",
            ),
            (
                "another config at the serial this proxy runs, after not_after",
                Admission {
                    now_s: 201,
                    newest: Some((5, &other)),
                    ..at
                },
                &env_with_key(true),
                "expired",
            ),
            (
                "a newer serial than this proxy runs, after not_after",
                Admission {
                    now_s: 201,
                    newest: Some((4, &fp)),
                    ..at
                },
                &env_with_key(true),
                "expired",
            ),
        ];
        for (what, at, env, want) in cases {
            let err = admit(&loaded, env, &at).unwrap_err();
            assert_eq!(err.result_label(), want, "{what}: {err}");
        }
        // Serials stay in range: a release far ahead would lock out every
        // later one until a restart. Beyond 2^53 - 1 the signer refuses
        // already: canonical JSON (RFC 8785) cannot write the serial exactly.
        for serial in [MAX_SERIAL + 1, u64::MAX] {
            let err = sign_release(CONFIG, &release(serial), "release", &key()).unwrap_err();
            assert!(err.to_string().contains("out of range"), "{err}");
        }
        for (serial, newest, want) in [
            (MAX_SERIAL, None, None),
            (
                5 + MAX_SERIAL_STEP + 1,
                Some(5),
                Some("serial_out_of_range"),
            ),
            (5 + MAX_SERIAL_STEP, Some(5), None),
        ] {
            let signed = sign_release(CONFIG, &release(serial), "release", &key()).unwrap();
            let loaded = load(&signed, &env_with_key(true)).unwrap();
            let got = admit(
                &loaded,
                &env_with_key(true),
                &Admission {
                    newest: newest.map(|n| (n, other.as_str())),
                    ..at
                },
            );
            assert_eq!(got.err().map(|e| e.result_label()), want, "serial {serial}");
        }
        // Unscoped signed configs and revoked keys are refused at load.
        let unscoped = sign_config(CONFIG, "release", &key()).unwrap();
        assert_eq!(
            load(&unscoped, &env_with_key(true))
                .unwrap_err()
                .result_label(),
            "unscoped"
        );
        let revoked = IntegrityEnv {
            revoked_keys: vec!["release".into()],
            ..env_with_key(true)
        };
        assert_eq!(
            load(&signed, &revoked).unwrap_err().result_label(),
            "revoked"
        );
        // Namespace wildcards.
        let r = Release {
            workloads: vec!["team-a/*".into()],
            ..release(1)
        };
        assert!(r.covers("team-a/orders"));
        assert!(!r.covers("team-ab/orders"));
        assert!(!r.covers("team-a/"));
    }

    #[test]
    fn intended_versions_match_by_fingerprint_first() {
        let loaded = load(CONFIG, &IntegrityEnv::default()).unwrap();
        let fp = loaded.fingerprint.clone();
        let other = "0".repeat(64);
        let cases = [
            (Some("v1"), None, false),
            (Some("v2"), None, false),
            (None, Some(fp.as_str()), true),
            (Some("v1"), Some(other.as_str()), false),
            (Some("v2"), Some(fp.as_str()), true),
        ];
        for (version, fingerprint, want) in cases {
            let intended = Intended {
                config_version: version.map(Into::into),
                fingerprint: fingerprint.map(Into::into),
            };
            assert_eq!(intended.matches(&loaded), want, "{intended:?}");
        }
    }

    #[test]
    fn on_drift_reject_refuses_a_config_that_is_not_the_intended_one() {
        let env = IntegrityEnv {
            intended_version: Some("v2".into()),
            ..IntegrityEnv::default()
        };
        let reject = br#"{"config_version": "v1", "integrity": {"on_drift": "reject"}}"#;
        let err = load(reject, &IntegrityEnv::default()).map(|_| ());
        assert!(err.is_ok(), "nothing intended, nothing to reject");
        // Report loads it; the monitor reports the drift.
        load(br#"{"config_version": "v1"}"#, &env).unwrap();
        // The environment can force reject.
        let forced = IntegrityEnv {
            on_drift: Some(OnDrift::Reject),
            ..env
        };
        let err = load(br#"{"config_version": "v1"}"#, &forced).unwrap_err();
        assert_eq!(err.result_label(), "drift_rejected");
        assert!(err.to_string().contains("active version=\"v1\""), "{err}");
    }

    #[test]
    fn bad_integrity_sections_are_refused_precisely() {
        for (config, want) in [
            (&br#"{"integrity": {"on_drift": "panic"}}"#[..], "integrity: unknown variant `panic`"),
            (br#"{"integrity": {"health_paths": ["healthz"]}}"#, "integrity.health_paths[0]: \"healthz\" must start with `/`"),
            (br#"{"integrity": {"quarantine_status": 403}}"#, "integrity.quarantine_status: 403 is not a 5xx status"),
            (
                br#"{"integrity": {"source_of_truth": {"cluster": "x", "path": "/v", "poll_interval_ms": 10}}}"#,
                "integrity.source_of_truth.poll_interval_ms: must be between 1000 and 3600000",
            ),
            (
                br#"{"integrity": {"source_of_truth": {"cluster": "x", "path": "v"}}}"#,
                "integrity.source_of_truth.path: must start with `/`",
            ),
            (br#"{"signature": {"key_id": "a"}}"#, "signature: missing field `ed25519`"),
        ] {
            let err = load(config, &IntegrityEnv::default()).unwrap_err().to_string();
            assert!(err.contains(want), "{err} / {want}");
        }
    }
}
