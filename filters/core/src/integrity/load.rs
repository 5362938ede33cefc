//! Loading a plugin config: signature, fingerprint, integrity section.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::Deserialize;
use serde_json::Value;

use super::env::{is_fingerprint, IntegrityEnv};
use crate::canonical::{sha256_hex, to_canonical_bytes};
use crate::config::{parse_json, ConfigError, StrictObject};
use crate::pattern::PathPattern;
use crate::scope::path_pattern;

const SIGNATURE_KEY: &str = "signature";
const INTEGRITY_KEY: &str = "integrity";

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
}

impl LoadError {
    /// The `result` label of `meshguard_config_loads_total`.
    pub fn result_label(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "refused",
            Self::Unauthorized(_) => "unauthorized",
            Self::Drift(_) => "drift_rejected",
        }
    }
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
    /// Parses a source-of-truth answer: `{"config_version": "...", "fingerprint": "..."}`.
    pub fn from_response(body: &[u8]) -> Result<Self, ConfigError> {
        let intended: Self = parse_json(body)?;
        if let Some(f) = &intended.fingerprint {
            if !is_fingerprint(f) {
                return Err(ConfigError::invalid(
                    "fingerprint",
                    "is not a lowercase hex SHA-256",
                ));
            }
        }
        if intended.config_version.is_none() && intended.fingerprint.is_none() {
            return Err(ConfigError::invalid(
                "config",
                "names neither config_version nor fingerprint",
            ));
        }
        Ok(intended)
    }

    /// Whether `loaded` is what is intended. The fingerprint decides when
    /// given (it catches edits that keep the version label); else the version.
    pub fn matches(&self, loaded: &Loaded) -> bool {
        self.matches_active(&loaded.fingerprint, loaded.config_version.as_deref())
    }

    pub fn matches_active(&self, fingerprint: &str, version: Option<&str>) -> bool {
        match (&self.fingerprint, &self.config_version) {
            (Some(f), _) => f == fingerprint,
            (None, Some(v)) => Some(v.as_str()) == version,
            (None, None) => true,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "version={} fingerprint={}",
            self.config_version.as_deref().unwrap_or("unset"),
            self.fingerprint.as_deref().map_or("unset", short)
        )
    }
}

/// The first 12 hex digits: enough for humans and logs.
pub fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

/// Parses a plugin config, checks its signature against `env`, and splits
/// out the integrity section.
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
    let signature = check_signature(signature, &canonical, env)?;

    let integrity: IntegrityConfig = match config.remove(INTEGRITY_KEY) {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| ConfigError::invalid(INTEGRITY_KEY, e.to_string()))?,
        None => IntegrityConfig::default(),
    };
    let settings = compile_settings(integrity, env)?;
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
    };
    if let Some(intended) = &loaded.intended_from_env {
        if loaded.settings.on_drift == OnDrift::Reject && !intended.matches(&loaded) {
            return Err(LoadError::Drift(format!(
                "active version={} fingerprint={}, intended {}",
                loaded.config_version.as_deref().unwrap_or("unset"),
                short(&loaded.fingerprint),
                intended.describe()
            )));
        }
    }
    Ok(loaded)
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
    let Some((_, key)) = env.trusted_keys.iter().find(|(id, _)| *id == sig.key_id) else {
        return Err(LoadError::Unauthorized(format!(
            "signed with key {:?}, which is not in MESHGUARD_TRUSTED_KEYS",
            sig.key_id
        )));
    };
    let bytes = STANDARD
        .decode(&sig.ed25519)
        .map_err(|_| LoadError::Unauthorized("signature.ed25519 is not base64".into()))?;
    let signature = Signature::from_slice(&bytes).map_err(|_| {
        LoadError::Unauthorized("signature.ed25519 is not an ed25519 signature".into())
    })?;
    key.verify_strict(canonical, &signature).map_err(|_| {
        LoadError::Unauthorized(format!(
            "the signature by key {:?} does not match the config (modified after signing?)",
            sig.key_id
        ))
    })?;
    Ok(SignatureStatus::Verified { key_id: sig.key_id })
}

fn compile_settings(
    c: IntegrityConfig,
    env: &IntegrityEnv,
) -> Result<IntegritySettings, ConfigError> {
    let health_paths = c
        .health_paths
        .iter()
        .enumerate()
        .map(|(i, p)| path_pattern(&format!("integrity.health_paths[{i}]"), p))
        .collect::<Result<Vec<_>, _>>()?;
    if !(500..=599).contains(&c.quarantine_status) {
        return Err(ConfigError::invalid(
            "integrity.quarantine_status",
            format!("{} is not a 5xx status", c.quarantine_status),
        ));
    }
    let source_of_truth = match c.source_of_truth {
        None => None,
        Some(s) => {
            let at = "integrity.source_of_truth";
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
            Some(SourceOfTruth {
                cluster: s.cluster,
                authority: s.authority,
                path: s.path,
                poll_interval_ms: s.poll_interval_ms,
                timeout_ms: s.timeout_ms,
            })
        }
    };
    Ok(IntegritySettings {
        on_drift: env.on_drift.unwrap_or(c.on_drift),
        health_paths,
        quarantine_status: c.quarantine_status,
        source_of_truth,
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

/// Returns the config with a `signature` section over its canonical form
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
        let signed = sign_config(CONFIG, "release", &key()).unwrap();
        let loaded = load(&signed, &env_with_key(true)).unwrap();
        assert_eq!(
            loaded.signature,
            SignatureStatus::Verified {
                key_id: "release".into()
            }
        );
        assert_eq!(
            loaded.fingerprint,
            fingerprint(CONFIG).unwrap(),
            "signing does not change the fingerprint"
        );

        let tampered = String::from_utf8(signed.clone())
            .unwrap()
            .replace("quarantine", "report");
        let other_key = sign_config(CONFIG, "release", &SigningKey::from_bytes(&[1; 32])).unwrap();
        let unknown_id = sign_config(CONFIG, "someone", &key()).unwrap();
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
                CONFIG,
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
        // Unsigned is fine when not required.
        assert_eq!(
            load(CONFIG, &env_with_key(false)).unwrap().signature,
            SignatureStatus::Unsigned
        );
    }

    #[test]
    fn intended_versions_match_by_fingerprint_first() {
        let loaded = load(CONFIG, &IntegrityEnv::default()).unwrap();
        let fp = loaded.fingerprint.clone();
        let other = "0".repeat(64);
        let cases = [
            (Some("v1"), None, true),
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
        let err = load(reject, &env).unwrap_err();
        assert_eq!(err.result_label(), "drift_rejected");
        assert!(err.to_string().contains("active version=v1"), "{err}");
        // Report loads it; the monitor reports the drift.
        load(br#"{"config_version": "v1"}"#, &env).unwrap();
        // The environment can force reject.
        let forced = IntegrityEnv {
            on_drift: Some(OnDrift::Reject),
            ..env
        };
        assert!(load(br#"{"config_version": "v1"}"#, &forced).is_err());
    }

    #[test]
    fn source_of_truth_answers_are_validated() {
        assert!(Intended::from_response(br#"{"config_version": "v3"}"#).is_ok());
        for (body, want) in [
            (
                &br#"{}"#[..],
                "names neither config_version nor fingerprint",
            ),
            (
                br#"{"fingerprint": "xyz"}"#,
                "fingerprint: is not a lowercase hex SHA-256",
            ),
            (br#"{"version": "v3"}"#, "unknown field `version`"),
            (b"<html>", "expected a JSON object"),
        ] {
            let err = Intended::from_response(body).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
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
