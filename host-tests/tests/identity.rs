//! The identity filter in a real two-sidecar mesh: real mTLS with SPIFFE
//! certificates, real Envoy, real HTTP.

use meshguard_host_tests::http::Request;
use meshguard_host_tests::mesh::{Filter, Mesh};

const POLICY: &str = r#"{
  "config_version": "2026-11-21.1",
  "default_action": "deny",
  "transport": {
    "require_mtls": true,
    "min_tls_version": "TLSv1.2",
    "overrides": [
      {"name": "probes", "paths": ["/healthz"], "methods": ["GET"], "require_mtls": false},
      {"name": "admin-needs-tls13", "paths": ["/admin/*"], "min_tls_version": "TLSv1.3"}
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
    {"name": "probes", "action": "allow", "paths": ["/healthz"]}
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

async fn check(mesh: &Mesh, cases: &[Case]) {
    for c in cases {
        let request = Request::new(c.method, c.path)
            .host(c.host)
            .header("x-request-id", format!("test-{}-{}", c.profile, c.path));
        let resp = mesh.send_as(c.profile, request).await.expect("response");
        let what = format!("{} {} {} as {}", c.method, c.host, c.path, c.profile);
        assert_eq!(resp.status, c.status, "{what}: body {}", resp.text());
        match c.reason {
            Some(reason) => {
                let body = resp.json().expect("deny body is JSON");
                assert_eq!(body["error"], "access_denied", "{what}");
                assert_eq!(body["reason"], reason, "{what}");
                assert_eq!(
                    body["request_id"],
                    format!("test-{}-{}", c.profile, c.path),
                    "{what}"
                );
                assert_eq!(
                    resp.header("x-meshguard-deny-reason"),
                    Some(reason),
                    "{what}"
                );
            }
            None => {
                // The echo upstream answered: the request really went through.
                let echoed = resp.json().expect("echo body");
                assert_eq!(echoed["path"], c.path, "{what}");
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
            // Envoy normalizes the path before the filter sees it.
            case(
                "unknown",
                "GET",
                "/healthz/../api/users",
                403,
                Some("no_matching_rule"),
            ),
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
    let resp = mesh
        .send_direct(Request::new("GET", "/other"))
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
}

#[tokio::test]
async fn xfcc_names_the_caller_only_when_a_trusted_gateway_appended_it() {
    let mesh = mesh(POLICY).await;
    let frontend = "spiffe://cluster.local/ns/default/sa/frontend";
    let gateway = "spiffe://cluster.local/ns/istio-system/sa/ingress";
    let rows = [
        // The gateway vouches for frontend: allowed as frontend.
        ("gateway", format!("By={gateway};URI={frontend}"), 200),
        // The gateway's request without a caller element is anonymous.
        ("gateway", String::new(), 403),
        // An element the gateway did not append is ignored.
        (
            "gateway",
            format!("By=spiffe://cluster.local/ns/x/sa/y;URI={frontend}"),
            403,
        ),
        // A non-gateway peer claims to be frontend: judged as itself.
        ("unknown", format!("By={gateway};URI={frontend}"), 403),
        // A plaintext caller can never inject an identity.
        ("plaintext", format!("By={gateway};URI={frontend}"), 403),
    ];
    for (profile, xfcc, status) in rows {
        let mut request = Request::new("GET", "/api/users");
        if !xfcc.is_empty() {
            request = request.header("x-forwarded-client-cert", &xfcc);
        }
        let resp = mesh.send_as(profile, request).await.unwrap();
        assert_eq!(
            resp.status,
            status,
            "{profile} with XFCC {xfcc:?}: {}\n{}",
            resp.text(),
            mesh.server.log()
        );
    }
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
    for (decision, reason, count) in [
        ("dry_run_denied", "no_matching_rule", 1),
        ("dry_run_denied", "mtls_required", 1),
        ("dry_run_denied", "denied_by_rule", 1),
        ("allowed", "allowed_by_rule", 1),
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
    for (sample, value) in [
        (
            r#"meshguard_identity_requests_total{decision="allowed",reason="allowed_by_rule"}"#,
            2,
        ),
        (
            r#"meshguard_identity_requests_total{decision="denied",reason="mtls_required"}"#,
            1,
        ),
        (
            r#"meshguard_identity_requests_total{decision="denied",reason="no_matching_rule"}"#,
            1,
        ),
        (
            r#"meshguard_identity_requests_total{decision="denied",reason="denied_by_rule"}"#,
            1,
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
        .metric(r#"meshguard_config_loads_total{filter="identity",result="accepted"}"#)
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
    let cases = [
        (
            r#"{"rules": [{"name": "a", "action": "allow", "principles": ["x"]}]}"#,
            "meshguard identity: configuration refused: rules[0].principles: unknown field `principles`",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "allow", "principals": ["spiffe://cluster.local/ns//sa/x"]}]}"#,
            "configuration refused: rules[0].principals[0]: \"spiffe://cluster.local/ns//sa/x\" is not a valid SPIFFE ID: it has an empty path segment",
        ),
        ("not json", "configuration refused: config: expected a JSON object"),
    ];
    for (config, want) in cases {
        let log = Mesh::builder()
            .filter(Filter::identity(config))
            .start_refused()
            .await
            .unwrap();
        assert!(log.contains(want), "want {want:?} in:\n{log}");
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
    assert!(
        !mesh.server.log().contains("panicked"),
        "{}",
        mesh.server.log()
    );
}
