//! Runs GET requests through the pipeline over the recording host, for a
//! native profile of the module's own work (`valgrind --tool=callgrind`):
//!   cargo build --release --example profile_pipeline --features fake
//!   valgrind --tool=callgrind target/release/examples/profile_pipeline audit 2000
//! Modes: `identity`, `audit` (GET), `combined` (GET through every section),
//! `mask16k` (a 16 KiB JSON response masked by the combined plugin).
//! The real cost in Envoy is `make bench`'s; this says where the module's
//! share of it goes.

use meshguard_host::fake::Fake;
use meshguard_host::host::{Attribute, Direction, Map, StreamHost};
use meshguard_host::root::PluginRoot;

const AUDIT_KEY: &str = "bWVzaGd1YXJkLXRlc3QtYXVkaXQta2V5LTMyYnl0ZXM=";

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "audit".into());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let (root_id, config) = match which.as_str() {
        "identity" => (
            "meshguard-identity",
            r#"{"default_action": "allow"}"#.to_owned(),
        ),
        "mask16k" => (
            "meshguard",
            r#"{"identity": {"default_action": "allow"}, "masking": {"rules": [{"name": "pii", "json_keys": ["ssn", "password"], "detectors": ["email", "card", "us_ssn"], "directions": ["response"]}]}}"#.to_owned(),
        ),
        "combined" => (
            "meshguard",
            format!(
                r#"{{"identity": {{"default_action": "allow"}}, "masking": {{"rules": [{{"name": "pii", "json_keys": ["ssn"], "directions": ["response"]}}]}}, "audit": {{"log_records": {}}}}}"#,
                std::env::var("LOG").is_ok()
            ),
        ),
        _ => (
            "meshguard-audit",
            format!(r#"{{"log_records": {}}}"#, std::env::var("LOG").is_ok()),
        ),
    };
    let mut host = Fake {
        config: config.into_bytes(),
        now_ms: 1_700_000_000_000,
        ..Fake::default()
    };
    host.env
        .insert("MESHGUARD_AUDIT_KEY".into(), AUDIT_KEY.into());
    host.properties
        .insert("plugin_root_id".into(), root_id.into());
    host.properties
        .insert("plugin_name".into(), "default.bench".into());
    host.attributes.insert(Attribute::ConnectionMtls, vec![1]);
    host.attributes
        .insert(Attribute::TlsVersion, b"TLSv1.3".to_vec());
    let peer = "spiffe://cluster.local/ns/default/sa/frontend";
    let local = "spiffe://cluster.local/ns/default/sa/backend";
    host.attributes
        .insert(Attribute::PeerUriSan, peer.as_bytes().to_vec());
    host.attributes
        .insert(Attribute::LocalUriSan, local.as_bytes().to_vec());
    let mut root = PluginRoot::new(1);
    assert!(root.configure(&mut host));
    let request: Vec<(String, String)> = [
        (":method", "GET"),
        (":path", "/api/orders/42?x=1"),
        (":authority", "backend.default.svc.cluster.local"),
        (":scheme", "http"),
        ("user-agent", "hey/0.0.1"),
        ("x-request-id", "5f1c9a2e-7d1b-4c55-9d4f-2a3b4c5d6e7f"),
        ("x-forwarded-proto", "https"),
        (
            "x-forwarded-client-cert",
            &format!("By={local};Hash=abc;URI={peer}"),
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let body = if which == "mask16k" {
        let record = r#"{"id": 42, "name": "Ann Example", "email": "ann@example.com", "ssn": "078-05-1120", "note": "paid with 4111 1111 1111 1111 on Monday", "items": [1, 2, 3]}"#;
        let mut body = String::from("[");
        while body.len() < 16 * 1024 {
            if body.len() > 1 {
                body.push(',');
            }
            body.push_str(record);
        }
        body.push(']');
        body.into_bytes()
    } else {
        b"ok".to_vec()
    };
    let content_type = if which == "mask16k" {
        "application/json"
    } else {
        "text/plain"
    };
    let length = body.len().to_string();
    let response: Vec<(String, String)> = [
        (":status", "200"),
        ("content-type", content_type),
        ("content-length", length.as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for _ in 0..n {
        host.maps.insert(Map::RequestHeaders, request.clone());
        host.maps.insert(Map::ResponseHeaders, response.clone());
        let mut stream = root.stream(&host);
        stream.request_headers(&mut host, true);
        stream.response_headers(&mut host, false);
        host.take_body(Direction::Response);
        host.push_body(Direction::Response, &body);
        stream.body(&mut host, Direction::Response, body.len(), true);
        if which == "mask16k" {
            // The profile is of masking work: the body must have been masked.
            let masked = host.body(Direction::Response, 0, usize::MAX);
            assert!(masked.windows(10).any(|w| w == b"[REDACTED]"), "not masked");
        }
        stream.log(&mut host);
        stream.finish(&mut host);
    }
}
