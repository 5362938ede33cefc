//! One canonical path for every decision, proven in the real Envoy: every
//! spelling an upstream framework could resolve to a protected path is caught
//! by a deny rule and widens no allow rule, whatever the sidecar's own path
//! settings are (plain Envoy normalizes nothing; Istio's default is BASE),
//! over HTTP/1.1 and HTTP/2; and the upstream receives the canonical path.

use meshguard_host_tests::http::{send_raw, Protocol, Request};
use meshguard_host_tests::mesh::{Filter, Mesh, PathNormalization, ROUTE_HEADER};
use meshguard_host_tests::upstream::Script;
use serde_json::json;

const DENY_ADMIN: &str = r#"{
  "default_action": "allow",
  "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin", "/admin/*"]}]
}"#;

const ALLOW_PUBLIC: &str = r#"{
  "rules": [{"name": "public", "action": "allow", "paths": ["/public", "/public/*"]}]
}"#;

/// Spellings of `/admin/users`, one per class.
const ADMIN_SPELLINGS: &[(&str, &str)] = &[
    ("plain", "/admin/users"),
    ("repeated slashes", "//admin//users"),
    ("dot segments", "/x/../admin/./users"),
    ("Tomcat dot-dot parameter", "/x/..;/admin/users"),
    ("encoded dots", "/x/%2e%2E/admin/users"),
    ("encoded unreserved letters", "/%61dmin/%75sers"),
    ("backslashes", "/x\\..\\admin\\users"),
    ("segment parameters", "/admin;jsessionid=1/users;v=2"),
    ("encoded slash", "/admin%2Fusers"),
    ("encoded backslash", "/x%5C..%5Cadmin/users"),
    ("double encoding", "/x/%252e%252e/admin/users"),
    ("encoded NUL", "/admin/users%00"),
    ("broken escape", "/admin/users%zz"),
    ("query does not hide it", "/admin/users?next=/public"),
];

/// Envoy's own path settings in front of the filter: none (plain Envoy) and
/// Istio's default.
const SIDECARS: [PathNormalization; 2] = [PathNormalization::None, PathNormalization::Base];

async fn mesh(policy: &str, sidecar: PathNormalization) -> Mesh {
    Mesh::builder()
        .filter(Filter::identity(policy))
        .path_normalization(sidecar)
        .start()
        .await
        .expect("mesh starts")
}

/// What the client got: the status, meshguard's deny reason, the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    reason: Option<String>,
    text: String,
}

/// Sends `target` as given, over `protocol`. Targets hyper will not build
/// (backslashes) go as raw HTTP/1.1 bytes; on HTTP/2 they are skipped (the
/// returned `None`), since no HTTP/2 client library sends them either.
async fn send(mesh: &Mesh, target: &str, protocol: Protocol) -> Option<Answer> {
    match mesh
        .send_as("frontend", Request::new("GET", target).protocol(protocol))
        .await
    {
        Ok(resp) => Some(Answer {
            status: resp.status,
            reason: resp.header("x-meshguard-deny-reason").map(String::from),
            text: resp.text(),
        }),
        Err(_) if protocol == Protocol::Http1 => {
            let head = format!(
                "GET {target} HTTP/1.1\r\nhost: backend.default.svc\r\n{ROUTE_HEADER}: frontend\r\nconnection: close\r\n\r\n"
            );
            let raw = send_raw(mesh.client_addr(), head.as_bytes(), b"")
                .await
                .expect("raw request");
            Some(Answer {
                status: raw.status(),
                reason: raw.header("x-meshguard-deny-reason"),
                text: raw.text(),
            })
        }
        Err(_) => None,
    }
}

/// Whether the server sidecar refuses `target` itself, before any filter:
/// Envoy's `normalize_path` (Istio's BASE and above) answers an encoded NUL
/// with a 400 of its own.
fn refused_by_envoy(sidecar: PathNormalization, target: &str) -> bool {
    sidecar != PathNormalization::None && target.contains("%00")
}

