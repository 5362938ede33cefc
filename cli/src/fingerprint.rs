//! `meshguard fingerprint`: the fingerprint the filter computes for a config.

use std::io::Write;
use std::process::ExitCode;

use meshguard_core::integrity;
use serde_json::{json, Value};

use crate::output::{print_json, refused, Output};
use crate::policy_file::PolicyFile;

/// Print a configuration's fingerprint and config_version.
///
/// The fingerprint is the lowercase hex SHA-256 of the canonical JSON of the
/// whole plugin configuration without its `signature` section; it is what
/// MESHGUARD_INTENDED_FINGERPRINT and a source of truth compare with. Any
/// filter's configuration is accepted (it is not validated).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Output: `HEX config_version=VERSION` (`unset` when absent).\n\n\
                  Example:\n  meshguard fingerprint policy.json | cut -d' ' -f1"
)]
pub struct Args {
    /// Plugin configuration (the JSON of `pluginConfig`); `-` reads standard input.
    config: String,
}

pub fn run(args: &Args, output: Output) -> anyhow::Result<ExitCode> {
    let file = PolicyFile::read(&args.config)?;
    let fingerprint = match integrity::fingerprint(&file.bytes) {
        Ok(f) => f,
        Err(error) => {
            return refused(output, &file, &error);
        }
    };
    // `fingerprint` accepted the bytes as a JSON object, so this parses.
    let value: Value = serde_json::from_slice(&file.bytes).unwrap_or_default();
    let version = match value.get("config_version") {
        Some(Value::String(v)) => v.as_str(),
        _ => "unset",
    };
    if output.is_json() {
        print_json(&json!({
            "fingerprint": fingerprint,
            "config_version": value.get("config_version").and_then(Value::as_str),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{fingerprint} config_version={version}")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
