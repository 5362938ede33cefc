//! Verifiers nobody here wrote, run on what the real Envoy produced: RFC 9421
//! signatures with PyPI's and npm's `http-message-signatures`, OTLP JSON with
//! the official `opentelemetry-proto` package's protobuf JSON parser. `make
//! tools` installs the pinned packages (.venv, .tools/node); the scripts live
//! in `host-tests/verifiers/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::repo_root;
use crate::upstream::Recorded;

/// One verifier's verdict on one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub valid: bool,
    pub error: String,
}

/// The project venv's Python (with the pinned packages).
pub fn python() -> anyhow::Result<PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    anyhow::ensure!(
        python.exists(),
        "no Python at {} (run `make tools`)",
        python.display()
    );
    Ok(python)
}

fn script(name: &str) -> PathBuf {
    repo_root().join("host-tests/verifiers").join(name)
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn verdicts(stdout: &str) -> anyhow::Result<Vec<Verdict>> {
    let list: Vec<Value> = serde_json::from_str(stdout.trim())
        .with_context(|| format!("verifier output is not a JSON list: {stdout}"))?;
    Ok(list
        .iter()
        .map(|v| Verdict {
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            valid: v["valid"].as_bool().unwrap_or(false),
            error: v["error"].as_str().unwrap_or_default().to_owned(),
        })
        .collect())
}

/// PyPI `http-message-signatures` on a cases file (format in
/// `host-tests/verifiers/rfc9421_verify.py`).
pub fn rfc9421_python(cases: &Path) -> anyhow::Result<Vec<Verdict>> {
    verdicts(&run(Command::new(python()?)
        .arg(script("rfc9421_verify.py"))
        .arg(cases))?)
}

/// npm `http-message-signatures` on the same cases file.
pub fn rfc9421_node(cases: &Path) -> anyhow::Result<Vec<Verdict>> {
    let node = crate::manifests::node()?;
    let modules = repo_root().join(".tools/node/node_modules/http-message-signatures");
    anyhow::ensure!(
        modules.join("package.json").is_file(),
        "the node package http-message-signatures is missing (run `make tools`)"
    );
    verdicts(&run(Command::new(node)
        .arg(script("rfc9421_verify.mjs"))
        .arg(cases))?)
}

/// Parses every OTLP JSON batch of `batches` (one per line) with the
/// official protobuf definitions and writes them to `exported` as a
/// Collector's file exporter would; returns the script's summary.
pub fn otlp_parse(batches: &Path, exported: &Path) -> anyhow::Result<Value> {
    let stdout = run(Command::new(python()?)
        .arg(script("otlp_parse.py"))
        .arg(batches)
        .arg(exported))?;
    serde_json::from_str(stdout.trim()).with_context(|| format!("summary: {stdout}"))
}

/// A received request as the verifiers read it (the JSON of `meshguard audit
/// verify-request`).
pub fn request_json(rec: &Recorded) -> Value {
    let headers: Vec<Value> = rec
        .headers
        .iter()
        .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
        .collect();
    json!({
        "method": rec.method,
        "authority": rec.authority,
        "target": rec.target,
        "headers": headers,
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&rec.body),
    })
}