/// Asserts the request was refused by the identity filter (403 with one of
/// `reasons`), or, for the spellings [`refused_by_envoy`] names, by the
/// server sidecar's own 400 without a meshguard reason: any other 4xx (a
/// codec 400 from either sidecar, say) is not a refusal this suite proves.
fn refused_by_the_filter(
    answer: &Answer,
    reasons: &[&str],
    sidecar: PathNormalization,
    target: &str,
    what: &str,
) {
    if refused_by_envoy(sidecar, target) {
        assert_eq!(
            answer.status, 400,
            "{what}: Envoy's own refusal: {answer:?}"
        );
        assert_eq!(answer.reason, None, "{what}: {answer:?}");
        return;
    }
    assert_eq!(
        answer.status, 403,
        "{what}: must be refused by the filter: {answer:?}"
    );
    let reason = answer.reason.as_deref().unwrap_or("none");
    assert!(
        reasons.contains(&reason),
        "{what}: reason {reason}: {answer:?}"
    );
}

/// Broken by hand: the policy's `deny_response.status` set to 400: every row
/// failed "must be refused by the filter" (the old check, any 4xx with an
/// optional reason, passed).
#[tokio::test]
async fn a_deny_rule_catches_every_spelling_of_its_path_on_both_protocols() {
    let mut sent = 0;
    for sidecar in SIDECARS {
        let mesh = mesh(DENY_ADMIN, sidecar).await;
        for protocol in Protocol::ALL {
            for (class, target) in ADMIN_SPELLINGS {
                let what = format!("{class} {target:?}, sidecar {sidecar:?}, {protocol:?}");
                let Some(resp) = send(&mesh, target, protocol).await else {
                    continue;
                };
                sent += 1;
                refused_by_the_filter(
                    &resp,
                    &["denied_by_rule", "ambiguous_path", "invalid_path"],
                    sidecar,
                    target,
                    &what,
                );
                mesh.assert_nothing_reached_upstream(&what).await;
            }
        }
        // A neighbour of the protected path is not caught.
        let resp = send(&mesh, "/administrator", Protocol::Http2)
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{sidecar:?}: {resp:?}");
        assert_eq!(
            mesh.upstream().take_one().await.unwrap().target,
            "/administrator"
        );
    }
    assert!(
        sent >= 2 * (2 * ADMIN_SPELLINGS.len() - 2),
        "only {sent} requests were sent"
    );
}

