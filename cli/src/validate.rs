//! `meshguard validate`: the filter's configuration check, run ahead of deployment.

use std::io::Write;
use std::process::ExitCode;

use clap::ValueEnum;
use meshguard_core::audit::AuditPolicy;
use meshguard_core::config::Mode;
use meshguard_core::identity::IdentityPolicy;
use meshguard_core::integrity::{
    self, Admission, DriftMonitor, DriftState, IntegrityEnv, LoadError, Loaded, ALL_ENV,
};
use meshguard_core::masking::MaskingPolicy;

use crate::policy_file::{process_var, PolicyFile};

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
    /// Read the sidecar's environment from FILE (`NAME=VALUE` lines, `#`
    /// comments) instead of this process's environment, and show what a
    /// sidecar with it accepts or refuses, and why.
    #[arg(long, value_name = "FILE")]
    env: Option<std::path::PathBuf>,
    /// The sidecar's workload (Istio node metadata NAMESPACE/WORKLOAD_NAME):
    /// checks the release scope as that sidecar would.
    #[arg(long, value_name = "NS/NAME")]
    workload: Option<String>,
    /// The newest serial the sidecar already accepted (anti-rollback check).
    #[arg(long, value_name = "N")]
    newest_serial: Option<u64>,
}

/// `NAME=VALUE` lines (blank lines and `#` comments skipped; `export ` and
/// surrounding quotes tolerated, as in a shell env file).
fn read_env_file(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            anyhow::bail!("{}:{}: expected NAME=VALUE", path.display(), n + 1);
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        vars.push((name.trim().to_string(), value.to_string()));
    }
    Ok(vars)
}

impl Filter {
    /// The filter's name, as in metric labels and release scopes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Audit => "audit",
            Self::Masking => "masking",
        }
    }
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
    let env_file = args.env.as_deref().map(read_env_file).transpose()?;
    let var = |name: &str| match &env_file {
        Some(vars) => vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
        None => process_var(name),
    };
    let env = IntegrityEnv::from_vars(var).map_err(LoadError::from);
    if let (Some(path), Ok(env)) = (&args.env, &env) {
        describe_env(path, env, &var)?;
    }
    let newest_fp = "0".repeat(64);
    let at = args.workload.as_deref().map(|workload| Admission {
        filter: args.filter.name(),
        workload: Some(workload),
        now_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        newest: args.newest_serial.map(|n| (n, newest_fp.as_str())),
    });
    let loaded = env.and_then(|env| {
        // As the filter: the trust checks and the scope, then its own compile.
        if let Some(at) = &at {
            integrity::admit(&integrity::load(&file.bytes, &env)?, &env, at)?;
        }
        let (loaded, summary) = match args.filter {
            Filter::Identity => file
                .load_identity(&env)
                .map(|(loaded, policy)| (loaded, Summary::identity(&policy))),
            Filter::Audit => file
                .load_audit(&env)
                .map(|(loaded, policy)| (loaded, Summary::audit(&policy))),
            Filter::Masking => file
                .load_masking(&env, var)
                .map(|(loaded, policy)| (loaded, Summary::masking(&policy))),
        }?;
        Ok((loaded, summary))
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
    if args.env.is_some() || args.workload.is_some() {
        explain_accepted(&loaded, at.as_ref(), &mut std::io::stdout().lock())?;
    }
    warn_drift(&loaded);
    Ok(ExitCode::SUCCESS)
}

/// What the sidecar's environment asks for (printed with `--env`).
fn describe_env(
    path: &std::path::Path,
    env: &IntegrityEnv,
    var: &impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let keys: Vec<&str> = env.trusted_keys.iter().map(|(id, _)| id.as_str()).collect();
    writeln!(
        out,
        "{}: trusted keys [{}], revoked [{}], signatures {}, integrity {}",
        path.display(),
        keys.join(", "),
        env.revoked_keys.join(", "),
        if env.require_signature {
            "required"
        } else {
            "optional"
        },
        if env.asks_for_integrity() {
            "asked (an unsigned config may not carry `integrity`)"
        } else {
            "not asked (the config's own `integrity` section applies)"
        }
    )?;
    for name in ALL_ENV {
        if let Some(v) = var(name) {
            let shown = if name == integrity::TRUSTED_KEYS_ENV {
                "(see above)".to_string()
            } else {
                v
            };
            writeln!(out, "  {name}={shown}")?;
        }
    }
    Ok(())
}

/// Why the config was accepted: where each judging setting comes from and the
/// release scope check.
fn explain_accepted(
    loaded: &Loaded,
    at: Option<&Admission<'_>>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let s = &loaded.settings;
    writeln!(
        out,
        "  settings: on_drift={} (from {}), health_paths from {}, source_of_truth={} (from {})",
        s.on_drift.as_str(),
        s.origin.on_drift.as_str(),
        s.origin.health_paths.as_str(),
        s.source_of_truth
            .as_ref()
            .map_or_else(|| "none".into(), |t| format!("{}{}", t.cluster, t.path)),
        s.origin.source_of_truth.as_str(),
    )?;
    match (&loaded.release, at) {
        (Some(r), Some(at)) => writeln!(
            out,
            "  release: filter={} workloads={} serial={}: admitted for {}",
            r.filter,
            r.workloads.join(","),
            r.serial,
            at.workload.unwrap_or("unknown")
        )?,
        (Some(r), None) => writeln!(
            out,
            "  release: filter={} workloads={} serial={} (scope not checked: give --workload)",
            r.filter,
            r.workloads.join(","),
            r.serial
        )?,
        (None, _) => writeln!(out, "  release: none (not signed by a trusted key)")?,
    }
    Ok(())
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
    let (_, transition) = DriftMonitor::new(loaded, 0, false);
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
