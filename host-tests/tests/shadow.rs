//! A shadow identity policy in the real Envoy: evaluated on live traffic,
//! counted per rule and per disagreement, logged where it differs, and never
//! enforced, over HTTP/1.1 and HTTP/2.

use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::{Filter, Mesh};

const POLICY: &str = r#"{
  "default_action": "allow",
  "rules": [{"name": "no-batch", "action": "deny", "namespaces": ["jobs"]}],
  "shadow": {
    "rules": [{"name": "frontend-only", "action": "allow",
               "principals": ["cluster.local/ns/default/sa/frontend"]}]
  }
}"#;

#[tokio::test]
async fn the_shadow_policy_is_counted_and_logged_but_never_enforced() {
    let mesh = Mesh::builder()
        .filter(Filter::identity(POLICY))
        .start()
        .await
        .unwrap();
    for protocol in Protocol::ALL {
        for (profile, status) in [("frontend", 200), ("unknown", 200), ("batch", 403)] {
            let resp = mesh
                .send_as(profile, Request::new("GET", "/x").protocol(protocol))
                .await
                .unwrap();
            assert_eq!(resp.status, status, "{profile} {protocol:?}: {resp:?}");
            if status == 200 {
                mesh.upstream().take_one().await.unwrap();
            } else {
                mesh.upstream().assert_nothing_arrived(profile);
            }
        }
    }
    let metric = |name: &str| {
        let name = name.to_string();
        let server = &mesh.server;
        async move { server.metric(&name).await.unwrap().unwrap_or(0) }
    };
    // Frontend: both allow. Unknown: the shadow would deny (a disagreement).
    // Batch: both deny (the enforced policy by rule, the shadow by default).
    assert_eq!(
        metric(r#"meshguard_identity_shadow_rule_hits_total{rule="frontend-only"}"#).await,
        2
    );
    assert_eq!(
        metric(r#"meshguard_identity_shadow_requests_total{decision="denied",reason="no_matching_rule"}"#).await,
        4
    );
    assert_eq!(
        metric(r#"meshguard_identity_shadow_disagreements_total{decision="denied"}"#).await,
        2
    );
    assert_eq!(
        metric(r#"meshguard_identity_shadow_disagreements_total{decision="allowed"}"#).await,
        0
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
}
