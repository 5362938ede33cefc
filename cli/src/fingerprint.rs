//! `meshguard fingerprint`: the fingerprint the filter computes for a config.

use std::io::Write;
use std::process::ExitCode;

use meshguard_core::integrity;
use meshguard_core::plugin::{section_fingerprints, Section, Shape};
use serde_json::{json, Value};

use crate::output::{print_json, refused, Output};
use crate::policy_file::PolicyFile;

/// Print a configuration's fingerprint and config_version.
///
/// The fingerprint is the lowercase hex SHA-256 of the canonical JSON of the
/// whole plugin configuration without its `signature` section; it is what
/// MESHGUARD_INTENDED_FINGERPRINT and a source of truth compare with. Any
/// filter's configuration is accepted (it is not validated). For a combined
/// `meshguard` config, each section's fingerprint follows on its own line.
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
    // A combined config: each section's fingerprint too (what an intended
    // document's `sections` names, so drift says which section differs).
    let sections = sections(&file);
    if output.is_json() {
        let sections: serde_json::Map<String, Value> = sections
            .iter()
            .map(|(s, fp)| (s.as_str().to_owned(), Value::String(fp.clone())))
            .collect();
        print_json(&json!({
            "fingerprint": fingerprint,
            "config_version": value.get("config_version").and_then(Value::as_str),
            "sections": if sections.is_empty() { Value::Null } else { Value::Object(sections) },
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{fingerprint} config_version={version}")?;
    for (section, fp) in &sections {
        writeln!(out, "  {} {fp}", section.as_str())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The sections of a combined config and their fingerprints (none for a
/// single section's config, or one that cannot be read as combined).
pub fn sections(file: &PolicyFile) -> Vec<(Section, String)> {
    if file.shape(Section::Identity) != Shape::Combined {
        return Vec::new();
    }
    integrity::load(&file.bytes, &integrity::IntegrityEnv::default())
        .ok()
        .and_then(|loaded| section_fingerprints(&loaded.filter_config, Shape::Combined).ok())
        .unwrap_or_default()
}
