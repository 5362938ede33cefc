//! `meshguard validate`: the filter's configuration check, run ahead of deployment.

use std::fmt::Write as _;
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
use meshguard_core::plugin::{KeyCheck, Plugin, Secrets, Section, Shape, PATH_NORMALIZATION_ENV};

use serde_json::{json, Value};

use crate::output::Output;
use crate::policy_file::{process_var, PolicyFile};
use crate::resources;

/// Check a filter configuration exactly as the filter's `on_configure` does.
///
/// Plain plugin JSON: the integrity environment is read from this process's
/// environment (or --env), as the filter reads it from `vmConfig.env`:
/// MESHGUARD_TRUSTED_KEYS, MESHGUARD_REQUIRE_SIGNATURE, MESHGUARD_ON_DRIFT,
/// ... For `--filter masking`, the key of the `hash` strategy is read from the
/// variable named by `hash_key_env` (default MESHGUARD_MASK_HASH_KEY): a
/// policy with a `hash` rule is invalid without it, as it is in Envoy. For
/// `--filter audit`, the HMAC key (the variable named by `key_env`) is
/// checked only with --env.
///
/// WasmPlugin / TrafficExtension resources: the filter sees exactly the
/// resource's `vmConfig.env`. Inline values are checked as written. Variables
/// taken from the proxy (`valueFrom: HOST`) are reported as provided by the
/// proxy and the rest is checked without them (a `hash` rule with a stand-in
/// key); with --env they are read from it and checked as that proxy would.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when the configuration is valid (warnings included), \
                        1 when it is invalid, unauthorized, refused for drift or cannot be read.\n\n\
                        Example:\n  MESHGUARD_TRUSTED_KEYS=release=$(cat keys/release.pub) \
                        MESHGUARD_REQUIRE_SIGNATURE=true meshguard validate policy.signed.json"
)]
pub struct Args {
    /// Plugin JSON (the filter's `pluginConfig`), or YAML/JSON files of Istio
    /// resources (WasmPlugin, TrafficExtension; other kinds are skipped), one
    /// or several per file, e.g. `kubectl kustomize overlays/x | meshguard
    /// validate -`. `-` reads standard input.
    #[arg(required = true)]
    config: Vec<String>,
    /// Which filter plain plugin JSON is for (detected from its keys when
    /// omitted; a resource names its filter itself).
    #[arg(long, value_enum)]
    filter: Option<Filter>,
    /// The proxy's environment: a FILE of `NAME=VALUE` lines (`#` comments),
    /// or one NAME=VALUE; repeatable, the last value of a name wins. The
    /// variables a resource takes from the proxy (`valueFrom: HOST`) and
    /// plain plugin JSON's are then read from it (not from this process) and
    /// checked as that proxy would, and the output shows what it accepts or
    /// refuses, and why.
    #[arg(long, value_name = "FILE|NAME=VALUE")]
    env: Vec<String>,
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

/// A proxy's environment, as `--env` gives it.
#[derive(Debug)]
struct ProxyEnv {
    /// The `--env` arguments, for the notes (variables by name only: a value
    /// may be a secret key).
    label: String,
    vars: Vec<(String, String)>,
}

impl ProxyEnv {
    /// `None` without `--env`. An argument is a file when one exists at that
    /// path, else `NAME=VALUE` when it has that shape, else an unreadable file.
    fn read(args: &[String]) -> anyhow::Result<Option<Self>> {
        if args.is_empty() {
            return Ok(None);
        }
        let mut vars = Vec::new();
        let mut sources = Vec::new();
        for arg in args {
            let path = std::path::Path::new(arg);
            match assignment(arg).filter(|_| !path.exists()) {
                Some((name, value)) => {
                    vars.push((name.to_string(), value.to_string()));
                    sources.push(name.to_string());
                }
                None => {
                    vars.extend(read_env_file(path)?);
                    sources.push(arg.clone());
                }
            }
        }
        Ok(Some(Self {
            label: sources.join(" + "),
            vars,
        }))
    }

    fn get(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// `NAME=VALUE` with NAME an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
fn assignment(arg: &str) -> Option<(&str, &str)> {
    let (name, value) = arg.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() || first == '_')
        .then_some(())
        .filter(|()| chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|()| (name, value))
}

impl Filter {
    /// The filter's name, as in metric labels and release scopes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Meshguard => "meshguard",
            Self::Identity => "identity",
            Self::Audit => "audit",
            Self::Masking => "masking",
        }
    }
}

