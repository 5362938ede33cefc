//! The identity filter in a real two-sidecar mesh: real mTLS with SPIFFE
//! certificates, real Envoy, real HTTP over HTTP/1.1 and HTTP/2. An allowed
//! row is proved at the recording upstream (the request arrived, with the
//! caller's XFCC element); a denied row by the client's answer AND by nothing
//! having reached the upstream.

use meshguard_host_tests::envoy::vm_crashes;
use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::{Deployment, Filter, Mesh};
use serde_json::Value;

const POLICY: &str = r#"{
  "config_version": "2026-11-21.1",
  "default_action": "deny",
  "transport": {
    "require_mtls": true,
    "min_tls_version": "TLSv1.2",
    "overrides": [
      {"name": "probes", "paths": ["/healthz"], "methods": ["GET"], "require_mtls": false},
      {"name": "admin-needs-tls13", "paths": ["/admin/*"], "min_tls_version": "TLSv1.3"},
      {"name": "open", "paths": ["/open/*"], "require_mtls": false}
    ]
  },
  "identity": {"trusted_gateways": ["cluster.local/ns/istio-system/sa/ingress"]},
  "rules": [
    {"name": "frontend-api", "action": "allow",
     "principals": ["cluster.local/ns/default/sa/frontend"], "paths": ["/api/*"], "methods": ["GET", "POST"]},
    {"name": "frontend-admin", "action": "allow",
     "principals": ["spiffe://cluster.local/ns/default/sa/frontend"], "paths": ["/admin/*"]},
    {"name": "jobs-batch", "action": "allow", "namespaces": ["jobs"], "paths": ["/batch/**"]},
    {"name": "reports-host", "action": "allow", "principals": ["*"], "hosts": ["reports.internal"], "paths": ["/reports"]},
    {"name": "no-deletes", "action": "deny", "methods": ["DELETE"]},
    {"name": "probes", "action": "allow", "paths": ["/healthz"]},
    {"name": "open-to-frontend", "action": "allow",
     "principals": ["cluster.local/ns/default/sa/frontend"], "paths": ["/open/*"]}
  ]
}"#;

async fn mesh(policy: &str) -> Mesh {
    Mesh::builder()
        .filter(Filter::identity(policy))
        .start()
        .await
        .expect("mesh starts")
}

/// One row: who calls, what they send, what they must get.
struct Case {
    profile: &'static str,
    method: &'static str,
    path: &'static str,
    host: &'static str,
    status: u16,
    reason: Option<&'static str>,
}

const fn case(
    profile: &'static str,
    method: &'static str,
    path: &'static str,
    status: u16,
    reason: Option<&'static str>,
) -> Case {
    Case {
        profile,
        method,
        path,
        host: "backend.default.svc",
        status,
        reason,
    }
}

/// Runs every row over HTTP/1.1 and HTTP/2 (client and sidecar legs).
async fn check(mesh: &Mesh, cases: &[Case]) {
    for protocol in Protocol::ALL {
        check_over(mesh, cases, protocol).await;
    }
}

