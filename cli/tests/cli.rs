//! Runs the built `meshguard` binary: each row is a config, a command line, and
//! what the user must see (exit status, stdout, stderr).

// Test code: clippy.toml allows these inside `#[test]` functions only, and this
// file's helpers are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_output, meshguard, repo_file, Output, TempDir};

const FRONTEND: &str = "cluster.local/ns/default/sa/frontend";
const GATEWAY: &str = "spiffe://cluster.local/ns/istio-system/sa/ingress";
const LOCAL: &str = "spiffe://cluster.local/ns/default/sa/backend";

const POLICY: &str = r#"{
  "config_version": "v1",
  "identity": {"trusted_gateways": ["cluster.local/ns/istio-system/sa/ingress"]},
  "transport": {
    "min_tls_version": "TLSv1.2"
  },
  "rules": [
    {"name": "frontend-api", "action": "allow",
     "principals": ["cluster.local/ns/default/sa/frontend"], "paths": ["/api/*"]},
    {"name": "no-deletes", "action": "deny", "methods": ["DELETE"]}
  ]
}"#;

const DRY_RUN: &str =
    r#"{"mode": "dry-run", "rules": [{"name": "a", "action": "allow", "paths": ["/a"]}]}"#;

const UNKNOWN_KEY: &str =
    r#"{"rules": [{"name": "a", "action": "allow", "principles": ["cluster.local/ns/a/sa/b"]}]}"#;

/// Legal, but a plaintext caller slips past the deny rule: `validate` warns.
const WARNS: &str = r#"{"transport": {"require_mtls": false},
  "rules": [{"name": "block-batch", "action": "deny", "principals": ["cluster.local/ns/jobs/sa/batch"]}]}"#;

/// Runs `args` with every `CONFIG` replaced by the path of a file holding `config`.
fn run_with_config(config: &str, args: &[&str]) -> (Output, String) {
    common::run_with_config(config, args, |args| meshguard(args, &[], None))
}

struct Case {
    name: &'static str,
    config: &'static str,
    args: &'static [&'static str],
    code: i32,
    /// Each must appear in stdout (`CONFIG` stands for the config's path).
    stdout: &'static [&'static str],
    /// Each must appear in stderr.
    stderr: &'static [&'static str],
}

fn check(cases: &[Case]) {
    for case in cases {
        let (out, path) = run_with_config(case.config, case.args);
        assert_output(
            case.name,
            &out,
            case.code,
            case.stdout,
            case.stderr,
            |want| want.replace("CONFIG", &path),
        );
    }
}

#[test]
fn validate_reports_what_the_filter_would_say() {
    check(&[
        Case {
            name: "valid config",
            config: POLICY,
            args: &["validate", "CONFIG"],
            code: 0,
            stdout: &[
                "CONFIG: valid identity policy (version=v1, mode=enforce, 2 rules) fingerprint=",
                " signature=unsigned\n",
            ],
            stderr: &[],
        },
        Case {
            name: "explicit filter, defaults everywhere",
            config: "{}",
            args: &["validate", "--filter", "identity", "CONFIG"],
            code: 0,
            stdout: &[
                "CONFIG: valid identity policy (version=unset, mode=enforce, 0 rules) fingerprint=",
                " signature=unsigned\n",
            ],
            stderr: &[],
        },
        Case {
            name: "unknown key",
            config: UNKNOWN_KEY,
            args: &["validate", "CONFIG"],
            code: 1,
            stdout: &[],
            stderr: &[
                "CONFIG: invalid: rules[0].principles: unknown field `principles`, expected one of",
            ],
        },
        Case {
            name: "semantic error",
            config: r#"{"rules": [{"name": "a", "action": "allow", "paths": ["api/*"]}]}"#,
            args: &["validate", "CONFIG"],
            code: 1,
            stdout: &[],
            stderr: &["CONFIG: invalid: rules[0].paths[0]: \"api/*\" must start with `/`"],
        },
        Case {
            name: "warnings go to stderr, still valid",
            config: WARNS,
            args: &["validate", "CONFIG"],
            code: 0,
            stdout: &[
                "CONFIG: valid identity policy (version=unset, mode=enforce, 1 rule) fingerprint=",
                " signature=unsigned\n",
            ],
            stderr: &[
                r#"warning: rules[0] ("block-batch"): denies by peer identity while plaintext is accepted"#,
            ],
        },
        Case {
            name: "dry-run mode is reported",
            config: DRY_RUN,
            args: &["validate", "CONFIG"],
            code: 0,
            stdout: &["mode=dry-run"],
            stderr: &[],
        },
        Case {
            name: "unknown filter",
            config: POLICY,
            args: &["validate", "--filter", "ratelimit", "CONFIG"],
            code: 1,
            stdout: &[],
            stderr: &["invalid value 'ratelimit'"],
        },
    ]);
}

