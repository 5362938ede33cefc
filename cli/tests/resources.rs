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

const MASKING_WITH_HASH: &str = r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: meshguard-masking, namespace: shop}
spec:
  pluginName: meshguard-masking
  pluginConfig:
    rules:
    - {name: ssn, json_keys: [ssn], strategy: hash}
  vmConfig:
    env:
    - {name: MESHGUARD_REQUIRE_SIGNATURE, valueFrom: HOST}
    - {name: MESHGUARD_TRUSTED_KEYS, valueFrom: HOST}
    - {name: MESHGUARD_MASK_HASH_KEY, valueFrom: HOST}
"#;

/// A variable a resource takes from the proxy (`valueFrom: HOST`) is the
/// proxy's: without `--env` it is listed as provided by the proxy and the
/// rest is checked (exit 0), whatever this process's environment holds; with
/// `--env FILE` or `--env NAME=VALUE` it is read from there and checked as
/// that proxy would. (Broken by hand: reading HOST variables from this
/// process again fails the "process environment" row.)
#[test]
fn host_variables_are_the_proxys_and_env_checks_them_as_that_proxy_would() {
    let dir = TempDir::new();
    let masking = dir.write("masking.yaml", MASKING_WITH_HASH);
    let audit = dir.write("audit.yaml", TRAFFIC_EXTENSION);
    let no_keys = dir.write("no-keys.env", "# a proxy without the secret keys\n");
    let good_audit_key = format!("MESHGUARD_AUDIT_KEY={}", "A".repeat(44));
    let release_pub = format!("MESHGUARD_TRUSTED_KEYS=release={}", "A".repeat(43) + "=");
    /// (what, file, args, process env, exit code, stdout has, error code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<&'a str>,
        &'a [(&'a str, &'a str)],
        i32,
        &'a str,
        Option<&'a str>,
    );
    let listed_masking = "  provided by the proxy (valueFrom: HOST; --env checks them): MESHGUARD_REQUIRE_SIGNATURE, MESHGUARD_TRUSTED_KEYS, MESHGUARD_MASK_HASH_KEY\n";
    let cases: Vec<Case> =
        vec![
        (
            "without --env a hash rule's key is the proxy's: listed, the rest checked",
            &masking,
            vec![],
            &[],
            0,
            listed_masking,
            None,
        ),
        (
            "the process environment is not the proxy's",
            &masking,
            vec![],
            &[("MESHGUARD_REQUIRE_SIGNATURE", "true"), ("MESHGUARD_TRUSTED_KEYS", "bad")],
            0,
            listed_masking,
            None,
        ),
        (
            "--env FILE: a proxy without the key refuses the hash rule",
            &masking,
            vec!["--env", &no_keys],
            &[],
            1,
            "",
            Some("MG0101"),
        ),
        (
            "--env NAME=VALUE: a proxy with a key accepts it",
            &masking,
            vec!["--env", "MESHGUARD_MASK_HASH_KEY=sixteen-bytes-or-more"],
            &[],
            0,
            "valid masking policy",
            None,
        ),
        (
            "--env: a proxy requiring signatures refuses the unsigned config",
            &masking,
            vec![
                "--env",
                "MESHGUARD_MASK_HASH_KEY=sixteen-bytes-or-more",
                "--env",
                "MESHGUARD_REQUIRE_SIGNATURE=true",
                "--env",
                &release_pub,
            ],
            &[],
            1,
            "signatures required",
            Some("MG0102"),
        ),
        (
            "without --env the audit key is the proxy's",
            &audit,
            vec![],
            &[],
            0,
            "  provided by the proxy (valueFrom: HOST; --env checks them): MESHGUARD_AUDIT_KEY\n",
            None,
        ),
        (
            "--env: a proxy without the audit key refuses the audit filter",
            &audit,
            vec!["--env", &no_keys],
            &[],
            1,
            "",
            Some("MG0101"),
        ),
        (
            "--env: an audit key that is too short is refused",
            &audit,
            vec!["--env", "MESHGUARD_AUDIT_KEY=c2hvcnQ="],
            &[],
            1,
            "",
            Some("MG0101"),
        ),
        (
            "--env: a proxy with a valid audit key accepts it",
            &audit,
            vec!["--env", &good_audit_key],
            &[],
            0,
            "valid audit policy",
            None,
        ),
    ];
    for (what, file, args, process_env, code, stdout, error) in cases {
        let mut text_args = vec!["validate", file];
        text_args.extend(args.iter().copied());
        let out = meshguard(&text_args, process_env, None);
        assert_eq!(out.code, Some(code), "{what}: {}", out.context());
        assert!(out.stdout.contains(stdout), "{what}: {}", out.context());
        let mut json_args = text_args.clone();
        json_args.extend(["--output", "json"]);
        let out = meshguard(&json_args, process_env, None);
        let result = &json_results(&out)[0];
        assert_eq!(
            result["error"]["code"].as_str(),
            error,
            "{what}: {}",
            out.context()
        );
        let listed = result["provided_by_proxy"].as_array().unwrap();
        assert_eq!(
            listed.is_empty(),
            !args.is_empty(),
            "{what}: {}",
            out.context()
        );
    }
    // What the audit key check says, as the filter says it in Envoy's log.
    let out = meshguard(&["validate", &audit, "--env", &no_keys], &[], None);
    assert!(
        out.stderr
            .contains("invalid: env MESHGUARD_AUDIT_KEY: the key is empty"),
        "{}",
        out.context()
    );
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
