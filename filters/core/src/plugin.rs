//! One meshguard plugin: which sections its config carries, and their compiled
//! form. Every host (the proxy-wasm module, the CLI) compiles a plugin config
//! here, so they cannot disagree on what a config means.
//!
//! A plugin runs any of three sections, always in this order on a request:
//! `identity` (may refuse the caller), `masking` (rewrites what crosses),
//! `audit` (hashes and records what masking left). Two config shapes exist:
//!
//! - **combined** (root id `meshguard`, or none): one object whose keys
//!   `identity`, `masking` and `audit` hold each section's keys, exactly as a
//!   single-section plugin spells them, beside the plugin-wide `config_version`,
//!   `path_normalization`, `integrity`, `release` and `signature`;
//! - **single section** (root ids `meshguard-identity`, `meshguard-masking`,
//!   `meshguard-audit`, as the three separate plugins have always been
//!   deployed): the section's keys at the top level.

use serde_json::{Map, Value};

use crate::audit::{AuditConfig, AuditPolicy, SealKey};
use crate::canonical::{sha256_hex, to_canonical_bytes};
use crate::config::{check_config_version, parse_json, ConfigError, StrictObject};
use crate::identity::config::IdentityConfig;
use crate::identity::IdentityPolicy;
use crate::masking::{MaskingConfig, MaskingPolicy};
use crate::path::PathNormalization;

/// The proxy-level path normalization every meshguard plugin of a proxy
/// shares (`valueFrom: HOST`): set it, and no two plugins can read one path
/// two ways.
pub const PATH_NORMALIZATION_ENV: &str = "MESHGUARD_PATH_NORMALIZATION";

/// A part of the pipeline, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    Identity,
    Masking,
    Audit,
}

impl Section {
    /// Every section, in the order a request meets them.
    pub const ALL: [Self; 3] = [Self::Identity, Self::Masking, Self::Audit];

    /// The section's key in a combined config, and its `filter` metric label
    /// when it runs as a plugin of its own.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Masking => "masking",
            Self::Audit => "audit",
        }
    }

    /// The Envoy root id (Istio `pluginName`) of the single-section plugin.
    pub fn root_id(self) -> &'static str {
        match self {
            Self::Identity => "meshguard-identity",
            Self::Masking => "meshguard-masking",
            Self::Audit => "meshguard-audit",
        }
    }
}

/// Which config shape a plugin reads, decided by its root id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Sections under their own keys.
    Combined,
    /// One section's keys at the top level.
    Single(Section),
}

/// The root id (Istio `pluginName`) of the combined plugin.
pub const COMBINED_ROOT_ID: &str = "meshguard";

/// The `filter` label of the combined plugin (metrics, release scopes, logs).
pub const COMBINED_FILTER: &str = "meshguard";

impl Shape {
    /// The shape a root id selects: a single-section root id (with or without
    /// the `meshguard-` prefix), else the combined config.
    pub fn from_root_id(root_id: &str) -> Self {
        let name = root_id.strip_prefix("meshguard-").unwrap_or(root_id);
        Section::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .map_or(Self::Combined, Self::Single)
    }

    /// The plugin's name in logs, the `filter` metric label and release scopes.
    pub fn filter(self) -> &'static str {
        match self {
            Self::Combined => COMBINED_FILTER,
            Self::Single(section) => section.as_str(),
        }
    }
}

/// The audit section with the key its `key_env` names, read once as its
/// `algorithm` says (an HMAC secret with its schedule done, or an Ed25519
/// private key).
#[derive(Debug)]
pub struct AuditSection {
    pub policy: AuditPolicy,
    pub key: SealKey,
}

/// A plugin config, compiled: the sections it runs and the one path
/// normalization of its request view.
#[derive(Debug)]
pub struct Plugin {
    pub shape: Shape,
    pub identity: Option<IdentityPolicy>,
    pub masking: Option<MaskingPolicy>,
    pub audit: Option<AuditSection>,
    /// How every section reads the request path.
    pub path_normalization: PathNormalization,
    /// Each section's fingerprint (hex SHA-256 of its canonical JSON), so that
    /// drift can say which section differs.
    pub section_fingerprints: Vec<(Section, String)>,
}

