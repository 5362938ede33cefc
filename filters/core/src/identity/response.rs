//! The body of a deny response. How much it reveals is configurable so that a
//! policy does not explain itself to an attacker.

use serde_json::{json, Map, Value};

use super::config::DetailLevel;
use super::decision::Decision;
use super::facts::Peer;
use super::policy::IdentityPolicy;

/// Renders the JSON body sent with a denial.
pub fn deny_body(
    policy: &IdentityPolicy,
    decision: &Decision,
    peer: &Peer,
    request_id: Option<&str>,
) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("error".into(), json!("access_denied"));
    if matches!(policy.detail(), DetailLevel::Reason | DetailLevel::Verbose) {
        body.insert("reason".into(), json!(decision.reason.code()));
    }
    if policy.detail() == DetailLevel::Verbose {
        body.insert("message".into(), json!(decision.reason.describe()));
        if let Some(rule) = policy.rule_name(decision.decided_by) {
            body.insert("rule".into(), json!(rule));
        }
        body.insert(
            "peer".into(),
            peer.identity
                .as_ref()
                .map_or(Value::Null, |id| json!(id.as_str())),
        );
    }
    body.insert(
        "request_id".into(),
        request_id.map_or(Value::Null, |id| json!(id)),
    );
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::facts::{RequestInfo, Transport};

    fn body_for(detail: &str) -> Value {
        let config = format!(
            r#"{{"deny_response": {{"detail": "{detail}"}},
                 "rules": [{{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]}}]}}"#
        );
        let policy = IdentityPolicy::from_json(config.as_bytes()).unwrap();
        let peer = Peer::from_certificate(Transport::from_host(
            Some(true),
            Some("TLSv1.3"),
            Some("spiffe://cluster.local/ns/a/sa/b"),
        ));
        let request = RequestInfo {
            path: "/admin/x",
            method: "GET",
            host: "svc",
        };
        let decision = policy.evaluate(&peer, &request);
        serde_json::from_slice(&deny_body(&policy, &decision, &peer, Some("req-1"))).unwrap()
    }

    #[test]
    fn deny_bodies_reveal_only_the_configured_detail() {
        assert_eq!(
            body_for("minimal"),
            json!({"error": "access_denied", "request_id": "req-1"})
        );
        assert_eq!(
            body_for("reason"),
            json!({"error": "access_denied", "reason": "denied_by_rule", "request_id": "req-1"})
        );
        assert_eq!(
            body_for("verbose"),
            json!({
                "error": "access_denied",
                "reason": "denied_by_rule",
                "message": "a deny rule matched",
                "rule": "no-admin",
                "peer": "spiffe://cluster.local/ns/a/sa/b",
                "request_id": "req-1"
            })
        );
    }
}
