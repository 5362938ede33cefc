//! `meshguard publish`: writes the signed intended-state document of one
//! filter of one workload, for a source of truth to serve.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use meshguard_cli::publish::write_document;
use meshguard_core::integrity::{self, IntendedDocument};
use serde_json::Value;

use crate::keys::{check_key_id, read_signing_key};
use crate::output::{print_json, refused, Output};
use crate::policy_file::PolicyFile;
use crate::validate::Filter;

/// Publish CONFIG as the intended config of one filter of one workload.
///
/// Writes `OUT_DIR/<namespace>/<workload>/<filter>.json`: a document naming
/// the filter, the workload, CONFIG's fingerprint and an expiry, signed with
/// a `meshguard keygen` key (the same format as configs). Serve OUT_DIR under
/// `/v1/intended/` with any static web server or `meshguard serve-intended`;
/// the sidecar believes the document only if it is signed by a key in its
/// MESHGUARD_TRUSTED_KEYS, not revoked, bound to it and unexpired.
/// Approving a drifted workload = publishing the config it runs.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when written; 1 on a bad argument, unreadable config or key.\n\n\
                  Example:\n  meshguard publish policy.signed.json --workload orders/orders-v1 \
                  --key keys/release.key --key-id release --out-dir intended/"
)]
pub struct Args {
    /// The intended plugin configuration (signed or not: only its fingerprint is published).
    config: String,
    /// Which filter the document is for.
    #[arg(long, value_enum, default_value_t = Filter::Identity)]
    filter: Filter,
    /// The workload (Istio node metadata NAMESPACE/WORKLOAD_NAME).
    #[arg(long, value_name = "NS/NAME")]
    workload: String,
    /// Private key file written by `meshguard keygen` (ID.key).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The key's ID, as listed in MESHGUARD_TRUSTED_KEYS.
    #[arg(long, value_name = "ID")]
    key_id: String,
    /// Seconds the document stays valid; republish before then.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
    expires_in: u64,
    /// Directory to write under.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

pub fn run(args: &Args, output: Output) -> anyhow::Result<ExitCode> {
    check_key_id(&args.key_id)?;
    if args.expires_in == 0 {
        bail!("--expires-in must be at least 1 second");
    }
    let file = PolicyFile::read(&args.config)?;
    let fingerprint = match integrity::fingerprint(&file.bytes) {
        Ok(f) => f,
        Err(error) => {
            return refused(output, &file, &error);
        }
    };
    let value: Value = serde_json::from_slice(&file.bytes).unwrap_or_default();
    let config_version = match value.get("config_version") {
        Some(Value::String(v)) => Some(v.clone()),
        _ => None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let issued = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
    let now = now.as_secs();
    let document = IntendedDocument {
        filter: args.filter.name().into(),
        workload: args.workload.clone(),
        fingerprint,
        config_version,
        expires: now.saturating_add(args.expires_in),
        issued,
        // A combined plugin's document names each section's fingerprint, so
        // that a drift says which section differs.
        sections: match crate::fingerprint::sections(&file) {
            s if s.is_empty() => None,
            s => Some(
                s.into_iter()
                    .map(|(section, fp)| (section.as_str().to_owned(), fp))
                    .collect(),
            ),
        },
    };
    let key = read_signing_key(&args.key)?;
    let path = write_document(&args.out_dir, &document, &args.key_id, &key)?;
    if output.is_json() {
        print_json(&serde_json::json!({
            "file": path.display().to_string(),
            "filter": document.filter,
            "workload": document.workload,
            "fingerprint": document.fingerprint,
            "expires": document.expires,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "meshguard publish: {} -> {} (filter={} workload={} fingerprint={} expires={})",
        file.name,
        path.display(),
        document.filter,
        document.workload,
        document.fingerprint,
        document.expires
    );
    Ok(ExitCode::SUCCESS)
}