/// How [`Plugin::compile`] treats a secret the config names by variable
/// (`masking.hash_key_env`, `audit.key_env`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// Read it, and refuse a config whose secret is missing or malformed:
    /// what the proxy does.
    Require,
    /// Take it as provided by the proxy (`valueFrom: HOST`) and check
    /// nothing about it: what `meshguard validate` does for a variable the
    /// proxy provides.
    ProvidedByProxy,
}

/// How [`Plugin::compile`] obtains each secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secrets {
    pub hash_key: KeyCheck,
    pub audit_key: KeyCheck,
}

impl Secrets {
    /// Every secret read and checked: the proxy.
    pub const REQUIRE: Self = Self {
        hash_key: KeyCheck::Require,
        audit_key: KeyCheck::Require,
    };
    /// Every secret taken as the proxy's.
    pub const PROVIDED_BY_PROXY: Self = Self {
        hash_key: KeyCheck::ProvidedByProxy,
        audit_key: KeyCheck::ProvidedByProxy,
    };
}

/// The keys a combined config may carry besides its sections (the integrity
/// keys are removed by `integrity::load` before compiling).
const COMBINED_KEYS: [&str; 5] = [
    "identity",
    "masking",
    "audit",
    "config_version",
    "path_normalization",
];

impl Plugin {
    /// Compiles the config `integrity::load` handed over (`filter_config`),
    /// reading variables through `env` (the proxy's environment).
    pub fn compile(
        filter_config: &[u8],
        shape: Shape,
        env: &dyn Fn(&str) -> Option<String>,
        secrets: Secrets,
    ) -> Result<Self, ConfigError> {
        let raw = split(filter_config, shape)?;
        let proxy = proxy_normalization(env)?;
        let explicit = explicit_normalizations(&raw)?;
        let path_normalization = resolve_normalization(proxy, &explicit, shape)?;
        let mut plugin = Self {
            shape,
            identity: None,
            masking: None,
            audit: None,
            path_normalization,
            section_fingerprints: Vec::new(),
        };
        for (section, value) in raw.sections {
            let at = |e: ConfigError| match shape {
                Shape::Combined => e.within(section.as_str()),
                Shape::Single(_) => e,
            };
            let fingerprint = to_canonical_bytes(&value)
                .map(|c| sha256_hex(&c))
                .map_err(|e| at(ConfigError::invalid("config", e.to_string())))?;
            plugin.section_fingerprints.push((section, fingerprint));
            // The section compiles from its own value below.
            match section {
                Section::Identity => {
                    let mut config: IdentityConfig = from_value(value).map_err(at)?;
                    config.path_normalization = Some(path_normalization);
                    plugin.identity = Some(IdentityPolicy::compile(config).map_err(at)?);
                }
                Section::Masking => {
                    let mut config: MaskingConfig = from_value(value).map_err(at)?;
                    config.path_normalization = Some(path_normalization);
                    let key = match secrets.hash_key {
                        KeyCheck::Require => env(&config.hash_key_env).filter(|k| !k.is_empty()),
                        // Any non-empty key stands for the proxy's.
                        KeyCheck::ProvidedByProxy => Some("provided-by-the-proxy".to_owned()),
                    };
                    plugin.masking = Some(
                        MaskingPolicy::compile(config, key.as_deref().map(str::as_bytes))
                            .map_err(at)?,
                    );
                }
                Section::Audit => {
                    let mut config: AuditConfig = from_value(value).map_err(at)?;
                    config.path_normalization = Some(path_normalization);
                    let policy = AuditPolicy::compile(config).map_err(at)?;
                    let key = match secrets.audit_key {
                        // An environment variable, not a config key: no section prefix.
                        KeyCheck::Require => policy.key_from_env(env)?,
                        KeyCheck::ProvidedByProxy => SealKey::placeholder(policy.algorithm()),
                    };
                    plugin.audit = Some(AuditSection { policy, key });
                }
            }
        }
        Ok(plugin)
    }

    /// The sections this plugin runs, in request order.
    pub fn sections(&self) -> impl Iterator<Item = Section> + '_ {
        self.section_fingerprints.iter().map(|(s, _)| *s)
    }
}