#[test]
fn validate_reads_stdin_and_reports_unreadable_files() {
    let out = meshguard(&["validate", "-"], &[], Some(UNKNOWN_KEY));
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .starts_with("<stdin>: invalid: rules[0].principles: unknown field"),
        "{}",
        out.stderr
    );

    let out = meshguard(&["validate", "-"], &[], Some(POLICY));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("<stdin>: valid identity policy"));

    let dir = TempDir::new();
    let missing = dir.0.join("missing.json");
    let out = meshguard(&["validate", missing.to_str().unwrap()], &[], None);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
}

#[test]
fn explain_shows_the_decision_and_why() {
    check(&[
        Case {
            name: "allow by rule",
            config: POLICY,
            args: &[
                "explain",
                "CONFIG",
                "--peer",
                FRONTEND,
                "--path",
                "/api/users?x=1",
            ],
            code: 0,
            stdout: &["ALLOW\n\
                reason: allowed_by_rule (an allow rule matched)\n\
                decided by: rules[0] \"frontend-api\"\n\
                peer: spiffe://cluster.local/ns/default/sa/frontend (source: certificate)\n\
                transport: mtls TLSv1.3\n"],
            stderr: &[],
        },
        Case {
            name: "deny: plaintext",
            config: POLICY,
            args: &["explain", "CONFIG", "--plaintext", "--path", "/api/users"],
            code: 2,
            stdout: &["DENY\n\
                reason: mtls_required (mutual TLS is required and the connection is not mTLS)\n\
                decided by: transport\n\
                peer: none (source: certificate)\n\
                transport: plaintext\n"],
            stderr: &[],
        },
        Case {
            name: "deny: TLS without client certificate",
            config: POLICY,
            args: &[
                "explain",
                "CONFIG",
                "--no-client-cert",
                "--path",
                "/api/users",
            ],
            code: 2,
            stdout: &["reason: mtls_required", "transport: tls TLSv1.3\n"],
            stderr: &[],
        },
        Case {
            name: "deny: TLS version",
            config: POLICY,
            args: &[
                "explain",
                "CONFIG",
                "--peer",
                FRONTEND,
                "--path",
                "/api/x",
                "--tls-version",
                "TLSv1.1",
            ],
            code: 2,
            stdout: &["reason: tls_version_too_low", "transport: mtls TLSv1.1\n"],
            stderr: &[],
        },
        Case {
            name: "deny by rule wins over an allow rule",
            config: POLICY,
            args: &[
                "explain", "CONFIG", "--peer", FRONTEND, "--path", "/api/x", "--method", "delete",
            ],
            code: 2,
            stdout: &[
                "DENY\n",
                "reason: denied_by_rule (a deny rule matched)\n",
                "decided by: rules[1] \"no-deletes\"\n",
            ],
            stderr: &[],
        },
        Case {
            name: "deny: no rule matches",
            config: POLICY,
            args: &[
                "explain",
                "CONFIG",
                "--peer",
                "spiffe://cluster.local/ns/jobs/sa/batch",
                "--path",
                "/api/x",
            ],
            code: 2,
            stdout: &["reason: no_matching_rule", "decided by: default_action\n"],
            stderr: &[],
        },
        Case {
            name: "dry-run deny",
            config: DRY_RUN,
            args: &["explain", "CONFIG", "--peer", FRONTEND, "--path", "/b"],
            code: 2,
            stdout: &["DENY (dry-run: the request would pass)\nreason: no_matching_rule"],
            stderr: &[],
        },
        Case {
            name: "dry-run allow",
            config: DRY_RUN,
            args: &["explain", "CONFIG", "--peer", FRONTEND, "--path", "/a"],
            code: 0,
            stdout: &["ALLOW\n"],
            stderr: &[],
        },
        Case {
            name: "a certificate without a SPIFFE ID has no identity",
            config: POLICY,
            args: &[
                "explain",
                "CONFIG",
                "--peer",
                "https://example.com",
                "--path",
                "/api/x",
            ],
            code: 2,
            stdout: &[
                "peer: none (source: certificate)\n",
                "transport: mtls TLSv1.3\n",
            ],
            stderr: &["note: --peer is not a valid SPIFFE ID"],
        },
        Case {
            name: "invalid config",
            config: UNKNOWN_KEY,
            args: &["explain", "CONFIG", "--peer", FRONTEND, "--path", "/"],
            code: 1,
            stdout: &[],
            stderr: &["CONFIG: invalid: rules[0].principles: unknown field"],
        },
        Case {
            name: "--peer is required with a client certificate",
            config: POLICY,
            args: &["explain", "CONFIG", "--path", "/"],
            code: 1,
            stdout: &[],
            stderr: &["--peer <ID>"],
        },
        Case {
            name: "--peer contradicts --plaintext",
            config: POLICY,
            args: &[
                "explain",
                "CONFIG",
                "--plaintext",
                "--peer",
                FRONTEND,
                "--path",
                "/",
            ],
            code: 1,
            stdout: &[],
            stderr: &["cannot be used with"],
        },
        Case {
            name: "--tls-version contradicts --plaintext",
            config: POLICY,
            args: &[
                "explain",
                "CONFIG",
                "--plaintext",
                "--tls-version",
                "TLSv1.2",
                "--path",
                "/",
            ],
            code: 1,
            stdout: &[],
            stderr: &["cannot be used with"],
        },
    ]);
}

