//! Reading a policy file (or standard input) and loading it exactly as the
//! filter's `on_configure` does: the integrity checks of
//! `meshguard_core::integrity::load`, then the filter's own compile.

use std::fmt::Display;
use std::io::Read;

use anyhow::Context;
use meshguard_core::audit::AuditPolicy;
use meshguard_core::config::ConfigError;
use meshguard_core::identity::IdentityPolicy;
use meshguard_core::integrity::{self, IntegrityEnv, LoadError, Loaded};
use meshguard_core::masking::MaskingPolicy;
use meshguard_core::plugin::{KeyCheck, Plugin, Secrets, Section, Shape};
use serde_json::{Map, Value};

/// Plugin JSON and the name to report it under.
#[derive(Debug)]
pub struct PolicyFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl PolicyFile {
    /// Reads `path`, or standard input when `path` is `-`.
    pub fn read(path: &str) -> anyhow::Result<Self> {
        if path == "-" {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            return Ok(Self {
                name: "<stdin>".into(),
                bytes,
            });
        }
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        Ok(Self {
            name: path.into(),
            bytes,
        })
    }

    /// The config shape: a combined `meshguard` config (sections under
    /// `identity`, `masking`, `audit`) when its keys say so, else the single
    /// section `single` names.
    pub fn shape(&self, single: Section) -> Shape {
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&self.bytes) else {
            return Shape::Single(single);
        };
        if is_combined(&object) {
            Shape::Combined
        } else {
            Shape::Single(single)
        }
    }

    /// What a meshguard plugin's `on_configure` runs: signature, fingerprint
    /// and integrity section under `env`, then the sections of `shape`,
    /// reading variables through `vars` and secrets as `secrets` says.
    pub fn load_plugin(
        &self,
        env: &IntegrityEnv,
        shape: Shape,
        vars: &dyn Fn(&str) -> Option<String>,
        secrets: Secrets,
    ) -> Result<(Loaded, Plugin), LoadError> {
        let loaded = integrity::load(&self.bytes, env)?;
        let plugin = Plugin::compile(&loaded.filter_config, shape, vars, secrets)?;
        Ok((loaded, plugin))
    }

    /// The identity section (the whole config of an identity plugin, or the
    /// `identity` section of a combined one), loaded as the plugin loads it.
    pub fn load_identity(&self, env: &IntegrityEnv) -> Result<(Loaded, IdentityPolicy), LoadError> {
        let shape = self.shape(Section::Identity);
        let (loaded, plugin) =
            self.load_plugin(env, shape, &process_var, Secrets::PROVIDED_BY_PROXY)?;
        let policy = plugin.identity.ok_or_else(|| missing(Section::Identity))?;
        Ok((loaded, policy))
    }

    /// The audit section, minus reading its HMAC key.
    pub fn load_audit(&self, env: &IntegrityEnv) -> Result<(Loaded, AuditPolicy), LoadError> {
        let shape = self.shape(Section::Audit);
        let (loaded, plugin) =
            self.load_plugin(env, shape, &process_var, Secrets::PROVIDED_BY_PROXY)?;
        let section = plugin.audit.ok_or_else(|| missing(Section::Audit))?;
        Ok((loaded, section.policy))
    }

    /// The masking section, its `hash` key read through `vars` from the
    /// variable named by `hash_key_env` (the plugin reads the VM's
    /// environment).
    pub fn load_masking(
        &self,
        env: &IntegrityEnv,
        vars: impl Fn(&str) -> Option<String>,
    ) -> Result<(Loaded, MaskingPolicy), LoadError> {
        let shape = self.shape(Section::Masking);
        let secrets = Secrets {
            hash_key: KeyCheck::Require,
            audit_key: KeyCheck::ProvidedByProxy,
        };
        let (loaded, plugin) = self.load_plugin(env, shape, &vars, secrets)?;
        let policy = plugin.masking.ok_or_else(|| missing(Section::Masking))?;
        Ok((loaded, policy))
    }

    /// The line printed for a refused configuration (the error text is the
    /// one Envoy's log shows).
    pub fn invalid(&self, error: &impl Display) -> String {
        format!("{}: invalid: {error}", self.name)
    }
}

/// One variable of this process's environment, as the filter reads one of
/// `vmConfig.env` (unset and non-UTF-8 values are absent).
pub fn process_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A combined config: only the combined plugin's keys, and at least one
/// section that is not an identity policy's own `identity` key (whose keys
/// are `trusted_gateways` and `on_unusable_identity`).
pub fn is_combined(object: &Map<String, Value>) -> bool {
    const KEYS: [&str; 8] = [
        "identity",
        "masking",
        "audit",
        "config_version",
        "path_normalization",
        "integrity",
        "release",
        "signature",
    ];
    let identity_section = object
        .get("identity")
        .and_then(Value::as_object)
        .is_some_and(|i| {
            i.keys()
                .any(|k| k != "trusted_gateways" && k != "on_unusable_identity")
        });
    object.keys().all(|k| KEYS.contains(&k.as_str()))
        && (object.contains_key("masking") || object.contains_key("audit") || identity_section)
}

fn missing(section: Section) -> LoadError {
    LoadError::Invalid(ConfigError::invalid(
        "config",
        format!(
            "the meshguard plugin config has no {} section",
            section.as_str()
        ),
    ))
}