#[tokio::test]
async fn an_allow_rule_is_widened_by_no_spelling_and_the_upstream_gets_the_canonical_path() {
    for sidecar in SIDECARS {
        let mesh = mesh(ALLOW_PUBLIC, sidecar).await;
        for protocol in Protocol::ALL {
            // Climbing out of /public/ in every spelling.
            for target in [
                "/public/../admin",
                "/public/..;/admin",
                "/public/%2e%2e/admin",
                "/public/.%2E/admin",
                "/public/x/../../admin",
                "/public\\..\\admin",
                "/public%2F..%2Fadmin",
                "/public/%252e%252e/admin",
                "/public/..%00/admin",
            ] {
                let what = format!("{target:?}, sidecar {sidecar:?}, {protocol:?}");
                let Some(resp) = send(&mesh, target, protocol).await else {
                    continue;
                };
                refused_by_the_filter(
                    &resp,
                    &["no_matching_rule", "ambiguous_path", "invalid_path"],
                    sidecar,
                    target,
                    &what,
                );
                mesh.assert_nothing_reached_upstream(&what).await;
            }
            // Legitimate spellings pass, and the upstream receives exactly the
            // canonical path the filter judged (the query untouched).
            for (target, forwarded) in [
                ("/public/a", "/public/a"),
                ("/public//a", "/public/a"),
                ("/public/a/./b/../c", "/public/a/c"),
                ("/public/%7Ea?x=%2F..", "/public/~a?x=%2F.."),
                ("/public/a;v=1", "/public/a;v=1"),
            ] {
                let what = format!("{target:?}, sidecar {sidecar:?}, {protocol:?}");
                let resp = send(&mesh, target, protocol).await.unwrap();
                assert_eq!(resp.status, 200, "{what}: {resp:?}");
                let got = mesh.upstream().take_one().await.unwrap();
                assert_eq!(got.target, forwarded, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn case_insensitive_matching_catches_every_case() {
    let policy = r#"{"default_action": "allow", "path_case_insensitive": true,
        "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]}]}"#;
    let mesh = mesh(policy, PathNormalization::None).await;
    for protocol in Protocol::ALL {
        for target in ["/ADMIN/x", "/Admin/x", "/%41dmin/x", "/admin/X"] {
            let resp = send(&mesh, target, protocol).await.unwrap();
            assert_eq!(resp.status, 403, "{target} {protocol:?}: {resp:?}");
            assert_eq!(resp.reason.as_deref(), Some("denied_by_rule"));
            mesh.assert_nothing_reached_upstream(target).await;
        }
    }
}

#[tokio::test]
async fn ambiguous_and_invalid_paths_are_refused_with_stable_reasons_and_counted() {
    let mesh = mesh(DENY_ADMIN, PathNormalization::None).await;
    for (target, reason) in [
        ("/a%2Fb", "ambiguous_path"),
        ("/a/%252e", "ambiguous_path"),
        ("/a%00", "invalid_path"),
        ("/a%G1", "invalid_path"),
    ] {
        let metric =
            format!("meshguard_identity_requests_total{{decision=\"denied\",reason=\"{reason}\"}}");
        let before = mesh.server.metric(&metric).await.unwrap().unwrap_or(0);
        for protocol in Protocol::ALL {
            let resp = send(&mesh, target, protocol).await.unwrap();
            assert_eq!(resp.status, 403, "{target} {protocol:?}: {resp:?}");
            assert_eq!(resp.reason.as_deref(), Some(reason), "{target}");
            mesh.assert_nothing_reached_upstream(target).await;
        }
        let after = mesh.server.metric(&metric).await.unwrap().unwrap_or(0);
        assert_eq!(after, before + 2, "{metric}: one per protocol");
    }
    // With DECODE_AND_MERGE_SLASHES the filter decodes escaped slashes instead.
    let decoding = mesh_with_mode("DECODE_AND_MERGE_SLASHES").await;
    let resp = send(&decoding, "/a%2Fb", Protocol::Http2).await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(decoding.upstream().take_one().await.unwrap().target, "/a/b");
    let resp = send(&decoding, "/admin%2Fusers", Protocol::Http2)
        .await
        .unwrap();
    assert_eq!(resp.status, 403, "{resp:?}");
}

async fn mesh_with_mode(mode: &str) -> Mesh {
    let policy = DENY_ADMIN.replacen('{', &format!("{{\"path_normalization\": \"{mode}\","), 1);
    mesh(&policy, PathNormalization::None).await
}

/// Broken by hand: the masking filter's path refusal answered 403 instead of
/// the documented 400 (filters/masking/src/lib.rs): the refusal rows failed
/// (the old check accepted any 4xx).
#[tokio::test]
async fn a_masking_scope_catches_every_spelling_of_its_path() {
    let policy = r#"{"rules": [{"name": "admin-secrets", "directions": ["response"],
        "paths": ["/admin/*"], "json_keys": ["secret"]}]}"#;
    for sidecar in SIDECARS {
        let mesh = Mesh::builder()
            .filter(Filter::named("masking", policy))
            .path_normalization(sidecar)
            .start()
            .await
            .expect("mesh starts");
        mesh.upstream()
            .set_default(Some(Script::json(&json!({"secret": "s3cr3t", "id": 1}))));
        let mut refused = 0;
        for protocol in Protocol::ALL {
            for (class, target) in ADMIN_SPELLINGS {
                let what = format!("{class} {target:?}, sidecar {sidecar:?}, {protocol:?}");
                let Some(resp) = send(&mesh, target, protocol).await else {
                    continue;
                };
                // Masked (exactly), or refused with the documented 400
                // before anything was forwarded.
                if resp.status == 200 {
                    assert_eq!(
                        serde_json::from_str::<serde_json::Value>(&resp.text).ok(),
                        Some(json!({"secret": "[REDACTED]", "id": 1})),
                        "{what}"
                    );
                    mesh.upstream().take_one().await.unwrap();
                } else if refused_by_envoy(sidecar, target) {
                    assert_eq!(resp.status, 400, "{what}: {resp:?}");
                    assert_eq!(resp.reason, None, "{what}: {resp:?}");
                    mesh.assert_nothing_reached_upstream(&what).await;
                } else {
                    assert_eq!(resp.status, 400, "{what}: {resp:?}");
                    let reason = resp.reason.as_deref().unwrap_or("none");
                    assert!(
                        ["ambiguous_path", "invalid_path"].contains(&reason),
                        "{what}: {resp:?}"
                    );
                    refused += 1;
                    mesh.assert_nothing_reached_upstream(&what).await;
                }
            }
            // Outside the scope nothing is masked.
            let resp = send(&mesh, "/public/admin/users", protocol).await.unwrap();
            assert!(
                resp.text.contains("s3cr3t"),
                "{sidecar:?} {protocol:?}: {resp:?}"
            );
            mesh.upstream().take_one().await.unwrap();
        }
        // Every refusal is counted under reason="path".
        let counted = mesh
            .server
            .metric(r#"meshguard_masking_bodies_refused_total{reason="path",direction="request"}"#)
            .await
            .unwrap()
            .unwrap_or(0);
        assert!(refused > 0, "{sidecar:?}: no spelling was refused");
        assert_eq!(counted, refused, "{sidecar:?}");
    }
}

#[tokio::test]
async fn a_quarantine_health_path_is_widened_by_no_spelling() {
    // A drifted, quarantined sidecar: only the health path answers.
    let env = [
        ("MESHGUARD_ON_DRIFT", "quarantine"),
        ("MESHGUARD_HEALTH_PATHS", "/healthz"),
        ("MESHGUARD_INTENDED_FINGERPRINT", &*"ab".repeat(32)),
    ];
    for sidecar in SIDECARS {
        let mut filter = Filter::identity(r#"{"default_action": "allow"}"#);
        for (k, v) in env {
            filter = filter.env(k, v);
        }
        let mesh = Mesh::builder()
            .filter(filter)
            .path_normalization(sidecar)
            .start()
            .await
            .expect("mesh starts");
        mesh.server
            .wait_for_log("config drift detected")
            .await
            .unwrap();
        for protocol in Protocol::ALL {
            for target in [
                "/healthz/../admin",
                "/healthz/..;/admin",
                "/healthz/%2e%2e/admin",
                "//healthz/../admin",
                "/healthz\\..\\admin",
                "/healthz%2F..%2Fadmin",
                "/admin?/healthz",
            ] {
                let what = format!("{target:?}, sidecar {sidecar:?}, {protocol:?}");
                let Some(resp) = send(&mesh, target, protocol).await else {
                    continue;
                };
                // Quarantined, or a path the filter cannot read.
                let quarantined =
                    resp.status == 503 && resp.reason.as_deref() == Some("config_drift");
                let unreadable = resp.status == 403
                    && matches!(
                        resp.reason.as_deref(),
                        Some("invalid_path" | "ambiguous_path")
                    );
                assert!(
                    quarantined || unreadable,
                    "{what}: a health path was widened: {resp:?}"
                );
                mesh.assert_nothing_reached_upstream(&what).await;
            }
            for target in ["/healthz", "//healthz", "/healthz;v=1", "/%68ealthz"] {
                let what = format!("{target:?}, sidecar {sidecar:?}, {protocol:?}");
                let resp = send(&mesh, target, protocol).await.unwrap();
                assert_eq!(resp.status, 200, "{what}: {resp:?}");
                mesh.upstream().take_one().await.unwrap();
            }
        }
    }
}