#[test]
fn explain_follows_the_xfcc_trust_model() {
    let vouched = format!("By={GATEWAY};URI=spiffe://{FRONTEND},By={LOCAL};URI={GATEWAY}");
    let gateway_only = format!("By={LOCAL};URI={GATEWAY}");
    let other_then_ours = format!(
        "By=spiffe://x/y;URI=spiffe://cluster.local/ns/a/sa/b,By={LOCAL};URI=spiffe://{FRONTEND}"
    );
    let cases = [
        // The gateway's element names the caller; the local element is skipped.
        (GATEWAY, vouched.as_str(), 0, "peer: spiffe://cluster.local/ns/default/sa/frontend (source: gateway spiffe://cluster.local/ns/istio-system/sa/ingress)\n", ""),
        // A gateway request without an element it appended has no usable
        // caller: refused with its own reason, never anonymous.
        (GATEWAY, gateway_only.as_str(), 2, "reason: gateway_identity_unusable", "note: the peer is a trusted gateway"),
        // Any other peer's XFCC never names the caller.
        (FRONTEND, other_then_ours.as_str(), 0, "peer: spiffe://cluster.local/ns/default/sa/frontend (source: certificate)\n", "note: --xfcc did not name the caller"),
        // The caller's own elements: the sidecar appends its element after them.
        (FRONTEND, "By=spiffe://x/y;URI=spiffe://cluster.local/ns/a/sa/b", 0, "peer: spiffe://cluster.local/ns/default/sa/frontend (source: certificate)\n", "note: --xfcc did not name the caller"),
        // Our own element lists two URI SANs for the peer certificate: unusable.
        (FRONTEND, "By=spiffe://cluster.local/ns/default/sa/backend;URI=spiffe://cluster.local/ns/default/sa/frontend;URI=spiffe://cluster.local/ns/a/sa/b", 2, "reason: peer_identity_unusable", "note: --xfcc did not name the caller"),
    ];
    for (peer, xfcc, code, stdout, stderr) in cases {
        let (out, _) = run_with_config(
            POLICY,
            &[
                "explain",
                "CONFIG",
                "--peer",
                peer,
                "--path",
                "/api/x",
                "--xfcc",
                xfcc,
                "--local-identity",
                "cluster.local/ns/default/sa/backend",
            ],
        );
        assert_eq!(out.code, Some(code), "{xfcc}: {}{}", out.stdout, out.stderr);
        // An empty expectation means "nothing", not "anything".
        for (got, want) in [(&out.stdout, stdout), (&out.stderr, stderr)] {
            if want.is_empty() {
                assert_eq!(got, "", "{xfcc}");
            } else {
                assert!(got.contains(want), "{xfcc}: {got}");
            }
        }
    }
}

