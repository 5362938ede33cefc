//! Hostile input against all three filters in one chain: nothing a caller or
//! an upstream sends may crash a VM. A crashed VM would answer every later
//! request on its worker with an empty 503, so each hostile request is followed
//! by a normal one that must still be decided, masked and audited.

use meshguard_host_tests::envoy::vm_crashes;
use meshguard_host_tests::http::{Request, Response};
use meshguard_host_tests::mesh::{Filter, Mesh};
use meshguard_host_tests::upstream::Script;

const IDENTITY: &str = r#"{"transport": {"require_mtls": false},
  "identity": {"trusted_gateways": ["cluster.local/ns/istio-system/sa/ingress"]},
  "default_action": "allow",
  "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin/**"]}]}"#;
const MASKING: &str = r#"{"max_body_bytes": 262144, "on_malformed_json": "mask_as_text",
  "rules": [{"name": "pii", "json_keys": ["password"], "json_paths": ["**/ssn"],
             "detectors": ["card", "email", "jwt", "iban"], "headers": ["authorization"],
             "patterns": [{"name": "ids", "regex": "ID-[0-9]+"}]},
            {"name": "partial", "directions": ["response"], "json_keys": ["card"], "strategy": "partial"}]}"#;
const AUDIT: &str = r#"{"key_id": "test", "max_body_bytes": 262144,
  "commands": [{"name": "q", "paths": ["/q"], "parts": ["method", "path", "query", {"json_pointer": "/sql"}]},
               {"name": "b", "paths": ["/b/**"], "parts": ["method", "path", "body"]}]}"#;

async fn mesh() -> Mesh {
    Mesh::builder()
        .filter(Filter::identity(IDENTITY))
        .filter(Filter::named("masking", MASKING))
        // Body commands: the documented EnvoyFilter variant.
        .filter(Filter::audit(AUDIT).envoyfilter_variant())
        .start()
        .await
        .expect("mesh starts")
}

/// A normal request: it must be allowed, masked and audited.
async fn still_healthy(mesh: &Mesh, after: &str) {
    let request = Request::new("POST", "/b/check")
        .header("content-type", "application/json")
        .body(r#"{"password": "hunter2"}"#);
    let resp = mesh.send_as("frontend", request).await.expect("response");
    assert_eq!(resp.status, 200, "after {after}: {}", resp.text());
    // The hostile request before may have reached the upstream too: the
    // healthy one is the last to arrive.
    mesh.upstream().settled().await.expect("settled");
    let got = mesh.upstream().take().pop().expect("the request arrived");
    assert_eq!(got.target, "/b/check", "after {after}");
    assert_eq!(
        got.json(),
        serde_json::json!({"password": "[REDACTED]"}),
        "after {after}"
    );
    assert_eq!(
        got.header_all("x-meshguard-audit").len(),
        1,
        "after {after}: {got:?}"
    );
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn no_request_crashes_a_filter() {
    let mesh = mesh().await;
    let json = |path: &str, body: Vec<u8>| {
        Request::new("POST", path)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(&str, Request)> = vec![
        (
            "obs-text in headers",
            Request::new("GET", "/x").header("authorization", b"Bearer \xff\xfe\x80"),
        ),
        (
            "obs-text in XFCC from a trusted gateway",
            Request::new("GET", "/x").header("x-forwarded-client-cert", b"By=\xff;URI=\xc3\x28"),
        ),
        (
            "a 50 KB header",
            Request::new("GET", "/x").header("x-big", "a".repeat(50_000)),
        ),
        (
            "escapes in the path",
            Request::new("GET", "/b/%2e%2e/%00/%ff?%zz=%&a=%GG"),
        ),
        (
            "a long query",
            Request::new("GET", &format!("/q?{}", "a=1&".repeat(2_000))),
        ),
        (
            "invalid UTF-8 JSON",
            json("/b/x", b"{\"password\": \"\xff\xfe\"}".to_vec()),
        ),
        (
            "deep JSON to masking and audit",
            json("/q", nested(20_000).into_bytes()),
        ),
        (
            "deep objects",
            json(
                "/q",
                format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)).into_bytes(),
            ),
        ),
        (
            "NUL bytes in JSON",
            json("/q", b"{\"sql\": \"a\0b\", \"\0\": 1}".to_vec()),
        ),
        ("truncated JSON", json("/q", b"{\"sql\": \"SELECT".to_vec())),
        (
            "huge number",
            json(
                "/q",
                format!("{{\"sql\": {}}}", "9".repeat(5_000)).into_bytes(),
            ),
        ),
        ("empty JSON body", json("/q", Vec::new())),
        (
            "a broken form body",
            Request::new("POST", "/b/f")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("a=%&b=%zz&%%%=&password=%ff%fe&=&&"),
        ),
        (
            "binary text body",
            Request::new("POST", "/b/t")
                .header("content-type", "text/plain")
                .body(vec![0xff, 0x00, 0xfe, 0x41]),
        ),
        (
            "one-byte chunks",
            Request::new("POST", "/b/c")
                .header("content-type", "application/json")
                .chunked(
                    br#"{"ssn": "078-05-1120", "x": [1, 2]}"#.iter().map(|b| vec![*b]).collect(),
                ),
        ),
        (
            "regex-heavy text",
            Request::new("POST", "/b/r")
                .header("content-type", "text/plain")
                .body("ID-".repeat(20_000)),
        ),
        ("an odd method", Request::new("PROPFIND", "/b/x")),
        (
            "a denied admin path",
            Request::new("DELETE", "/admin/../admin/x"),
        ),
    ];
    for (what, request) in cases {
        let resp: Response = mesh.send_as("gateway", request).await.expect(what);
        // Any answer is fine, but never the empty 503 of a failed VM.
        assert!(
            !(resp.status == 503 && resp.body.is_empty()),
            "{what}: looks like a crashed VM"
        );
        still_healthy(&mesh, what).await;
    }

    // Hostile responses: the upstream answers whatever the request asks for.
    let responses: Vec<(&str, &str, String)> = vec![
        ("deep JSON response", "application/json", nested(20_000)),
        (
            "malformed JSON response",
            "application/json",
            "{\"card\": \"4111".into(),
        ),
        (
            "a large JSON response",
            "application/json",
            format!("{{\"card\": \"{}\"}}", "4".repeat(40_000)),
        ),
        (
            "text with many near-cards",
            "text/plain",
            "4111 1111 1111 111 ".repeat(2_000),
        ),
    ];
    for (what, content_type, body) in responses {
        mesh.upstream()
            .script("hostile", Script::typed(content_type, body));
        let request = Request::new("GET", "/b/resp").script("hostile");
        let resp = mesh.send_as("frontend", request).await.expect(what);
        // A reset (masking refusing a response body mid-stream) is allowed;
        // an HTTP answer must not be the crashed-VM one.
        assert!(
            resp.is_reset() || !(resp.status == 503 && resp.body.is_empty()),
            "{what}: {resp:?}"
        );
        still_healthy(&mesh, what).await;
    }
    let log = mesh.flushed_server_log().await.unwrap();
    assert!(vm_crashes(&log).is_empty(), "{log}");
}
