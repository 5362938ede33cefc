//! `meshguard validate` reads what platform teams keep in git: WasmPlugin and
//! TrafficExtension YAML, several files, a kustomize output on stdin; it says
//! which filter each resource is for, checks `pluginConfig` with the
//! `vmConfig.env` the filter would see, and has stable codes in JSON.

// Test code: clippy.toml allows these inside `#[test]` functions only, and the
// helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{meshguard, TempDir};
use serde_json::Value;

const WASMPLUGIN: &str = r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: meshguard-identity, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  url: oci://registry.example.com/meshguard/identity:0.1.0
  pluginName: meshguard-identity
  phase: AUTHZ
  pluginConfig:
    rules:
    - {name: frontend, action: allow, principals: [cluster.local/ns/shop/sa/frontend]}
  vmConfig:
    env:
    - {name: MESHGUARD_TRUSTED_KEYS, valueFrom: HOST}
"#;

const TRAFFIC_EXTENSION: &str = r#"
apiVersion: extensions.istio.io/v1alpha1
kind: TrafficExtension
metadata: {name: meshguard-audit, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: orders}]
  phase: STATS
  wasm:
    url: oci://registry.example.com/meshguard/audit:0.1.0
    pluginConfig: {commands: []}
    vmConfig:
      env:
      - {name: MESHGUARD_AUDIT_KEY, valueFrom: HOST}
"#;

fn json_results(out: &common::Output) -> Vec<Value> {
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", out.context()))
        .as_array()
        .cloned()
        .unwrap()
}

#[test]
fn wasmplugin_and_trafficextension_files_validate_and_name_their_filter() {
    let dir = TempDir::new();
    let a = dir.write("identity.yaml", WASMPLUGIN);
    let b = dir.write("audit.yaml", TRAFFIC_EXTENSION);
    let out = meshguard(&["validate", &a, &b], &[], None);
    assert_eq!(out.code, Some(0), "{}", out.context());
    assert!(out.stdout.contains("WasmPlugin shop/meshguard-identity (identity filter, from its pluginName): valid identity policy"), "{}", out.context());
    assert!(out.stdout.contains("TrafficExtension shop/meshguard-audit (audit filter, from its module url): valid audit policy"), "{}", out.context());
}

#[test]
fn a_kustomize_output_on_stdin_is_validated_resource_by_resource() {
    let stream = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default}}\n---{WASMPLUGIN}---{TRAFFIC_EXTENSION}"
    );
    let out = meshguard(&["validate", "-", "--output", "json"], &[], Some(&stream));
    assert_eq!(out.code, Some(0), "{}", out.context());
    let results = json_results(&out);
    let filters: Vec<&str> = results
        .iter()
        .map(|r| r["filter"].as_str().unwrap())
        .collect();
    assert_eq!(filters, ["identity", "audit"]);
    assert!(results
        .iter()
        .all(|r| r["valid"] == true && r["error"].is_null()));
}

#[test]
fn plugin_config_and_vm_env_are_checked_together_with_stable_codes() {
    let dir = TempDir::new();
    let cases = [
        (
            "a trust anchor inline beside the config",
            WASMPLUGIN.replace(
                "- {name: MESHGUARD_TRUSTED_KEYS, valueFrom: HOST}",
                "- {name: MESHGUARD_TRUSTED_KEYS, value: \"k=AAAA\"}",
            ),
            "MG0201",
        ),
        (
            "the audit key not passed to the VM",
            TRAFFIC_EXTENSION.replace("MESHGUARD_AUDIT_KEY", "OTHER"),
            "MG0202",
        ),
        (
            "an invalid pluginConfig",
            WASMPLUGIN.replace("action: allow", "action: maybe"),
            "MG0101",
        ),
        (
            "no meshguard resource",
            "kind: ConfigMap\nmetadata: {name: x}\n".into(),
            "MG0002",
        ),
        ("not YAML", "kind: [unclosed\n".into(), "MG0001"),
    ];
    for (what, yaml, code) in cases {
        let file = dir.write("case.yaml", &yaml);
        let out = meshguard(&["validate", &file, "--output", "json"], &[], None);
        assert_eq!(out.code, Some(1), "{what}: {}", out.context());
        let results = json_results(&out);
        assert_eq!(
            results[0]["error"]["code"],
            code,
            "{what}: {}",
            out.context()
        );
        assert_eq!(results[0]["valid"], false, "{what}");
    }
}

#[test]
fn plain_plugin_json_is_recognised_by_its_keys_and_a_contradicting_filter_is_an_error() {
    let dir = TempDir::new();
    let masking = dir.write(
        "m.json",
        r#"{"rules": [{"name": "ssn", "json_keys": ["ssn"]}]}"#,
    );
    let out = meshguard(&["validate", &masking, "--output", "json"], &[], None);
    assert_eq!(out.code, Some(0), "{}", out.context());
    assert_eq!(json_results(&out)[0]["filter"], "masking");
    let yaml = dir.write("i.yaml", WASMPLUGIN);
    let out = meshguard(&["validate", &yaml, "--filter", "audit"], &[], None);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("contradicts the resource"),
        "{}",
        out.context()
    );
}

#[test]
fn completions_and_version_are_there() {
    for shell in ["bash", "zsh", "fish"] {
        let out = meshguard(&["completions", shell], &[], None);
        assert_eq!(out.code, Some(0), "{shell}");
        assert!(
            out.stdout.contains("validate"),
            "{shell}: {}",
            out.context()
        );
    }
    let out = meshguard(&["--version"], &[], None);
    let version = out.stdout.trim();
    assert!(
        version.starts_with("meshguard 0.") && version.contains(" ("),
        "{version}"
    );
}

#[test]
fn every_command_speaks_json_with_output_json() {
    let dir = TempDir::new();
    let policy = dir.write("p.json", r#"{"config_version": "v1", "rules": []}"#);
    let out = meshguard(&["fingerprint", &policy, "--output", "json"], &[], None);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["config_version"], "v1");
    assert_eq!(v["fingerprint"].as_str().unwrap().len(), 64);

    let masking = dir.write(
        "m.json",
        r#"{"rules": [{"name": "ssn", "json_keys": ["ssn"]}]}"#,
    );
    let out = meshguard(
        &["mask", &masking, "--response", "--output", "json"],
        &[],
        Some(r#"{"ssn": "078-05-1120"}"#),
    );
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.context()));
    assert_eq!(v["verdict"], "masked");
    assert!(!v["body"].as_str().unwrap().contains("078-05-1120"));

    let keys = dir.path("keys");
    let out = meshguard(
        &[
            "keygen",
            "--key-id",
            "k1",
            "--out-dir",
            &keys,
            "--output",
            "json",
        ],
        &[],
        None,
    );
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.context()));
    assert!(v["trusted_keys_entry"].as_str().unwrap().contains('='));

    // Failures are JSON too, with a stable code.
    let out = meshguard(
        &["fingerprint", "/nonexistent", "--output", "json"],
        &[],
        None,
    );
    assert_eq!(out.code, Some(1));
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "MG0001");
    let out = meshguard(
        &[
            "explain",
            &policy,
            "--peer",
            "cluster.local/ns/a/sa/b",
            "--path",
            "/",
            "--output",
            "json",
        ],
        &[],
        None,
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
}