#[test]
fn explain_json_is_one_object_with_the_same_facts() {
    let cases = [
        (
            POLICY,
            &["--peer", FRONTEND, "--path", "/api/x"][..],
            0,
            serde_json::json!({
                "decision": "allow",
                "mode": "enforce",
                "request_passes": true,
                "reason": "allowed_by_rule",
                "description": "an allow rule matched",
                "decided_by": "rules[0] \"frontend-api\"",
                "rule": "frontend-api",
                "peer": {
                    "identity": "spiffe://cluster.local/ns/default/sa/frontend",
                    "source": "certificate",
                    "gateway": null
                },
                "transport": {"security": "mtls", "tls_version": "TLSv1.3"},
                "request": {"method": "GET", "path": "/api/x", "host": "localhost"}
            }),
        ),
        (
            DRY_RUN,
            &[
                "--plaintext",
                "--path",
                "/a",
                "--method",
                "POST",
                "--host",
                "svc:8080",
            ][..],
            2,
            serde_json::json!({
                "decision": "deny",
                "mode": "dry-run",
                "request_passes": true,
                "reason": "mtls_required",
                "description": "mutual TLS is required and the connection is not mTLS",
                "decided_by": "transport",
                "rule": null,
                "peer": {"identity": null, "source": "certificate", "gateway": null},
                "transport": {"security": "plaintext", "tls_version": null},
                "request": {"method": "POST", "path": "/a", "host": "svc:8080"}
            }),
        ),
    ];
    for (config, args, code, want) in cases {
        let mut full = vec!["explain", "CONFIG", "--json"];
        full.extend_from_slice(args);
        let (out, _) = run_with_config(config, &full);
        assert_eq!(out.code, Some(code), "{}", out.stderr);
        assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
        let got: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(got, want);
    }
}

#[test]
fn the_example_policies_validate() {
    for (file, mode) in [
        ("strict.json", "mode=enforce"),
        ("dry-run.json", "mode=dry-run"),
    ] {
        let path = repo_file(&format!("examples/identity/{file}"));
        let out = meshguard(&["validate", &path], &[], None);
        assert_eq!(out.code, Some(0), "{file}: {}", out.stderr);
        assert!(out.stdout.contains(mode), "{file}: {}", out.stdout);
        assert_eq!(out.stderr, "", "{file} has warnings");
    }
}

#[test]
fn the_strict_example_behaves_as_documented() {
    let config = repo_file("examples/identity/strict.json");
    let config = config.as_str();
    let ingress = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    let partner = format!("By=spiffe://{ingress};URI=spiffe://partner.example.com/clients/acme");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--plaintext", "--path", "/healthz"],
            0,
            "decided by: rules[0] \"probes\"",
        ),
        (
            &["--plaintext", "--path", "/api/orders"],
            2,
            "reason: mtls_required",
        ),
        (
            &[
                "--peer",
                "cluster.local/ns/shop/sa/frontend",
                "--path",
                "/api/orders",
                "--method",
                "POST",
            ],
            0,
            "reason: allowed_by_rule",
        ),
        (
            &[
                "--peer",
                "cluster.local/ns/shop/sa/frontend",
                "--path",
                "/api/orders",
                "--tls-version",
                "TLSv1.1",
            ],
            2,
            "reason: tls_version_too_low",
        ),
        (
            &[
                "--peer",
                "cluster.local/ns/shop/sa/frontend",
                "--path",
                "/admin/users",
            ],
            2,
            "decided by: rules[5] \"admin-only-from-ops\"",
        ),
        (
            &[
                "--peer",
                "cluster.local/ns/ops/sa/console",
                "--path",
                "/admin/users",
            ],
            0,
            "decided by: rules[4] \"ops-admin\"",
        ),
        (
            &[
                "--peer",
                "cluster.local/ns/jobs/sa/nightly",
                "--path",
                "/batch/a/b",
                "--method",
                "POST",
                "--host",
                "orders.shop.svc.cluster.local:8080",
            ],
            0,
            "decided by: rules[2] \"batch-jobs\"",
        ),
        (
            &[
                "--peer",
                ingress,
                "--path",
                "/api/public/catalog",
                "--xfcc",
                &partner,
            ],
            0,
            "decided by: rules[3] \"partners-via-ingress\"",
        ),
        (
            &["--peer", ingress, "--path", "/api/public/catalog"],
            2,
            "reason: gateway_identity_unusable",
        ),
    ];
    for (args, code, want) in cases {
        let mut full = vec!["explain", config];
        full.extend_from_slice(args);
        let out = meshguard(&full, &[], None);
        assert_eq!(
            out.code,
            Some(*code),
            "{args:?}: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(out.stdout.contains(want), "{args:?}: {}", out.stdout);
    }
}

#[test]
fn help_documents_the_exit_codes_and_usage_errors_exit_1() {
    let out = meshguard(&["explain", "--help"], &[], None);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.contains("2 when the policy denies it"),
        "{}",
        out.stdout
    );
    let out = meshguard(&[], &[], None);
    assert_eq!(out.code, Some(1));
    let out = meshguard(&["frobnicate"], &[], None);
    assert_eq!(out.code, Some(1));
}
