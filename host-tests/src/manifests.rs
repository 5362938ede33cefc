//! The Istio manifest tooling, driven from tests: the render script
//! (`scripts/render-manifests.sh`), the offline validator
//! (`scripts/validate-manifests.mjs`, node with the pinned packages `make tools`
//! installs into `.tools/node`), the admission policy run with a real CEL
//! implementation (`scripts/admission-check.mjs`) and YAML read as JSON
//! through the same packages.
//! A missing tool is an error that says to run `make tools`, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::registry::tool;
use crate::repo_root;

/// What a script printed and how it ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Both streams, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run(command: &mut Command) -> anyhow::Result<Outcome> {
    let output = command
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    Ok(Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `node`, after checking the pinned packages are installed.
pub fn node() -> anyhow::Result<PathBuf> {
    let node = tool("node")?;
    let modules = match std::env::var_os("MESHGUARD_NODE_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join(".tools/node/node_modules"),
    };
    for package in [
        "@kubernetes-models/istio",
        "yaml",
        "ajv",
        "@marcbachmann/cel-js",
    ] {
        if !modules.join(package).join("package.json").is_file() {
            bail!(
                "the node package {package} is missing from {} (run `make tools`)",
                modules.display()
            );
        }
    }
    Ok(node)
}

/// Runs `scripts/render-manifests.sh` (renders dist/istio, builds dist/oci,
/// validates everything).
pub fn render() -> anyhow::Result<Outcome> {
    node()?;
    run(&mut Command::new(
        repo_root().join("scripts/render-manifests.sh"),
    ))
}

/// Runs `scripts/validate-manifests.mjs` on `paths` with extra environment.
pub fn validate(paths: &[&Path], env: &[(&str, &str)]) -> anyhow::Result<Outcome> {
    let mut command = Command::new(node()?);
    command.arg(repo_root().join("scripts/validate-manifests.mjs"));
    command.args(paths);
    for (k, v) in env {
        command.env(k, v);
    }
    run(&mut command)
}

/// Runs `scripts/admission-check.mjs` (the shipped ValidatingAdmissionPolicy,
/// evaluated as the API server would on CREATE) on `paths`.
pub fn admission_check(paths: &[&Path]) -> anyhow::Result<Outcome> {
    let mut command = Command::new(node()?);
    command.arg(repo_root().join("scripts/admission-check.mjs"));
    command.args(paths);
    run(&mut command)
}

/// The YAML documents of `path`, as a JSON array.
pub fn yaml_to_json(path: &Path) -> anyhow::Result<Vec<Value>> {
    let outcome = run(Command::new(node()?)
        .arg(repo_root().join("scripts/yaml-to-json.mjs"))
        .arg(path))?;
    if !outcome.success() {
        bail!("yaml-to-json {}: {}", path.display(), outcome.output());
    }
    match serde_json::from_str(&outcome.stdout)? {
        Value::Array(docs) => Ok(docs),
        other => bail!("yaml-to-json printed {other}"),
    }
}

/// The rendered manifests directory.
pub fn rendered_dir() -> PathBuf {
    repo_root().join("dist/istio")
}

/// The overlays of the combined plugin `make manifests` renders
/// (`dist/istio/rendered/<mode>-<api>.yaml`), as (mode, api): every attachment
/// for both extension APIs, plus the WasmPlugin overlay for Istio 1.24-1.26.
pub const OVERLAYS: [(&str, &str); 7] = [
    ("sidecar", "wasmplugin"),
    ("sidecar", "trafficextension"),
    ("sidecar", "wasmplugin-istio-1.24"),
    ("waypoint", "wasmplugin"),
    ("waypoint", "trafficextension"),
    ("service", "wasmplugin"),
    ("service", "trafficextension"),
];

/// The overlays of the single-section plugins (meshguard-identity, -masking,
/// -audit), both APIs.
pub const SECTION_OVERLAYS: [(&str, &str); 2] = [
    ("sidecar", "wasmplugin-sections"),
    ("sidecar", "trafficextension-sections"),
];

/// The overlays whose audit commands hash the body: the combined plugin as an
/// EnvoyFilter, and the single-section plugins with the audit EnvoyFilter.
pub const BODY_COMMAND_OVERLAYS: [(&str, &str); 2] = [
    ("sidecar", "body-commands"),
    ("sidecar", "wasmplugin-sections-body-commands"),
];

/// `kubectl kustomize DIR`.
pub fn kustomize(dir: &Path) -> anyhow::Result<Outcome> {
    run(Command::new(tool("kubectl")?).arg("kustomize").arg(dir))
}

/// `node scripts/generate-manifests.mjs ARGS`.
pub fn generate(args: &[&str]) -> anyhow::Result<Outcome> {
    run(Command::new(node()?)
        .arg(repo_root().join("scripts/generate-manifests.mjs"))
        .args(args))
}

/// Writes documents as one multi-document YAML file (JSON is YAML).
pub fn write_docs(path: &Path, docs: &[Value]) -> anyhow::Result<()> {
    let text: Vec<String> = docs.iter().map(Value::to_string).collect();
    std::fs::write(path, text.join("\n---\n"))?;
    Ok(())
}