/// Stable error codes (`--output json`, docs/cli.md), in the style of
/// istioctl's IST codes: the first two digits name the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// MG0001: the input cannot be read or parsed.
    Unreadable,
    /// MG0002: no meshguard configuration in the input.
    NothingToValidate,
    /// MG0101: the filter refuses the configuration.
    Invalid,
    /// MG0102: the signature check fails.
    Unauthorized,
    /// MG0103: refused for drift under `on_drift: reject`.
    Drift,
    /// MG0104: refused by the trust checks (scope, validity, rollback, revoked...).
    Refused,
    /// MG0201: a setting that judges the config is set inline in `vmConfig.env`.
    InlineTrustAnchor,
    /// MG0202: a key the filter reads from its environment is not passed in `vmConfig.env`.
    KeyNotPassed,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreadable => "MG0001",
            Self::NothingToValidate => "MG0002",
            Self::Invalid => "MG0101",
            Self::Unauthorized => "MG0102",
            Self::Drift => "MG0103",
            Self::Refused => "MG0104",
            Self::InlineTrustAnchor => "MG0201",
            Self::KeyNotPassed => "MG0202",
        }
    }

    fn of(error: &LoadError) -> Self {
        match error {
            LoadError::Invalid(_) => Self::Invalid,
            LoadError::Unauthorized(_) => Self::Unauthorized,
            LoadError::Drift(_) => Self::Drift,
            LoadError::Refused { .. } => Self::Refused,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Filter {
    /// The combined plugin: any of the identity, masking and audit sections
    /// in one config (root id `meshguard`, docs/deploy.md).
    Meshguard,
    /// The identity and mTLS policy filter.
    Identity,
    /// The command-hash audit filter (docs/audit.md).
    Audit,
    /// The data masking filter (docs/masking.md).
    Masking,
}

pub fn run(args: &Args, output: Output) -> anyhow::Result<ExitCode> {
    let proxy_env = ProxyEnv::read(&args.env)?;
    let mut results = Vec::new();
    for path in &args.config {
        let file = match PolicyFile::read(path) {
            Ok(file) => file,
            Err(e) => {
                results.push(Outcome::failed(
                    path,
                    None,
                    Code::Unreadable,
                    format!("{e:#}"),
                ));
                continue;
            }
        };
        match resources::targets(&file.name, &file.bytes, args.filter) {
            Ok((targets, skipped)) => {
                for s in skipped {
                    if output == Output::Text {
                        eprintln!("{}: skipped ({})", s.source, s.kind);
                    }
                }
                if targets.is_empty() {
                    results.push(Outcome::failed(
                        &file.name,
                        None,
                        Code::NothingToValidate,
                        "no meshguard WasmPlugin, TrafficExtension or plugin JSON".into(),
                    ));
                }
                for target in targets {
                    results.push(validate_one(args, proxy_env.as_ref(), &target)?);
                }
            }
            Err(e) => results.push(Outcome::failed(
                &file.name,
                None,
                Code::Unreadable,
                format!("{e:#}"),
            )),
        }
    }
    let valid = results.iter().all(|r| r.error.is_none());
    match output {
        Output::Json => {
            let list: Vec<Value> = results.iter().map(Outcome::to_json).collect();
            writeln!(std::io::stdout().lock(), "{}", Value::Array(list))?;
        }
        Output::Text => {
            for r in &results {
                r.print_text()?;
            }
        }
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What `validate` found for one configuration.
#[derive(Debug)]
struct Outcome {
    source: String,
    filter: Option<(Filter, &'static str)>,
    summary: Option<Summary>,
    fingerprint: Option<String>,
    signature: Option<String>,
    /// What `--env` / `--workload` explain (text output).
    notes: Vec<String>,
    /// The resource's `valueFrom: HOST` variables, not checked (no `--env`).
    provided_by_proxy: Vec<String>,
    warnings: Vec<String>,
    error: Option<(Code, String)>,
}

impl Outcome {
    fn failed(
        source: &str,
        filter: Option<(Filter, &'static str)>,
        code: Code,
        message: String,
    ) -> Self {
        Self {
            source: source.to_string(),
            filter,
            summary: None,
            fingerprint: None,
            signature: None,
            notes: Vec::new(),
            provided_by_proxy: Vec::new(),
            warnings: Vec::new(),
            error: Some((code, message)),
        }
    }

    fn print_text(&self) -> anyhow::Result<()> {
        // A resource says which filter it is for; plain JSON keeps the
        // established one-line format and gets a note when it was guessed.
        let detected = self
            .filter
            .filter(|(_, from)| !matches!(*from, "--filter" | "its keys"))
            .map(|(f, from)| format!(" ({} filter, from {from})", f.name()))
            .unwrap_or_default();
        // (Identity, the historical default, goes without saying.)
        if let Some((f @ (Filter::Masking | Filter::Audit), "its keys")) = self.filter {
            eprintln!(
                "note: {}: taken for the {} filter from its keys (--filter chooses)",
                self.source,
                f.name()
            );
        }
        // What `--env` says of the sidecar comes first, whatever the outcome.
        if let Some(env_note) = self.notes.first().filter(|_| self.summary.is_none()) {
            println!("{env_note}");
        }
        match (&self.error, &self.summary) {
            (Some((code, message)), _) => {
                // The same line as Envoy's log; the stable code is in `--output json`.
                let _ = code;
                eprintln!("{}{detected}: invalid: {message}", self.source);
            }
            (None, Some(summary)) => {
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "{}{detected}: valid {} policy (version={}, {}) fingerprint={} signature={}",
                    self.source,
                    summary.filter,
                    summary.version.as_deref().unwrap_or("unset"),
                    summary.details,
                    self.fingerprint.as_deref().unwrap_or(""),
                    self.signature.as_deref().unwrap_or(""),
                )?;
                for note in &self.notes {
                    writeln!(out, "{note}")?;
                }
            }
            (None, None) => {}
        }
        if !self.provided_by_proxy.is_empty() {
            println!(
                "  provided by the proxy (valueFrom: HOST; --env checks them): {}",
                self.provided_by_proxy.join(", ")
            );
        }
        for warning in &self.warnings {
            eprintln!("warning: {warning}");
        }
        Ok(())
    }

    fn to_json(&self) -> Value {
        json!({
            "source": self.source,
            "filter": self.filter.map(|(f, _)| f.name()),
            "filter_from": self.filter.map(|(_, from)| from),
            "valid": self.error.is_none(),
            "version": self.summary.as_ref().and_then(|s| s.version.clone()),
            "details": self.summary.as_ref().map(|s| s.details.clone()),
            "fingerprint": self.fingerprint,
            "signature": self.signature,
            "provided_by_proxy": self.provided_by_proxy,
            "warnings": self.warnings,
            "error": self.error.as_ref().map(|(code, message)| json!({"code": code.as_str(), "message": message})),
        })
    }
}

/// Validates one configuration as the filter's `on_configure` would, with the
/// environment the filter would see: for a resource, exactly its
/// `vmConfig.env` (INLINE values as written, HOST values from `--env`, or
/// reported as provided by the proxy without it), for plain JSON this
/// process's environment or `--env`.
fn validate_one(
    args: &Args,
    proxy: Option<&ProxyEnv>,
    target: &resources::Target,
) -> anyhow::Result<Outcome> {
    let file = PolicyFile {
        name: target.source.clone(),
        bytes: target.plugin_config.clone(),
    };
    let filter = Some((target.filter, target.filter_from));
    let is_resource = !target.env.is_empty()
        || target.filter_from != "--filter" && target.filter_from != "its keys";
    // What the proxy provides is unknown without --env: listed, not checked.
    let mut provided_by_proxy: Vec<String> = Vec::new();
    if is_resource && proxy.is_none() {
        for entry in target.env.iter().filter(|e| e.from_host) {
            if !provided_by_proxy.contains(&entry.name) {
                provided_by_proxy.push(entry.name.clone());
            }
        }
    }
    let from_proxy = |name: &str| provided_by_proxy.iter().any(|p| p == name);
    let var = |name: &str| {
        if !is_resource {
            return proxy.map_or_else(|| process_var(name), |p| p.get(name));
        }
        let entry = target.env.iter().rev().find(|e| e.name == name)?;
        if entry.from_host {
            proxy.and_then(|p| p.get(name))
        } else {
            entry.value.clone()
        }
    };
    // A `hash` rule compiles with a stand-in for a key the proxy provides.
    // (Only for a secret: the proxy's path normalization, unknown without
    // --env, is taken as unset.)
    let masking_var = |name: &str| {
        var(name).or_else(|| {
            (from_proxy(name) && name != PATH_NORMALIZATION_ENV)
                .then(|| STAND_IN_HASH_KEY.to_owned())
        })
    };
    if is_resource {
        if let Some(inline) = target
            .env
            .iter()
            .find(|e| !e.from_host && ALL_ENV.contains(&e.name.as_str()))
        {
            return Ok(Outcome::failed(
                &target.source,
                filter,
                Code::InlineTrustAnchor,
                format!(
                    "vmConfig.env sets {} inline: settings that judge a config must come from the proxy's own environment (valueFrom: HOST), never from the resource that carries the config (docs/integrity.md)",
                    inline.name
                ),
            ));
        }
    }
    let env = IntegrityEnv::from_vars(var).map_err(LoadError::from);
    let mut notes = Vec::new();
    if let (Some(proxy), Ok(env)) = (proxy, &env) {
        notes.push(describe_env(&proxy.label, env, &var));
    }
    let newest_fp = "0".repeat(64);
    let at = args.workload.as_deref().map(|workload| Admission {
        filter: target.filter.name(),
        workload: Some(workload),
        now_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        newest: args.newest_serial.map(|n| (n, newest_fp.as_str())),
        admitted_here: false,
    });
    let loaded = env.and_then(|env| {
        // As the filter: the trust checks and the scope, then its own compile.
        if let Some(at) = &at {
            integrity::admit(&integrity::load(&file.bytes, &env)?, &env, at)?;
        }
        let (loaded, summary, key_env) = match target.filter {
            Filter::Identity => file
                .load_identity(&env)
                .map(|(loaded, policy)| (loaded, Summary::identity(&policy), None)),
            Filter::Audit => file.load_audit(&env).and_then(|(loaded, policy)| {
                let key = policy.key_env().to_string();
                // The key as the filter reads it, when its value is known: an
                // inline value, or the proxy's from --env (a key the resource
                // does not pass is reported below).
                let passed = !is_resource || target.env.iter().any(|e| e.name == key);
                if passed && !from_proxy(&key) && (is_resource || proxy.is_some()) {
                    policy.key_from_env(var)?;
                }
                Ok((loaded, Summary::audit(&policy), Some(key)))
            }),
            Filter::Masking => file
                .load_masking(&env, masking_var)
                .map(|(loaded, policy)| (loaded, Summary::masking(&policy), None)),
            Filter::Meshguard => {
                let secrets = Secrets {
                    hash_key: KeyCheck::Require,
                    audit_key: KeyCheck::ProvidedByProxy,
                };
                file.load_plugin(&env, Shape::Combined, &masking_var, secrets)
                    .and_then(|(loaded, plugin)| {
                        let key = plugin
                            .audit
                            .as_ref()
                            .map(|a| a.policy.key_env().to_string());
                        if let (Some(audit), Some(key)) = (&plugin.audit, &key) {
                            let passed = !is_resource || target.env.iter().any(|e| &e.name == key);
                            if passed && !from_proxy(key) && (is_resource || proxy.is_some()) {
                                audit.policy.key_from_env(var)?;
                            }
                        }
                        let mut summary = Summary::plugin(&plugin);
                        summary.version.clone_from(&loaded.config_version);
                        Ok((loaded, summary, key))
                    })
            }
        }?;
        Ok((loaded, summary, key_env))
    });
    let (loaded, summary, key_env) = match loaded {
        Ok(ok) => ok,
        Err(error) => {
            return Ok(Outcome {
                notes,
                provided_by_proxy,
                ..Outcome::failed(&target.source, filter, Code::of(&error), error.to_string())
            })
        }
    };
    if let (true, Some(key)) = (is_resource, key_env) {
        if !target.env.iter().any(|e| e.name == key) {
            return Ok(Outcome::failed(
                &target.source,
                filter,
                Code::KeyNotPassed,
                format!("the audit filter reads its HMAC key from {key}, which vmConfig.env does not pass (add `- name: {key}\n  valueFrom: HOST`): the filter would refuse its config"),
            ));
        }
    }
    if proxy.is_some() || args.workload.is_some() {
        notes.push(explain_accepted(&loaded, at.as_ref()));
    }
    let mut warnings = summary.warnings.clone();
    warnings.extend(drift_warning(&loaded));
    Ok(Outcome {
        source: target.source.clone(),
        filter,
        fingerprint: Some(loaded.fingerprint.to_string()),
        signature: Some(loaded.signature.to_string()),
        summary: Some(summary),
        notes,
        provided_by_proxy,
        warnings,
        error: None,
    })
}

/// What the sidecar's environment asks for (printed with `--env`).
fn describe_env(label: &str, env: &IntegrityEnv, var: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let keys: Vec<&str> = env.trusted_keys.iter().map(|(id, _)| id.as_str()).collect();
    let _ = writeln!(
        out,
        "{label}: trusted keys [{}], revoked [{}], signatures {}, integrity {}",
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
    );
    for name in ALL_ENV {
        if let Some(v) = var(name) {
            let shown = if name == integrity::TRUSTED_KEYS_ENV {
                "(see above)".to_string()
            } else {
                v
            };
            let _ = writeln!(out, "  {name}={shown}");
        }
    }
    out.trim_end().to_string()
}

/// Why the config was accepted: where each judging setting comes from and the
/// release scope check.
fn explain_accepted(loaded: &Loaded, at: Option<&Admission<'_>>) -> String {
    let mut out = String::new();
    let s = &loaded.settings;
    let _ = writeln!(
        out,
        "  settings: on_drift={} (from {}), health_paths from {}, source_of_truth={} (from {})",
        s.on_drift.as_str(),
        s.origin.on_drift.as_str(),
        s.origin.health_paths.as_str(),
        s.source_of_truth
            .as_ref()
            .map_or_else(|| "none".into(), |t| format!("{}{}", t.cluster, t.path)),
        s.origin.source_of_truth.as_str(),
    );
    match (&loaded.release, at) {
        (Some(r), Some(at)) => {
            let _ = writeln!(
                out,
                "  release: filter={} workloads={} serial={}: admitted for {}",
                r.filter,
                r.workloads.join(","),
                r.serial,
                at.workload.unwrap_or("unknown")
            );
        }
        (Some(r), None) => {
            let _ = writeln!(
                out,
                "  release: filter={} workloads={} serial={} (scope not checked: give --workload)",
                r.filter,
                r.workloads.join(","),
                r.serial
            );
        }
        (None, _) => {
            let _ = writeln!(out, "  release: none (not signed by a trusted key)");
        }
    }
    out.trim_end().to_string()
}

/// What `validate` reports of a policy that loaded, besides its fingerprint
/// and signature: the only part that differs from filter to filter.
#[derive(Debug)]
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

    /// A combined plugin: its sections, each with its own summary.
    fn plugin(plugin: &Plugin) -> Self {
        let mut parts = Vec::new();
        let mut warnings = Vec::new();
        if let Some(p) = &plugin.identity {
            parts.push(format!(
                "identity: {}",
                mode_and_rules(p.mode(), p.rule_count())
            ));
            warnings.extend(p.warnings().iter().map(|w| format!("identity: {w}")));
        }
        if let Some(p) = &plugin.masking {
            parts.push(format!(
                "masking: {}",
                mode_and_rules(p.mode(), p.rule_count())
            ));
        }
        if let Some(a) = &plugin.audit {
            parts.push(format!(
                "audit: {}",
                count(a.policy.command_count(), "command", "commands")
            ));
            warnings.extend(a.policy.warnings().iter().map(|w| format!("audit: {w}")));
        }
        parts.push(format!(
            "path_normalization={}",
            plugin.path_normalization.as_str()
        ));
        Self {
            filter: "meshguard",
            version: None,
            details: parts.join("; "),
            warnings,
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
fn drift_warning(loaded: &Loaded) -> Option<String> {
    let (_, transition) = DriftMonitor::new(loaded, 0, false);
    transition
        .filter(|t| t.to == DriftState::Drifted)
        .map(|t| t.message)
}

/// Stands in for the masking `hash` key where the key is not at hand: when
/// `sign` checks a policy (the key is a secret of the deployment, not part of
/// the signed configuration), and when `validate` checks a resource whose
/// proxy provides it (`valueFrom: HOST`, no `--env`).
const STAND_IN_HASH_KEY: &str = "meshguard-stand-in-hash-key";

/// The load the filter runs with no integrity environment, plus its compile:
/// what `sign` requires before signing. A masking policy is compiled with a
/// placeholder hash key (`validate` checks the real one).
pub fn check_default(file: &PolicyFile, filter: Filter) -> Result<(), LoadError> {
    let env = IntegrityEnv::default();
    let single = match filter {
        Filter::Meshguard => None,
        Filter::Identity => Some(Section::Identity),
        Filter::Audit => Some(Section::Audit),
        Filter::Masking => Some(Section::Masking),
    };
    let shape = single.map_or(Shape::Combined, |s| file.shape(s));
    file.load_plugin(&env, shape, &|_| None, Secrets::PROVIDED_BY_PROXY)
        .map(|_| ())
}
