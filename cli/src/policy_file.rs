//! Reading a policy file (or standard input) and loading it exactly as the
//! filter's `on_configure` does: the integrity checks of
//! `meshguard_core::integrity::load`, then the filter's own compile.

use std::fmt::Display;
use std::io::Read;

use anyhow::Context;
use meshguard_core::audit::AuditPolicy;
use meshguard_core::identity::IdentityPolicy;
use meshguard_core::integrity::{self, IntegrityEnv, LoadError, Loaded};
use meshguard_core::masking::MaskingPolicy;

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

    /// What the identity filter's `on_configure` runs (`meshguard_host::integrity::load_config`):
    /// signature, fingerprint and integrity section under `env`, then
    /// `IdentityPolicy::from_json` on the filter's own keys.
    pub fn load_identity(&self, env: &IntegrityEnv) -> Result<(Loaded, IdentityPolicy), LoadError> {
        let loaded = integrity::load(&self.bytes, env)?;
        let policy = IdentityPolicy::from_json(&loaded.filter_config)?;
        Ok((loaded, policy))
    }

    /// What the audit filter's `on_configure` runs, minus reading its HMAC key:
    /// signature, fingerprint and integrity section under `env`, then
    /// `AuditPolicy::from_json` on the filter's own keys.
    pub fn load_audit(&self, env: &IntegrityEnv) -> Result<(Loaded, AuditPolicy), LoadError> {
        let loaded = integrity::load(&self.bytes, env)?;
        let policy = AuditPolicy::from_json(&loaded.filter_config)?;
        Ok((loaded, policy))
    }

    /// What the masking filter's `on_configure` runs: signature, fingerprint
    /// and integrity section under `env`, then
    /// `MaskingPolicy::from_json_with_env` on the filter's own keys, the hash
    /// key being read through `vars` from the variable named by `hash_key_env`
    /// (the filter reads the VM's environment).
    pub fn load_masking(
        &self,
        env: &IntegrityEnv,
        vars: impl Fn(&str) -> Option<String>,
    ) -> Result<(Loaded, MaskingPolicy), LoadError> {
        let loaded = integrity::load(&self.bytes, env)?;
        let policy = MaskingPolicy::from_json_with_env(&loaded.filter_config, vars)?;
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
