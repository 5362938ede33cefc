//! `meshguard sign`: adds a `release` scope (filter, workloads, serial,
//! validity) and a `signature` section (ed25519 over the canonical config)
//! with the core's own `sign_release`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use meshguard_core::integrity::{self, Admission, IntegrityEnv, Release, SignatureStatus};

use crate::keys::{check_key_id, read_signing_key};
use crate::output::{print_json, refused, Output};
use crate::policy_file::PolicyFile;
use crate::validate::{check_default, Filter};

/// Sign a filter configuration with a `meshguard keygen` key, for one filter,
/// the workloads it is released to, a serial and an optional validity window.
///
/// The configuration must first pass validation (without any integrity
/// environment). An existing `release` or `signature` section is replaced.
/// The `release` scope is part of the fingerprint; the signature is not.
/// A sidecar refuses the result for another filter or workload, outside the
/// window, or when it already accepted a higher serial. A masking policy's `hash`
/// key is not needed here: it belongs to the deployment (`vmConfig.env`), not
/// to the configuration; `meshguard validate --filter masking` checks it.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when signed; 1 when the configuration is invalid, \
                  the key unreadable or the output unwritable.\n\n\
                  Example:\n  meshguard sign policy.json --key keys/release.key --key-id release \
                  --out policy.signed.json"
)]
pub struct Args {
    /// Plugin configuration (the JSON of `pluginConfig`); `-` reads standard input.
    config: String,
    /// Private key file written by `meshguard keygen` (ID.key).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The key's ID, as listed in MESHGUARD_TRUSTED_KEYS.
    #[arg(long, value_name = "ID")]
    key_id: String,
    /// Write the signed configuration here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Which filter the configuration is for (signed into the release scope).
    #[arg(long, value_enum, default_value_t = Filter::Identity)]
    filter: Filter,
    /// A workload the configuration is released to: NAMESPACE/WORKLOAD_NAME
    /// (Istio node metadata), NAMESPACE/* or *. Repeat for several.
    #[arg(long, value_name = "NS/NAME", required = true)]
    workload: Vec<String>,
    /// Release serial: sidecars refuse a lower serial than the newest they
    /// accepted (and one below MESHGUARD_MIN_SERIAL). Raise it on every release.
    #[arg(long, value_name = "N")]
    serial: u64,
    /// Not valid before this time (Unix seconds).
    #[arg(long, value_name = "UNIX_SECONDS")]
    not_before: Option<u64>,
    /// Not valid after this time (Unix seconds).
    #[arg(long, value_name = "UNIX_SECONDS")]
    not_after: Option<u64>,
    /// On an Istio waypoint, a Service the configuration is released for
    /// (`NAME.NAMESPACE.svc.cluster.local`, as in the waypoint's filter chain
    /// names). The plugin refuses requests of any other Service's filter
    /// chain (`config_out_of_scope`). Repeat for several.
    #[arg(long, value_name = "HOST")]
    service: Vec<String>,
}

pub fn run(args: &Args, output: Output) -> anyhow::Result<ExitCode> {
    check_key_id(&args.key_id)?;
    let file = PolicyFile::read(&args.config)?;
    if let Err(error) = check_default(&file, args.filter) {
        return refused(output, &file, &error);
    }
    for w in &args.workload {
        let ok = w == "*"
            || w.split_once('/').is_some_and(|(ns, name)| {
                !ns.is_empty() && !name.is_empty() && !name.contains('/')
            });
        if !ok {
            bail!("--workload {w:?} must be NAMESPACE/WORKLOAD_NAME, NAMESPACE/* or *");
        }
    }
    if let (Some(nb), Some(na)) = (args.not_before, args.not_after) {
        if na < nb {
            bail!("--not-after {na} is before --not-before {nb}");
        }
    }
    let release = Release {
        filter: args.filter.name().into(),
        workloads: args.workload.clone(),
        serial: args.serial,
        not_before: args.not_before,
        not_after: args.not_after,
        services: (!args.service.is_empty()).then(|| args.service.clone()),
    };
    let key = read_signing_key(&args.key)?;
    let mut signed = integrity::sign_release(&file.bytes, &release, &args.key_id, &key)
        .map_err(|e| anyhow::anyhow!("{}", file.invalid(&e)))?;
    signed.push(b'\n');

    // The filter's own check with exactly this key trusted and required.
    let env = IntegrityEnv {
        trusted_keys: vec![(args.key_id.clone(), key.verifying_key())],
        require_signature: true,
        ..IntegrityEnv::default()
    };
    let loaded = integrity::load(&signed, &env)
        .with_context(|| "the signed configuration does not verify (this is a bug)")?;
    if loaded.signature
        != (SignatureStatus::Verified {
            key_id: args.key_id.clone(),
        })
        || loaded.release.as_ref() != Some(&release)
    {
        bail!("the signed configuration does not verify (this is a bug)");
    }
    // Scope check for the first workload named, inside the window.
    let sample = args.workload.first().map(|w| w.replace('*', "x"));
    let at = Admission {
        filter: args.filter.name(),
        workload: sample.as_deref(),
        now_s: args.not_before.or(args.not_after).unwrap_or(0),
        newest: None,
        admitted_here: false,
    };
    integrity::admit(&loaded, &env, &at).with_context(|| {
        "the signed configuration is not admitted in its own scope (this is a bug)"
    })?;

    match &args.out {
        Some(path) => {
            std::fs::write(path, &signed)
                .with_context(|| format!("cannot write {}", path.display()))?;
            if output.is_json() {
                print_json(&serde_json::json!({
                    "file": path.display().to_string(),
                    "key_id": args.key_id,
                    "filter": args.filter.name(),
                    "workloads": args.workload,
                    "serial": args.serial,
                    "fingerprint": loaded.fingerprint.to_string(),
                }))?;
            }
            eprintln!(
                "meshguard sign: {} signed with key {} for {} on {} serial {} (fingerprint={}) -> {}",
                file.name,
                args.key_id,
                args.filter.name(),
                args.workload.join(","),
                args.serial,
                loaded.fingerprint,
                path.display()
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&signed)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
