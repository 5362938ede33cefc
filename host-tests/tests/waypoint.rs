//! The filters on an Istio ambient waypoint, reproduced with the same Envoy
//! (see `meshguard_host_tests::waypoint`): the caller's identity comes from
//! the HBONE tunnel the waypoint's own Envoy verified, never from anything
//! the client sends; identity rules, masking and audit work as on a sidecar,
//! over HTTP/1.1 and HTTP/2 inside the tunnel.

use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::Filter;
use meshguard_host_tests::upstream::Script;
use meshguard_host_tests::waypoint::Waypoint;
use serde_json::json;

const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";

const POLICY: &str = r#"{
  "transport": {"require_mtls": true, "min_tls_version": "TLSv1.3"},
  "deny_response": {"detail": "verbose"},
  "rules": [
    {"name": "frontend-api", "action": "allow",
     "principals": ["cluster.local/ns/default/sa/frontend"], "paths": ["/api/*"]},
    {"name": "no-batch", "action": "deny", "namespaces": ["jobs"]}
  ]
}"#;

#[tokio::test]
async fn identity_rules_judge_the_hbone_peer_on_a_waypoint() {
    let waypoint = Waypoint::start(&[Filter::identity(POLICY)]).await.unwrap();
    for protocol in Protocol::ALL {
        for (profile, path, status, reason) in [
            ("frontend", "/api/orders", 200, None),
            ("frontend", "/admin", 403, Some("no_matching_rule")),
            ("batch", "/api/orders", 403, Some("denied_by_rule")),
            ("unknown", "/api/orders", 403, Some("no_matching_rule")),
            (
                "two-uris",
                "/api/orders",
                403,
                Some("peer_identity_unusable"),
            ),
        ] {
            let what = format!("{profile} {path} over {protocol:?}");
            let resp = waypoint
                .send_as(profile, Request::new("GET", path).protocol(protocol))
                .await
                .unwrap();
            assert_eq!(resp.status, status, "{what}: {resp:?}");
            assert_eq!(
                resp.header("x-meshguard-deny-reason"),
                reason,
                "{what}: {}",
                resp.text()
            );
            if status == 200 {
                let got = waypoint.upstream().take_one().await.unwrap();
                assert_eq!(got.target, path, "{what}");
            } else {
                waypoint.upstream().assert_nothing_arrived(&what);
            }
        }
    }
}

#[tokio::test]
async fn a_client_cannot_inject_an_identity_on_a_waypoint() {
    let waypoint = Waypoint::start(&[Filter::identity(POLICY)]).await.unwrap();
    for protocol in Protocol::ALL {
        let forged = Request::new("GET", "/api/orders")
            .protocol(protocol)
            .header("io.istio.peer_principal", FRONTEND)
            .header(
                "x-forwarded-client-cert",
                format!("By=spiffe://cluster.local/ns/default/sa/waypoint;URI={FRONTEND}"),
            )
            .header("x-forwarded-for", "10.0.0.1");
        let resp = waypoint.send_as("unknown", forged).await.unwrap();
        assert_eq!(resp.status, 403, "{protocol:?}: {resp:?}");
        let body = resp.json().unwrap();
        assert_eq!(
            body["peer"], "spiffe://cluster.local/ns/default/sa/unknown",
            "{body}"
        );
        waypoint
            .upstream()
            .assert_nothing_arrived("forged identity");
    }
}

#[tokio::test]
async fn masking_and_audit_work_on_a_waypoint() {
    let masking = r#"{"rules": [
        {"name": "ssn", "json_keys": ["ssn"]},
        {"name": "cards", "detectors": ["card"], "except_principals": ["cluster.local/ns/default/sa/auditor"]}
    ]}"#;
    let audit = r#"{"commands": [], "log_records": true}"#;
    let waypoint = Waypoint::start(&[
        Filter::identity(r#"{"default_action": "allow"}"#),
        Filter::named("masking", masking),
        Filter::audit(audit),
    ])
    .await
    .unwrap();
    let record = json!({"ssn": "078-05-1120", "card": "4111 1111 1111 1111"});
    waypoint.upstream().script("record", Script::json(&record));
    for protocol in Protocol::ALL {
        let request = Request::new("POST", "/api/records")
            .protocol(protocol)
            .header("content-type", "application/json")
            .body(record.to_string())
            .script("record");
        let resp = waypoint.send_as("frontend", request.clone()).await.unwrap();
        assert_eq!(resp.status, 200, "{protocol:?}: {resp:?}");
        // What reached the upstream was masked and audited...
        let got = waypoint.upstream().take_one().await.unwrap();
        assert!(!got.text().contains("078-05-1120"), "{}", got.text());
        assert!(
            !got.text().contains("4111 1111 1111 1111"),
            "{}",
            got.text()
        );
        let hash = got
            .header("x-meshguard-command-sha256")
            .expect("audit header");
        assert_eq!(hash.len(), 64);
        // ...and so was what the client received.
        assert!(!resp.text().contains("078-05-1120"), "{}", resp.text());
        // The auditor's exemption follows its HBONE identity.
        let resp = waypoint.send_as("auditor", request).await.unwrap();
        assert!(
            resp.text().contains("4111 1111 1111 1111"),
            "{}",
            resp.text()
        );
        waypoint.upstream().take_one().await.unwrap();
    }
    let log = waypoint
        .waypoint
        .wait_for_log("\"peer\":\"spiffe://cluster.local/ns/default/sa/frontend\"")
        .await
        .unwrap();
    assert!(
        log.contains("meshguard-audit-record"),
        "audit records are logged"
    );
}
