//! Identity never disappears silently, proven in the real Envoy: a caller
//! behind a trusted gateway whose XFCC cannot be read, and a client
//! certificate naming two SPIFFE IDs, are refused with their own reasons
//! instead of passing as anonymous callers that deny-by-identity rules miss.

use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::{Filter, Mesh};

const GATEWAY: &str = "spiffe://cluster.local/ns/istio-system/sa/ingress";
const EVIL: &str = "spiffe://cluster.local/ns/default/sa/evil";
const PARTNER: &str = "spiffe://cluster.local/ns/partners/sa/acme";

/// Everyone may call, except `evil`, directly or through the gateway.
fn policy(extra: &str) -> String {
    format!(
        r#"{{"default_action": "allow",
            "identity": {{"trusted_gateways": ["{GATEWAY}"] {extra}}},
            "deny_response": {{"detail": "verbose"}},
            "rules": [{{"name": "no-evil", "action": "deny", "principals": ["{EVIL}"]}}]}}"#
    )
}

async fn mesh(policy: &str) -> Mesh {
    Mesh::builder()
        .filter(Filter::identity(policy))
        .start()
        .await
        .expect("mesh starts")
}

/// What the evil client can make an APPEND_FORWARD gateway send, and the
/// reason of the refusal. A header that cannot be read at all hides this
/// sidecar's own element too: nothing establishes that the gateway's
/// certificate has a single URI SAN, so the peer itself is unusable.
fn unusable_headers() -> Vec<(&'static str, String, &'static str)> {
    const PEER: &str = "peer_identity_unusable";
    const GATEWAY_ELEMENT: &str = "gateway_identity_unusable";
    vec![
        ("no header at all", String::new(), GATEWAY_ELEMENT),
        (
            "unterminated quote",
            format!("By=\"{GATEWAY};URI={EVIL}"),
            PEER,
        ),
        ("key without value", format!("By={GATEWAY};URI"), PEER),
        (
            "over the size limit",
            format!(
                "By={GATEWAY};URI={EVIL};Subject=\"{}\"",
                "x".repeat(17 * 1024)
            ),
            PEER,
        ),
        (
            "over the element limit",
            vec![format!("By={GATEWAY};URI={EVIL}"); 33].join(","),
            PEER,
        ),
        (
            "only a forged element",
            format!("By=spiffe://x/y;URI={PARTNER}"),
            GATEWAY_ELEMENT,
        ),
        (
            "gateway element without URI",
            format!("By={GATEWAY};Hash=abc"),
            GATEWAY_ELEMENT,
        ),
        (
            "gateway element with two URIs",
            format!("By={GATEWAY};URI={PARTNER};URI={EVIL}"),
            GATEWAY_ELEMENT,
        ),
        (
            "gateway element with a non-SPIFFE URI",
            format!("By={GATEWAY};URI=https://evil"),
            GATEWAY_ELEMENT,
        ),
    ]
}

fn through_gateway(xfcc: &str, protocol: Protocol) -> Request {
    let request = Request::new("GET", "/api/orders").protocol(protocol);
    if xfcc.is_empty() {
        request
    } else {
        request.header("x-forwarded-client-cert", xfcc)
    }
}

#[tokio::test]
async fn a_gateway_request_without_a_usable_caller_is_refused_not_anonymous() {
    let mesh = mesh(&policy("")).await;
    for protocol in Protocol::ALL {
        for (what, xfcc, reason) in unusable_headers() {
            let what = format!("{what} over {protocol:?}");
            let resp = mesh
                .send_as("gateway", through_gateway(&xfcc, protocol))
                .await
                .unwrap();
            assert_eq!(resp.status, 403, "{what}: {resp:?}");
            assert_eq!(
                resp.header("x-meshguard-deny-reason"),
                Some(reason),
                "{what}"
            );
            mesh.assert_nothing_reached_upstream(&what).await;
        }
        // The gateway's own element names the caller: judged as that caller.
        let vouched = format!("By={GATEWAY};URI={PARTNER}");
        let resp = mesh
            .send_as("gateway", through_gateway(&vouched, protocol))
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{resp:?}");
        mesh.upstream().take_one().await.unwrap();
        let evil = format!("By={GATEWAY};URI={EVIL}");
        let resp = mesh
            .send_as("gateway", through_gateway(&evil, protocol))
            .await
            .unwrap();
        assert_eq!(
            resp.header("x-meshguard-deny-reason"),
            Some("denied_by_rule")
        );
        mesh.assert_nothing_reached_upstream("evil vouched by the gateway")
            .await;
    }
    for reason in ["gateway_identity_unusable", "peer_identity_unusable"] {
        let refused = mesh
            .server
            .metric(&format!(
                r#"meshguard_identity_requests_total{{decision="denied",reason="{reason}"}}"#
            ))
            .await
            .unwrap();
        let rows = unusable_headers()
            .iter()
            .filter(|(_, _, r)| *r == reason)
            .count();
        assert_eq!(refused, Some(2 * rows as u64), "{reason}");
    }
}

#[tokio::test]
async fn treat_as_anonymous_is_an_explicit_choice_that_lets_them_through() {
    let mesh = mesh(&policy(r#", "on_unusable_identity": "treat_as_anonymous""#)).await;
    for protocol in Protocol::ALL {
        let resp = mesh
            .send_as("gateway", through_gateway("", protocol))
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{resp:?}");
        mesh.upstream().take_one().await.unwrap();
    }
}

#[tokio::test]
async fn a_client_certificate_with_two_spiffe_ids_has_no_usable_identity() {
    // `two-uris` presents frontend's ID first and `admin` second: Envoy's
    // `connection.uri_san_peer_certificate` reports only the first, the
    // filter sees both in the XFCC element the sidecar appended.
    let policy = r#"{"rules": [{"name": "frontend", "action": "allow",
        "principals": ["cluster.local/ns/default/sa/frontend"]}]}"#;
    let mesh = mesh(policy).await;
    for protocol in Protocol::ALL {
        let resp = mesh
            .send_as("two-uris", Request::new("GET", "/").protocol(protocol))
            .await
            .unwrap();
        assert_eq!(resp.status, 403, "{protocol:?}: {resp:?}");
        assert_eq!(
            resp.header("x-meshguard-deny-reason"),
            Some("peer_identity_unusable")
        );
        mesh.assert_nothing_reached_upstream("two URI SANs").await;
        // The genuine single-ID certificate of the same workload passes.
        let resp = mesh
            .send_as("frontend", Request::new("GET", "/").protocol(protocol))
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{resp:?}");
        mesh.upstream().take_one().await.unwrap();
    }
}