async fn check_over(mesh: &Mesh, cases: &[Case], protocol: Protocol) {
    for c in cases {
        let id = format!("test-{}-{}", c.profile, c.path);
        let request = Request::new(c.method, c.path)
            .host(c.host)
            .protocol(protocol)
            .header("x-request-id", &id);
        let resp = mesh.send_as(c.profile, request).await.expect("response");
        let what = format!(
            "{} {} {} as {} over {protocol:?}",
            c.method, c.host, c.path, c.profile
        );
        assert_eq!(resp.status, c.status, "{what}: body {}", resp.text());
        match c.reason {
            Some(reason) => {
                let body = resp.json().expect("deny body is JSON");
                assert_eq!(body["error"], "access_denied", "{what}");
                assert_eq!(body["reason"], reason, "{what}");
                assert_eq!(body["request_id"], id.as_str(), "{what}");
                assert_eq!(
                    resp.header("x-meshguard-deny-reason"),
                    Some(reason),
                    "{what}"
                );
                mesh.assert_nothing_reached_upstream(&what).await;
            }
            None => {
                // The request really reached the upstream, once, as sent
                // (after Envoy's path normalization).
                let got = mesh.upstream().take_one().await.expect(&what);
                assert_eq!(got.method, c.method, "{what}");
                assert_eq!(got.header("x-request-id"), Some(id.as_str()), "{what}");
                assert_eq!(got.protocol, Protocol::Http1, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn peers_are_allowed_or_denied_by_identity_transport_and_route() {
    let mesh = mesh(POLICY).await;
    check(
        &mesh,
        &[
            // Identity.
            case("frontend", "GET", "/api/users", 200, None),
            case(
                "unknown",
                "GET",
                "/api/users",
                403,
                Some("no_matching_rule"),
            ),
            case("batch", "GET", "/api/users", 403, Some("no_matching_rule")),
            case("batch", "POST", "/batch/jobs/7", 200, None),
            // Transport: plaintext refused where mTLS is required, allowed for probes.
            case("plaintext", "GET", "/api/users", 403, Some("mtls_required")),
            case("plaintext", "GET", "/healthz", 200, None),
            case("plaintext", "POST", "/healthz", 403, Some("mtls_required")),
            case("frontend", "GET", "/healthz", 200, None),
            // The TLS floor on /admin/*.
            case(
                "frontend-tls12",
                "GET",
                "/admin/settings",
                403,
                Some("tls_version_too_low"),
            ),
            case("frontend", "GET", "/admin/settings", 200, None),
            case("frontend-tls12", "GET", "/api/users", 200, None),
            // Method scoping and deny-wins.
            case(
                "frontend",
                "PUT",
                "/api/users",
                403,
                Some("no_matching_rule"),
            ),
            case(
                "frontend",
                "DELETE",
                "/api/users",
                403,
                Some("denied_by_rule"),
            ),
            // Path scoping.
            case(
                "frontend",
                "GET",
                "/internal",
                403,
                Some("no_matching_rule"),
            ),
            // Envoy (Istio's BASE normalization) resolves dot segments
            // before the filter sees the path: each row below is decided the
            // other way if the filter saw the raw spelling.
            case(
                "batch",
                "POST",
                "/batch/../api/users",
                403,
                Some("no_matching_rule"),
            ),
            case("frontend", "GET", "/internal/../api/users", 200, None),
        ],
    )
    .await;
    // Host scoping.
    let mut reports = case("unknown", "GET", "/reports", 200, None);
    reports.host = "reports.internal";
    let mut elsewhere = case("unknown", "GET", "/reports", 403, Some("no_matching_rule"));
    elsewhere.host = "other.internal";
    check(&mesh, &[reports, elsewhere]).await;
}

#[tokio::test]
async fn probes_pass_in_plaintext_only_where_an_override_allows_it() {
    let policy = r#"{
      "transport": {"overrides": [{"name": "probes", "paths": ["/healthz"], "require_mtls": false}]},
      "rules": [{"name": "probes", "action": "allow", "paths": ["/healthz"]}]
    }"#;
    let mesh = mesh(policy).await;
    check(
        &mesh,
        &[
            case("plaintext", "GET", "/healthz", 200, None),
            case("plaintext", "GET", "/other", 403, Some("mtls_required")),
        ],
    )
    .await;
    // Straight to the server sidecar, no client sidecar at all.
    for protocol in Protocol::ALL {
        let resp = mesh
            .send_direct(Request::new("GET", "/other").protocol(protocol))
            .await
            .unwrap();
        assert_eq!(resp.status, 403);
        assert_eq!(
            resp.header("x-meshguard-deny-reason"),
            Some("mtls_required")
        );
        mesh.assert_nothing_reached_upstream("plaintext, direct")
            .await;
    }
}

#[tokio::test]
async fn deny_replies_follow_the_configured_status_and_detail() {
    let with = |detail: &str| {
        format!(
            r#"{{"deny_response": {{"status": 451, "detail": "{detail}"}},
                "rules": [{{"name": "no-deletes", "action": "deny", "methods": ["DELETE"]}},
                          {{"name": "rest", "action": "allow", "paths": ["/**"]}}]}}"#
        )
    };
    let peer = "spiffe://cluster.local/ns/default/sa/frontend";
    // detail -> (keys of the body, whether x-meshguard-deny-reason is sent)
    let rows: [(&str, &[&str], bool); 3] = [
        ("minimal", &["error", "request_id"], false),
        ("reason", &["error", "reason", "request_id"], true),
        (
            "verbose",
            &["error", "message", "peer", "reason", "request_id", "rule"],
            true,
        ),
    ];
    for (detail, keys, reason_header) in rows {
        // A mesh per level: a pushed listener is not used by connections the
        // client sidecar already pooled, so a push would test timing.
        let mesh = mesh(&with(detail)).await;
        for protocol in Protocol::ALL {
            let request = Request::new("DELETE", "/x")
                .protocol(protocol)
                .header("x-request-id", "rid-1");
            let resp = mesh.send_as("frontend", request).await.unwrap();
            let what = format!("{detail} over {protocol:?}");
            assert_eq!(resp.status, 451, "{what}: {}", resp.text());
            assert_eq!(
                resp.header("content-type"),
                Some("application/json"),
                "{what}"
            );
            let body: Value = resp.json().unwrap();
            let mut got: Vec<&str> = body
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            got.sort_unstable();
            assert_eq!(got, keys, "{what}: {body}");
            assert_eq!(body["error"], "access_denied");
            assert_eq!(body["request_id"], "rid-1");
            if detail == "verbose" {
                assert_eq!(body["peer"], peer);
                assert_eq!(body["rule"], "no-deletes");
            }
            assert_eq!(
                resp.header("x-meshguard-deny-reason"),
                reason_header.then_some("denied_by_rule"),
                "{what}"
            );
            mesh.assert_nothing_reached_upstream(&what).await;
        }
    }
}

#[tokio::test]
async fn xfcc_names_the_caller_only_when_a_trusted_gateway_appended_it() {
    let mesh = mesh(POLICY).await;
    let frontend = "spiffe://cluster.local/ns/default/sa/frontend";
    let gateway = "spiffe://cluster.local/ns/istio-system/sa/ingress";
    let forged = format!("By={gateway};URI={frontend}");
    let rows = [
        // The gateway vouches for frontend: allowed as frontend.
        ("gateway", "/api/users", forged.clone(), None),
        // The gateway's request without a caller element names no usable
        // caller: refused with its own reason, never anonymous.
        (
            "gateway",
            "/api/users",
            String::new(),
            Some("gateway_identity_unusable"),
        ),
        // An element the gateway did not append is ignored: again no caller.
        (
            "gateway",
            "/api/users",
            format!("By=spiffe://cluster.local/ns/x/sa/y;URI={frontend}"),
            Some("gateway_identity_unusable"),
        ),
        // A non-gateway peer claims to be frontend: judged as itself.
        (
            "unknown",
            "/api/users",
            forged.clone(),
            Some("no_matching_rule"),
        ),
        // A plaintext caller can never inject an identity: on /open/* mTLS is
        // not required, so only the identity decides (frontend may, anonymous
        // may not).
        (
            "plaintext",
            "/open/data",
            forged.clone(),
            Some("no_matching_rule"),
        ),
        ("frontend", "/open/data", String::new(), None),
    ];
    for protocol in Protocol::ALL {
        for (profile, path, xfcc, reason) in &rows {
            let mut request = Request::new("GET", path).protocol(protocol);
            if !xfcc.is_empty() {
                request = request.header("x-forwarded-client-cert", xfcc);
            }
            let resp = mesh.send_as(profile, request).await.unwrap();
            let what = format!("{profile} {path} with XFCC {xfcc:?} over {protocol:?}");
            let status = if reason.is_some() { 403 } else { 200 };
            assert_eq!(resp.status, status, "{what}: {}", resp.text());
            assert_eq!(resp.header("x-meshguard-deny-reason"), *reason, "{what}");
            if reason.is_some() {
                mesh.assert_nothing_reached_upstream(&what).await;
            } else {
                let got = mesh.upstream().take_one().await.unwrap();
                // The server sidecar appended the direct peer's element.
                let xfcc = got.header_all("x-forwarded-client-cert");
                assert_eq!(xfcc.len(), 1, "{what}: {got:?}");
                // The server sidecar appended the direct peer's element last.
                let direct_peer = match *profile {
                    "gateway" => gateway,
                    _ => frontend,
                };
                let value = String::from_utf8_lossy(xfcc[0]).into_owned();
                let last = value.rsplit(',').next().unwrap_or_default();
                assert!(
                    last.ends_with(&format!("URI={direct_peer}")),
                    "{what}: {value}"
                );
            }
        }
    }
    // Straight to the server sidecar in plaintext, with a forged element.
    // Istio's APPEND_FORWARD already drops XFCC from a caller without a
    // certificate (see the harness tests), so this row holds even without
    // the filter's check: the rows in
    // `a_plaintext_caller_never_names_an_identity_even_when_envoy_forwards_xfcc`
    // prove the filter's own.
    let resp = mesh
        .send_direct(Request::new("GET", "/open/data").header("x-forwarded-client-cert", &forged))
        .await
        .unwrap();
    assert_eq!(
        resp.header("x-meshguard-deny-reason"),
        Some("no_matching_rule")
    );
    mesh.assert_nothing_reached_upstream("plaintext with a forged XFCC")
        .await;
    let log = mesh
        .server
        .wait_for_log("via_gateway=spiffe://cluster.local/ns/istio-system/sa/ingress")
        .await
        .unwrap();
    assert!(
        log.contains("peer=spiffe://cluster.local/ns/default/sa/unknown"),
        "{log}"
    );
}

#[tokio::test]
async fn a_plaintext_caller_never_names_an_identity_even_when_envoy_forwards_xfcc() {
    let mesh = Mesh::builder()
        .filter(Filter::identity(POLICY))
        .forward_client_cert("ALWAYS_FORWARD_ONLY")
        .start()
        .await
        .unwrap();
    let gateway = "spiffe://cluster.local/ns/istio-system/sa/ingress";
    let frontend = "spiffe://cluster.local/ns/default/sa/frontend";
    for xfcc in [
        format!("By={gateway};URI={frontend}"),
        format!("URI={frontend}"),
        format!("By=spiffe://cluster.local/ns/default/sa/backend;URI={frontend}"),
    ] {
        for protocol in Protocol::ALL {
            let what = format!("{xfcc} over {protocol:?}");
            let request = Request::new("GET", "/open/data")
                .protocol(protocol)
                .header("x-forwarded-client-cert", &xfcc);
            let resp = mesh.send_direct(request.clone()).await.unwrap();
            assert_eq!(resp.status, 403, "{what}: {}", resp.text());
            assert_eq!(
                resp.header("x-meshguard-deny-reason"),
                Some("no_matching_rule"),
                "{what}"
            );
            mesh.assert_nothing_reached_upstream(&what).await;
            // The same header from the real frontend: this sidecar, told to
            // forward XFCC without appending its own element, cannot
            // establish that the certificate has a single URI SAN, so the
            // identity is unusable: refused, whatever the header says.
            // (Break used: PeerUris::Unknown treated as One in resolve_peer;
            // then this answered 200.)
            // A forged copy of this proxy's own element cannot be told from
            // the real one when the proxy appends none: the deployment
            // requirement docs/identity.md states (Istio always appends).
            let resp = mesh.send_as("frontend", request).await.unwrap();
            if xfcc.starts_with(&format!("By={}", meshguard_host_tests::mesh::SERVER_ID)) {
                assert_eq!(resp.status, 200, "{what}");
                mesh.upstream().take_one().await.unwrap();
                continue;
            }
            assert_eq!(resp.status, 403, "{what}");
            assert_eq!(
                resp.header("x-meshguard-deny-reason"),
                Some("peer_identity_unusable"),
                "{what}"
            );
            mesh.assert_nothing_reached_upstream(&what).await;
        }
    }
}

#[tokio::test]
async fn dry_run_lets_denials_through_but_counts_and_logs_them() {
    let policy = POLICY.replace(
        r#""default_action": "deny","#,
        r#""mode": "dry-run", "default_action": "deny","#,
    );
    let mesh = mesh(&policy).await;
    check(
        &mesh,
        &[
            case("unknown", "GET", "/api/users", 200, None),
            case("plaintext", "GET", "/api/users", 200, None),
            case("frontend", "DELETE", "/api/users", 200, None),
            case("frontend", "GET", "/api/users", 200, None),
        ],
    )
    .await;
    let metric = |d: &str, r: &str| {
        format!(r#"meshguard_identity_requests_total{{decision="{d}",reason="{r}"}}"#)
    };
    // Every row ran once per protocol.
    for (decision, reason, count) in [
        ("dry_run_denied", "no_matching_rule", 2),
        ("dry_run_denied", "mtls_required", 2),
        ("dry_run_denied", "denied_by_rule", 2),
        ("allowed", "allowed_by_rule", 2),
        ("denied", "no_matching_rule", 0),
    ] {
        let name = metric(decision, reason);
        assert_eq!(
            mesh.server.metric(&name).await.unwrap(),
            Some(count),
            "{name}"
        );
    }
    mesh.server
        .wait_for_log("dry-run would deny: reason=denied_by_rule by=rules[4] \"no-deletes\"")
        .await
        .unwrap();
}

#[tokio::test]
async fn decisions_and_config_loads_are_exported_to_prometheus_with_labels() {
    let mesh = mesh(POLICY).await;
    check(
        &mesh,
        &[
            case("frontend", "GET", "/api/a", 200, None),
            case("frontend", "GET", "/api/b", 200, None),
            case("plaintext", "GET", "/api/a", 403, Some("mtls_required")),
            case("unknown", "GET", "/api/a", 403, Some("no_matching_rule")),
            case("frontend", "DELETE", "/api/a", 403, Some("denied_by_rule")),
        ],
    )
    .await;
    let text = mesh.server.prometheus().await.unwrap();
    // Every row ran once per protocol.
    for (sample, value) in [
        (
            r#"meshguard_identity_requests_total{decision="allowed",reason="allowed_by_rule"}"#,
            4,
        ),
        (
            r#"meshguard_identity_requests_total{decision="denied",reason="mtls_required"}"#,
            2,
        ),
        (
            r#"meshguard_identity_requests_total{decision="denied",reason="no_matching_rule"}"#,
            2,
        ),
        (
            r#"meshguard_identity_requests_total{decision="denied",reason="denied_by_rule"}"#,
            2,
        ),
        (
            r#"meshguard_identity_requests_total{decision="denied",reason="tls_version_too_low"}"#,
            0,
        ),
        (
            r#"meshguard_identity_requests_total{decision="dry_run_denied",reason="denied_by_rule"}"#,
            0,
        ),
    ] {
        assert!(
            text.contains(&format!("{sample} {value}\n")),
            "missing `{sample} {value}` in:\n{text}"
        );
    }
    // Nonsense label pairs are never defined (bounded cardinality).
    assert!(
        !text.contains(r#"decision="allowed",reason="mtls_required""#),
        "{text}"
    );
    let loads = mesh
        .server
        .metric(&format!(
            r#"meshguard_config_loads_total{{filter="{}",result="accepted"}}"#,
            Deployment::current().filter_label("identity")
        ))
        .await
        .unwrap();
    assert!(loads.is_some_and(|n| n >= 1), "{loads:?}");
    // One log line per denial with rule, peer and reason.
    let log = mesh
        .server
        .wait_for_log("denied: reason=denied_by_rule")
        .await
        .unwrap();
    assert!(
        log.contains(
            "denied: reason=denied_by_rule by=rules[4] \"no-deletes\" peer=spiffe://cluster.local/ns/default/sa/frontend"
        ),
        "{log}"
    );
}

#[tokio::test]
async fn an_invalid_config_is_refused_at_start_with_the_precise_error() {
    let d = Deployment::current();
    let mut cases = vec![
        (
            r#"{"rules": [{"name": "a", "action": "allow", "principles": ["x"]}]}"#,
            format!(
                "meshguard {}: configuration refused: {}: unknown field `principles`",
                d.filter_label("identity"),
                d.config_path("identity", "rules[0].principles")
            ),
        ),
        (
            r#"{"rules": [{"name": "a", "action": "allow", "principals": ["spiffe://cluster.local/ns//sa/x"]}]}"#,
            format!(
                "configuration refused: {}: \"spiffe://cluster.local/ns//sa/x\" is not a valid SPIFFE ID: it has an empty path segment",
                d.config_path("identity", "rules[0].principals[0]")
            ),
        ),
    ];
    // Not JSON at all cannot be merged into a combined config: the section's
    // own plugin refuses it as a whole.
    if d == Deployment::Separate {
        cases.push((
            "not json",
            "configuration refused: config: expected a JSON object".into(),
        ));
    }
    for (config, want) in cases {
        let log = Mesh::builder()
            .filter(Filter::identity(config))
            .start_refused()
            .await
            .unwrap();
        assert!(log.contains(&want), "want {want:?} in:\n{log}");
    }
}

#[tokio::test]
async fn hostile_header_bytes_never_crash_the_filter() {
    let mesh = mesh(POLICY).await;
    // obs-text in XFCC, which is read because the direct peer is a trusted gateway.
    let request = Request::new("GET", "/api/users")
        .header("x-forwarded-client-cert", b"By=\xff\xfe;URI=\xc3");
    let resp = mesh.send_as("gateway", request).await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.text());
    // The VM is still alive: the next request is decided normally.
    let resp = mesh
        .send_as("frontend", Request::new("GET", "/api/users"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let log = mesh.flushed_server_log().await.unwrap();
    assert!(vm_crashes(&log).is_empty(), "{log}");
}

/// `meshguard explain --json` (the CLI binary) for one request.
fn cli_explain(policy: &str, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, policy).unwrap();
    let out = std::process::Command::new(meshguard_host_tests::meshguard_cli())
        .arg("explain")
        .arg(&file)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn what_meshguard_explain_says_is_what_envoy_does() {
    let mesh = mesh(POLICY).await;
    let gateway = "spiffe://cluster.local/ns/istio-system/sa/ingress";
    let frontend = "spiffe://cluster.local/ns/default/sa/frontend";
    let vouched = format!("By={gateway};URI={frontend}");
    // (profile, method, path, host, xfcc)
    let rows: Vec<(&str, &str, &str, &str, &str)> = vec![
        ("frontend", "GET", "/api/users", "backend.default.svc", ""),
        (
            "frontend",
            "DELETE",
            "/api/users",
            "backend.default.svc",
            "",
        ),
        ("frontend", "PUT", "/api/users", "backend.default.svc", ""),
        ("frontend", "GET", "/internal", "backend.default.svc", ""),
        (
            "frontend-tls12",
            "GET",
            "/admin/settings",
            "backend.default.svc",
            "",
        ),
        (
            "frontend-tls12",
            "GET",
            "/api/users",
            "backend.default.svc",
            "",
        ),
        (
            "frontend",
            "GET",
            "/admin/settings",
            "backend.default.svc",
            "",
        ),
        ("unknown", "GET", "/api/users", "backend.default.svc", ""),
        ("unknown", "GET", "/reports", "reports.internal", ""),
        ("unknown", "GET", "/reports", "other.internal", ""),
        ("batch", "POST", "/batch/jobs/7", "backend.default.svc", ""),
        ("plaintext", "GET", "/healthz", "backend.default.svc", ""),
        ("plaintext", "POST", "/healthz", "backend.default.svc", ""),
        ("plaintext", "GET", "/api/users", "backend.default.svc", ""),
        (
            "plaintext",
            "GET",
            "/open/data",
            "backend.default.svc",
            &vouched,
        ),
        (
            "gateway",
            "GET",
            "/api/users",
            "backend.default.svc",
            &vouched,
        ),
        ("gateway", "GET", "/api/users", "backend.default.svc", ""),
    ];
    let identity = |profile: &str| match profile {
        "frontend" | "frontend-tls12" => frontend,
        "gateway" => gateway,
        "batch" => "spiffe://cluster.local/ns/jobs/sa/batch",
        _ => "spiffe://cluster.local/ns/default/sa/unknown",
    };
    for (profile, method, path, host, xfcc) in rows {
        let mut args = vec!["--method", method, "--path", path, "--host", host];
        match profile {
            "plaintext" => args.push("--plaintext"),
            other => args.extend(["--peer", identity(other)]),
        }
        if profile == "frontend-tls12" {
            args.extend(["--tls-version", "TLSv1.2"]);
        }
        // What the server sidecar appends, as Envoy does (APPEND_FORWARD).
        let appended = format!(
            "{xfcc},By={};URI={}",
            meshguard_host_tests::mesh::SERVER_ID,
            identity(profile)
        );
        let appended = appended.trim_start_matches(',').to_string();
        if profile == "gateway" {
            args.extend([
                "--xfcc",
                &appended,
                "--local-identity",
                meshguard_host_tests::mesh::SERVER_ID,
            ]);
        }
        let explained = cli_explain(POLICY, &args);
        let mut request = Request::new(method, path).host(host);
        if !xfcc.is_empty() {
            request = request.header("x-forwarded-client-cert", xfcc);
        }
        let resp = mesh.send_as(profile, request).await.unwrap();
        let what = format!("{method} {host}{path} as {profile}: CLI {explained}");
        let passes = explained["request_passes"].as_bool().unwrap();
        assert_eq!(resp.status == 200, passes, "{what}: Envoy {}", resp.status);
        if passes {
            mesh.upstream().take_one().await.unwrap();
        } else {
            assert_eq!(
                resp.header("x-meshguard-deny-reason"),
                explained["reason"].as_str(),
                "{what}"
            );
            mesh.assert_nothing_reached_upstream(&what).await;
        }
    }
}
