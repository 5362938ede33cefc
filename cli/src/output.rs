//! `--output text|json`, accepted by every command.
//!
//! With `json`, a command prints one JSON value on standard output: its
//! result, or `{"error": {"code": "MG....", "message": ...}}` when it fails
//! (codes in docs/cli.md). `serve-intended` and `completions` have no result
//! to print and ignore it.

use std::io::Write;

use clap::ValueEnum;
use serde_json::{json, Value};

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

impl Output {
    pub fn is_json(self) -> bool {
        self == Self::Json
    }
}

/// Prints one JSON value on standard output.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}

/// The JSON form of a failure with its stable code.
pub fn error_json(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// A configuration the filter refuses: the line Envoy's log shows on standard
/// error and, with `--output json`, its `MG0101` error on standard output.
pub fn refused(
    output: Output,
    file: &crate::policy_file::PolicyFile,
    error: &impl std::fmt::Display,
) -> anyhow::Result<std::process::ExitCode> {
    if output.is_json() {
        print_json(&error_json("MG0101", &error.to_string()))?;
    }
    eprintln!("{}", file.invalid(error));
    Ok(std::process::ExitCode::FAILURE)
}
