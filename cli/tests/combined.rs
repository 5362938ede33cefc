//! The CLI takes the combined `meshguard` plugin config as the proxy does:
//! the same sections, the same errors (located in their section), the same
//! one path normalization; `sign`, `publish` and `fingerprint` bind the
//! whole plugin and name each section.

mod common;

use common::{meshguard, run_with_config, TempDir};

const COMBINED: &str = r#"{"config_version": "v1",
  "identity": {"default_action": "allow",
               "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]}]},
  "masking": {"rules": [{"name": "pii", "detectors": ["email"], "json_keys": ["password"]}]},
  "audit": {"key_id": "k", "commands": []}}"#;

#[test]
fn validate_reads_a_combined_config_section_by_section() {
    for (config, code, want) in [
        (COMBINED.to_owned(), 0, "valid meshguard policy (version=v1, identity: mode=enforce, 1 rule; masking: mode=enforce, 1 rule; audit: 0 commands; path_normalization=MERGE_SLASHES)"),
        (
            COMBINED.replace("\"action\": \"deny\"", "\"action\": \"forbid\""),
            1,
            "identity.rules[0].action: unknown variant `forbid`",
        ),
        (
            COMBINED
                .replace(r#""identity": {"#, r#""identity": {"path_normalization": "MERGE_SLASHES", "#)
                .replace(r#""audit": {"#, r#""audit": {"path_normalization": "BASE", "#),
            1,
            "audit.path_normalization: contradicts",
        ),
        (
            r#"{"identity": {"default_action": "allow"}, "masking": {"rules": []}}"#.to_owned(),
            1,
            "masking.rules: is empty",
        ),
    ] {
        let (out, _) = run_with_config(&config, &["validate", "CONFIG"], |args| {
            meshguard(args, &[], None)
        });
        assert_eq!(out.code, Some(code), "{config}\n{}", out.context());
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(text.contains(want), "{config}: want {want:?}\n{}", out.context());
    }
}

#[test]
fn explain_and_mask_use_the_combined_configs_sections() {
    let (out, _) = run_with_config(
        COMBINED,
        &[
            "explain",
            "CONFIG",
            "--peer",
            "cluster.local/ns/a/sa/b",
            "--path",
            "//x/../admin/users",
        ],
        |args| meshguard(args, &[], None),
    );
    assert_eq!(out.code, Some(2), "{}", out.context());
    assert!(
        out.stdout.contains("reason: denied_by_rule"),
        "{}",
        out.context()
    );
    let (out, _) = run_with_config(COMBINED, &["mask", "CONFIG"], |args| {
        meshguard(args, &[], Some(r#"{"password": "x", "mail": "a@b.com"}"#))
    });
    assert_eq!(out.code, Some(0), "{}", out.context());
    assert_eq!(
        out.stdout.trim(),
        r#"{"password": "[REDACTED]", "mail": "[REDACTED]"}"#
    );
}

#[test]
fn fingerprint_sign_and_publish_bind_the_plugin_and_name_each_section() {
    let dir = TempDir::new();
    let config = dir.write("combined.json", COMBINED);
    let out = meshguard(&["fingerprint", &config], &[], None);
    assert_eq!(out.code, Some(0), "{}", out.context());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    for (line, section) in lines[1..].iter().zip(["identity", "masking", "audit"]) {
        assert!(line.trim_start().starts_with(section), "{line}");
    }
    common::keygen(&dir, "release");
    let signed = dir.path("signed.json");
    let out = meshguard(
        &[
            "sign",
            &config,
            "--key",
            &dir.path("keys/release.key"),
            "--key-id",
            "release",
            "--filter",
            "meshguard",
            "--workload",
            "default/backend",
            "--serial",
            "3",
            "--service",
            "orders.default.svc.cluster.local",
            "--out",
            &signed,
        ],
        &[],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.context());
    let signed_text = dir.read("signed.json");
    assert!(
        signed_text.contains(r#""filter":"meshguard""#)
            || signed_text.contains(r#""filter": "meshguard""#),
        "{signed_text}"
    );
    assert!(
        signed_text.contains("orders.default.svc.cluster.local"),
        "{signed_text}"
    );
    let out = meshguard(
        &[
            "publish",
            &signed,
            "--filter",
            "meshguard",
            "--workload",
            "default/backend",
            "--key",
            &dir.path("keys/release.key"),
            "--key-id",
            "release",
            "--out-dir",
            &dir.path("intended"),
        ],
        &[],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.context());
    let document = dir.read("intended/default/backend/meshguard.json");
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    for section in ["identity", "masking", "audit"] {
        assert_eq!(
            document["sections"][section].as_str().map(str::len),
            Some(64),
            "{document}"
        );
    }
}
