//! A shadow identity policy in the real Envoy: evaluated on live traffic,
//! counted per rule and per disagreement (both ways), logged where it
//! differs, and never enforced, over HTTP/1.1 and HTTP/2.

use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::{Filter, Mesh};

const POLICY: &str = r#"{
  "default_action": "allow",
  "rules": [{"name": "no-batch", "action": "deny", "namespaces": ["jobs"]}],
  "shadow": {
    "rules": [{"name": "frontend-only", "action": "allow",
               "principals": ["cluster.local/ns/default/sa/frontend"]},
              {"name": "batch-jobs", "action": "allow",
               "principals": ["cluster.local/ns/jobs/sa/batch"], "paths": ["/jobs/*"]}]
  }
}"#;

/// Broken by hand: the disagreement flag forced to false in the identity
/// filter's `on_http_request_headers`: the disagreement counts stayed at 0
/// (the old test's only disagreement check, `decision="allowed"` at 0,
/// passed that way).
#[tokio::test]
async fn the_shadow_policy_is_counted_and_logged_both_ways_but_never_enforced() {
    let mesh = Mesh::builder()
        .filter(Filter::identity(POLICY))
        .start()
        .await
        .unwrap();
    // (profile, path, enforced status): the shadow policy would answer
    // otherwise for `unknown` (it denies) and for batch on /jobs (it allows).
    let rows = [
        ("frontend", "/x", 200),
        ("unknown", "/x", 200),
        ("batch", "/x", 403),
        ("batch", "/jobs/run", 403),
    ];
    for protocol in Protocol::ALL {
        for (profile, path, status) in rows {
            let resp = mesh
                .send_as(profile, Request::new("GET", path).protocol(protocol))
                .await
                .unwrap();
            assert_eq!(
                resp.status, status,
                "{profile} {path} {protocol:?}: {resp:?}"
            );
            if status == 200 {
                assert_eq!(mesh.upstream().take_one().await.unwrap().target, path);
            } else {
                mesh.assert_nothing_reached_upstream(profile).await;
            }
        }
    }
    let metric = |name: &str| {
        let name = name.to_string();
        let server = &mesh.server;
        async move { server.metric(&name).await.unwrap().unwrap_or(0) }
    };
    // Per protocol: frontend and batch on /jobs are allowed by a shadow rule;
    // unknown and batch on /x are denied by the shadow's default.
    assert_eq!(
        metric(r#"meshguard_identity_shadow_rule_hits_total{rule="frontend-only"}"#).await,
        2
    );
    assert_eq!(
        metric(r#"meshguard_identity_shadow_rule_hits_total{rule="batch-jobs"}"#).await,
        2
    );
    assert_eq!(
        metric(r#"meshguard_identity_shadow_requests_total{decision="denied",reason="no_matching_rule"}"#).await,
        4
    );
    // Shadow denies what is enforced as allowed: unknown.
    assert_eq!(
        metric(r#"meshguard_identity_shadow_disagreements_total{decision="denied"}"#).await,
        2
    );
    // Shadow allows what is enforced as denied: batch on /jobs.
    assert_eq!(
        metric(r#"meshguard_identity_shadow_disagreements_total{decision="allowed"}"#).await,
        2
    );
    let log = mesh
        .server
        .wait_for_log(
            "shadow disagrees: enforced=allowed:default_allow shadow=denied:no_matching_rule",
        )
        .await
        .unwrap();
    assert!(
        log.contains("peer=spiffe://cluster.local/ns/default/sa/unknown"),
        "{log}"
    );
    let log = mesh
        .server
        .wait_for_log(
            "shadow disagrees: enforced=denied:denied_by_rule shadow=allowed:allowed_by_rule",
        )
        .await
        .unwrap();
    assert!(
        log.contains("peer=spiffe://cluster.local/ns/jobs/sa/batch path=\"/jobs/run\""),
        "{log}"
    );
}