/// Each section's fingerprint (hex SHA-256 of its canonical JSON) in the
/// config `integrity::load` handed over, without compiling anything: what
/// `meshguard publish` puts in an intended document so that drift says
/// which section differs.
pub fn section_fingerprints(
    filter_config: &[u8],
    shape: Shape,
) -> Result<Vec<(Section, String)>, ConfigError> {
    split(filter_config, shape)?
        .sections
        .into_iter()
        .map(|(section, value)| {
            let canonical = to_canonical_bytes(&value)
                .map_err(|e| ConfigError::invalid(section.as_str(), e.to_string()))?;
            Ok((section, sha256_hex(&canonical)))
        })
        .collect()
}

impl Section {
    /// The section named `name` (`identity`, `masking`, `audit`).
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ConfigError> {
    // Through the same parser as a plugin config of its own: the same JSON
    // paths in errors, the same refusal of unknown keys.
    let bytes =
        serde_json::to_vec(&value).map_err(|e| ConfigError::invalid("config", e.to_string()))?;
    parse_json(&bytes)
}

/// A config split into its sections (in request order).
struct RawPlugin {
    sections: Vec<(Section, Value)>,
    /// The combined config's own `path_normalization`.
    path_normalization: Option<PathNormalization>,
}

fn split(filter_config: &[u8], shape: Shape) -> Result<RawPlugin, ConfigError> {
    let StrictObject(object) = parse_json(filter_config)?;
    match shape {
        Shape::Single(section) => Ok(RawPlugin {
            sections: vec![(section, Value::Object(object))],
            path_normalization: None,
        }),
        Shape::Combined => split_combined(object),
    }
}

fn split_combined(mut object: Map<String, Value>) -> Result<RawPlugin, ConfigError> {
    if let Some(key) = object.keys().find(|k| !COMBINED_KEYS.contains(&k.as_str())) {
        return Err(ConfigError::invalid(
            crate::logsafe::quote(key),
            format!(
                "unknown key of the meshguard plugin config; expected one of {} (plus integrity, release, signature)",
                COMBINED_KEYS.join(", ")
            ),
        ));
    }
    match object.remove("config_version") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) => check_config_version(Some(&v))?,
        Some(_) => return Err(ConfigError::invalid("config_version", "expected a string")),
    }
    let path_normalization = match object.remove("path_normalization") {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<PathNormalization>(v)
                .map_err(|e| ConfigError::invalid("path_normalization", e.to_string()))?,
        ),
    };
    let mut sections = Vec::new();
    for section in Section::ALL {
        match object.remove(section.as_str()) {
            None => {}
            Some(value @ Value::Object(_)) => sections.push((section, value)),
            Some(_) => {
                return Err(ConfigError::invalid(
                    section.as_str(),
                    "expected an object with the section's keys",
                ))
            }
        }
    }
    if sections.is_empty() {
        return Err(ConfigError::invalid(
            "config",
            "the meshguard plugin config names no section: give at least one of identity, masking, audit",
        ));
    }
    Ok(RawPlugin {
        sections,
        path_normalization,
    })
}

