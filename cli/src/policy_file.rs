//! Reading a policy file (or standard input) and loading it exactly as the
//! filter's `on_configure` does.

use std::io::Read;

use anyhow::Context;
use meshguard_core::config::ConfigError;
use meshguard_core::identity::{IdentityPolicy, Mode};

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

    /// The identity filter's own validation: `IdentityPolicy::from_json`, nothing more.
    pub fn identity_policy(&self) -> Result<IdentityPolicy, ConfigError> {
        IdentityPolicy::from_json(&self.bytes)
    }

    /// The line printed for a refused configuration (the error text is the
    /// one Envoy's log shows).
    pub fn invalid(&self, error: &ConfigError) -> String {
        format!("{}: invalid: {error}", self.name)
    }
}

/// The mode as written in config (and in the filter's log).
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::DryRun => "dry-run",
    }
}
