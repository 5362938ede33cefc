//! `meshguard validate`: the filter's configuration check, run ahead of deployment.

use std::io::Write;
use std::process::ExitCode;

use clap::ValueEnum;
use meshguard_core::audit::AuditPolicy;
use meshguard_core::config::Mode;
use meshguard_core::identity::IdentityPolicy;
use meshguard_core::integrity::{DriftMonitor, DriftState, IntegrityEnv, LoadError, Loaded};
use meshguard_core::masking::MaskingPolicy;

use crate::policy_file::{process_env, process_var, PolicyFile};

/// Check a filter configuration exactly as the filter's `on_configure` does.
///
/// The integrity environment is read from this process's environment, as the
/// filter reads it from `vmConfig.env`: MESHGUARD_TRUSTED_KEYS,
/// MESHGUARD_REQUIRE_SIGNATURE, MESHGUARD_INTENDED_VERSION,
/// MESHGUARD_INTENDED_FINGERPRINT, MESHGUARD_ON_DRIFT.
///
/// For `--filter audit`, the HMAC key (the variable named by `key_env`) is not
/// read: the filter reads it at load time, `meshguard validate` checks the
/// configuration only.
///
/// For `--filter masking`, the key of the `hash` strategy is read from the
/// variable named by `hash_key_env` (default MESHGUARD_MASK_HASH_KEY), as the
/// filter reads it from `vmConfig.env`: a policy with a `hash` rule is invalid
/// without it, as it is in Envoy.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when the configuration is valid (warnings included), \
                        1 when it is invalid, unauthorized, refused for drift or cannot be read.\n\n\
                        Example:\n  MESHGUARD_TRUSTED_KEYS=release=$(cat keys/release.pub) \
                        MESHGUARD_REQUIRE_SIGNATURE=true meshguard validate policy.signed.json"
)]
pub struct Args {
    /// Plugin configuration (the JSON of `pluginConfig`); `-` reads standard input.
    config: String,
    /// Which filter the configuration is for.
    #[arg(long, value_enum, default_value_t = Filter::Identity)]
    filter: Filter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Filter {
    /// The identity and mTLS policy filter.
    Identity,
    /// The command-hash audit filter (docs/audit.md).
    Audit,
    /// The data masking filter (docs/masking.md).
    Masking,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let file = PolicyFile::read(&args.config)?;
    let loaded = process_env().and_then(|env| match args.filter {
        Filter::Identity => file
            .load_identity(&env)
            .map(|(loaded, policy)| (loaded, Summary::identity(&policy))),
        Filter::Audit => file
            .load_audit(&env)
            .map(|(loaded, policy)| (loaded, Summary::audit(&policy))),
        Filter::Masking => file
            .load_masking(&env, process_var)
            .map(|(loaded, policy)| (loaded, Summary::masking(&policy))),
    });
    let (loaded, summary) = match loaded {
        Ok(ok) => ok,
        Err(error) => {
            eprintln!("{}", file.invalid(&error));
            return Ok(ExitCode::FAILURE);
        }
    };
    writeln!(
        std::io::stdout().lock(),
        "{}: valid {} policy (version={}, {}) fingerprint={} signature={}",
        file.name,
        summary.filter,
        summary.version.as_deref().unwrap_or("unset"),
        summary.details,
        loaded.fingerprint,
        loaded.signature,
    )?;
    for warning in &summary.warnings {
        eprintln!("warning: {warning}");
    }
    warn_drift(&loaded);
    Ok(ExitCode::SUCCESS)
}

/// What `validate` reports of a policy that loaded, besides its fingerprint
/// and signature: the only part that differs from filter to filter.
struct Summary {
    /// The filter's name, as in `valid identity policy`.
    filter: &'static str,
    version: Option<String>,
    /// Mode and counts, as in `mode=enforce, 2 rules`.
    details: String,
    /// Printed to standard error after the success line.
    warnings: Vec<String>,
}

impl Summary {
    fn identity(policy: &IdentityPolicy) -> Self {
        Self {
            filter: "identity",
            version: policy.config_version().map(str::to_owned),
            details: mode_and_rules(policy.mode(), policy.rule_count()),
            warnings: policy.warnings().to_vec(),
        }
    }

    fn audit(policy: &AuditPolicy) -> Self {
        Self {
            filter: "audit",
            version: policy.config_version().map(str::to_owned),
            details: count(policy.command_count(), "command", "commands"),
            warnings: policy.warnings().to_vec(),
        }
    }

    fn masking(policy: &MaskingPolicy) -> Self {
        Self {
            filter: "masking",
            version: policy.config_version().map(str::to_owned),
            details: mode_and_rules(policy.mode(), policy.rule_count()),
            warnings: Vec::new(),
        }
    }
}

/// The details of a policy of rules: `mode=enforce, 2 rules`.
fn mode_and_rules(mode: Mode, rules: usize) -> String {
    format!("mode={}, {}", mode.as_str(), count(rules, "rule", "rules"))
}

/// `n` and the noun for it: `1 rule`, `2 rules`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What the filter logs right after loading when the environment names an
/// intended version (a drift under `on_drift: reject` was refused by the load).
fn warn_drift(loaded: &Loaded) {
    let (_, transition) = DriftMonitor::new(loaded, 0);
    if let Some(t) = transition.filter(|t| t.to == DriftState::Drifted) {
        eprintln!("warning: {}", t.message);
    }
}

/// Stands in for the masking `hash` key when `sign` checks a policy: the key
/// is a secret of the deployment (`vmConfig.env`), not part of the signed
/// configuration, and need not be present where policies are signed.
const SIGN_PLACEHOLDER_HASH_KEY: &str = "meshguard-sign-placeholder-hash-key";

/// The load the filter runs with no integrity environment, plus its compile:
/// what `sign` requires before signing. A masking policy is compiled with a
/// placeholder hash key (`validate` checks the real one).
pub fn check_default(file: &PolicyFile, filter: Filter) -> Result<(), LoadError> {
    let env = IntegrityEnv::default();
    match filter {
        Filter::Identity => file.load_identity(&env).map(|_| ()),
        Filter::Audit => file.load_audit(&env).map(|_| ()),
        Filter::Masking => file
            .load_masking(&env, |_| Some(SIGN_PLACEHOLDER_HASH_KEY.to_owned()))
            .map(|_| ()),
    }
}