/// `MESHGUARD_PATH_NORMALIZATION`, when the proxy sets it.
fn proxy_normalization(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<PathNormalization>, ConfigError> {
    let Some(text) = env(PATH_NORMALIZATION_ENV).filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    serde_json::from_value(Value::String(text.trim().to_owned()))
        .map(Some)
        .map_err(|_| {
            ConfigError::invalid(
                format!("env {PATH_NORMALIZATION_ENV}"),
                format!(
                    "{} is not NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES",
                    crate::logsafe::quote(&text)
                ),
            )
        })
}

/// Every `path_normalization` the config spells out, with where.
fn explicit_normalizations(
    raw: &RawPlugin,
) -> Result<Vec<(String, PathNormalization)>, ConfigError> {
    let mut found = Vec::new();
    if let Some(n) = raw.path_normalization {
        found.push(("path_normalization".to_owned(), n));
    }
    for (section, value) in &raw.sections {
        if let Some(v) = value.get("path_normalization").filter(|v| !v.is_null()) {
            let at = format!("{}.path_normalization", section.as_str());
            let n = serde_json::from_value::<PathNormalization>(v.clone())
                .map_err(|e| ConfigError::invalid(&at, e.to_string()))?;
            found.push((at, n));
        }
    }
    Ok(found)
}

/// One normalization for the whole request view: the proxy's when it sets
/// one, else the one the config spells (every spelling must agree), else the
/// default. A config that spells another one than the proxy is refused rather
/// than silently read another way.
fn resolve_normalization(
    proxy: Option<PathNormalization>,
    explicit: &[(String, PathNormalization)],
    shape: Shape,
) -> Result<PathNormalization, ConfigError> {
    let local = |at: &str| match shape {
        // A single-section config spells its key at the top level.
        Shape::Single(section) => at
            .strip_prefix(section.as_str())
            .and_then(|a| a.strip_prefix('.'))
            .unwrap_or(at)
            .to_owned(),
        Shape::Combined => at.to_owned(),
    };
    if let Some(proxy) = proxy {
        if let Some((at, n)) = explicit.iter().find(|(_, n)| *n != proxy) {
            return Err(ConfigError::invalid(
                local(at),
                format!(
                    "{} differs from the proxy's {PATH_NORMALIZATION_ENV}={}: every meshguard plugin of a proxy reads a path one way",
                    n.as_str(),
                    proxy.as_str()
                ),
            ));
        }
        return Ok(proxy);
    }
    let mut chosen: Option<(&str, PathNormalization)> = None;
    for (at, n) in explicit {
        match chosen {
            Some((first, c)) if c != *n => {
                return Err(ConfigError::Contradiction {
                    at: local(at),
                    other: local(first),
                    problem: format!(
                        "{} against {}: every section judges one canonical path",
                        n.as_str(),
                        c.as_str()
                    ),
                })
            }
            Some(_) => {}
            None => chosen = Some((at, *n)),
        }
    }
    Ok(chosen.map(|(_, n)| n).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "bWVzaGd1YXJkLXRlc3QtYXVkaXQta2V5LTMyYnl0ZXM=";

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn compile(
        json: &str,
        shape: Shape,
        vars: &'static [(&'static str, &'static str)],
    ) -> Result<Plugin, String> {
        Plugin::compile(json.as_bytes(), shape, &env(vars), Secrets::REQUIRE)
            .map_err(|e| e.to_string())
    }

    const AUDIT: &[(&str, &str)] = &[("MESHGUARD_AUDIT_KEY", KEY)];

    #[test]
    fn root_ids_select_the_config_shape() {
        for (root_id, shape) in [
            ("meshguard", Shape::Combined),
            ("", Shape::Combined),
            ("anything-else", Shape::Combined),
            ("meshguard-identity", Shape::Single(Section::Identity)),
            ("meshguard-masking", Shape::Single(Section::Masking)),
            ("meshguard-audit", Shape::Single(Section::Audit)),
            ("audit", Shape::Single(Section::Audit)),
        ] {
            assert_eq!(Shape::from_root_id(root_id), shape, "{root_id:?}");
        }
        assert_eq!(Shape::Combined.filter(), "meshguard");
        assert_eq!(Shape::Single(Section::Masking).filter(), "masking");
    }

    #[test]
    fn a_combined_config_runs_the_sections_it_names_in_request_order() {
        let plugin = compile(
            r#"{"audit": {"key_id": "k", "commands": []}, "identity": {"default_action": "allow"}}"#,
            Shape::Combined,
            AUDIT,
        )
        .unwrap();
        assert_eq!(
            plugin.sections().collect::<Vec<_>>(),
            [Section::Identity, Section::Audit]
        );
        assert!(plugin.identity.is_some() && plugin.masking.is_none() && plugin.audit.is_some());
        assert_eq!(
            plugin.audit.unwrap().key.seal(b"x"),
            crate::audit::Seal::Hmac(
                crate::audit::MacKey::new(&crate::audit::decode_key(KEY).unwrap())
                    .unwrap()
                    .tag(b"x")
            )
        );
    }

    #[test]
    fn section_fingerprints_change_only_with_their_section() {
        let fp = |json: &str| {
            compile(json, Shape::Combined, &[])
                .unwrap()
                .section_fingerprints
        };
        let a = fp(
            r#"{"identity": {"default_action": "allow"}, "masking": {"rules": [{"name": "e", "detectors": ["email"]}]}}"#,
        );
        let b = fp(
            r#"{"identity": {"default_action": "deny"}, "masking": {"rules": [{"name": "e", "detectors": ["email"]}]}}"#,
        );
        assert_ne!(a[0], b[0], "the identity section changed");
        assert_eq!(a[1], b[1], "the masking section did not");
    }

    #[test]
    fn combined_configs_that_cannot_be_read_one_way_are_refused_with_their_place() {
        for (json, vars, want) in [
            ("{}", &[][..], "names no section"),
            (
                r#"{"identity": []}"#,
                &[][..],
                "identity: expected an object",
            ),
            (r#"{"idenity": {}}"#, &[][..], "unknown key"),
            (
                r#"{"identity": {"rules": [{"nme": "x"}]}}"#,
                &[][..],
                "identity.rules[0]",
            ),
            (
                r#"{"identity": {"path_normalization": "BASE"}, "audit": {"key_id": "k", "commands": [], "path_normalization": "MERGE_SLASHES"}}"#,
                AUDIT,
                "audit.path_normalization: contradicts identity.path_normalization",
            ),
            (
                r#"{"path_normalization": "NONE", "masking": {"path_normalization": "BASE"}}"#,
                &[][..],
                "masking.path_normalization: contradicts path_normalization",
            ),
            (
                r#"{"audit": {"key_id": "k", "commands": []}}"#,
                &[][..],
                "env MESHGUARD_AUDIT_KEY",
            ),
            (
                r#"{"masking": {"path_normalization": "BASE"}}"#,
                &[("MESHGUARD_PATH_NORMALIZATION", "MERGE_SLASHES")][..],
                "differs from the proxy's MESHGUARD_PATH_NORMALIZATION=MERGE_SLASHES",
            ),
            (
                r#"{"masking": {}}"#,
                &[("MESHGUARD_PATH_NORMALIZATION", "merge")][..],
                "env MESHGUARD_PATH_NORMALIZATION",
            ),
        ] {
            // Leaked once per row: the env helper wants 'static slices.
            let vars: &'static [(&str, &str)] = Box::leak(vars.to_vec().into_boxed_slice());
            let got = compile(json, Shape::Combined, vars).unwrap_err();
            assert!(got.contains(want), "{json}: {got}");
        }
    }

    #[test]
    fn the_request_view_reads_paths_as_the_proxy_or_the_config_says() {
        let n = |json: &str, shape, vars: &'static [(&'static str, &'static str)]| {
            compile(json, shape, vars).unwrap().path_normalization
        };
        let identity = Shape::Single(Section::Identity);
        assert_eq!(n("{}", identity, &[]), PathNormalization::MergeSlashes);
        assert_eq!(
            n(r#"{"path_normalization": "BASE"}"#, identity, &[]),
            PathNormalization::Base
        );
        assert_eq!(
            n("{}", identity, &[("MESHGUARD_PATH_NORMALIZATION", "BASE")]),
            PathNormalization::Base
        );
        assert_eq!(
            n(
                r#"{"path_normalization": "BASE", "identity": {}, "masking": {"path_normalization": "BASE", "rules": [{"name": "e", "detectors": ["email"]}]}}"#,
                Shape::Combined,
                &[]
            ),
            PathNormalization::Base
        );
        // A single-section config names its own key in the error.
        let err = compile(
            r#"{"path_normalization": "BASE"}"#,
            identity,
            &[("MESHGUARD_PATH_NORMALIZATION", "NONE")],
        )
        .unwrap_err();
        assert!(err.starts_with("path_normalization: BASE differs"), "{err}");
    }

    #[test]
    fn validating_ahead_of_deployment_takes_proxy_secrets_as_provided() {
        let json = r#"{"masking": {"rules": [{"name": "h", "json_keys": ["a"], "strategy": "hash"}]}, "audit": {"key_id": "k", "commands": []}}"#;
        assert!(compile(json, Shape::Combined, &[]).is_err());
        assert!(Plugin::compile(
            json.as_bytes(),
            Shape::Combined,
            &env(&[]),
            Secrets::PROVIDED_BY_PROXY
        )
        .is_ok());
    }
}
