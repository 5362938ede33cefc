//! The masking filter in a real mesh: requests masked before the upstream sees
//! them (read from the recording upstream), responses masked before the caller
//! does (the upstream answers with a fixed script, so response masking can
//! never stand in for request masking), with the failure modes a body filter
//! must get right (size, compression, bad JSON, keep-alive), over HTTP/1.1 and
//! HTTP/2.

use std::time::Duration;

use meshguard_host_tests::http::{Connection, Protocol, Request};
use meshguard_host_tests::mesh::{ClientProfile, Filter, Mesh, ROUTE_HEADER};
use meshguard_host_tests::upstream::{Recorded, Script};
use serde_json::{json, Value};

const HASH_KEY: &str = "meshguard-test-hash-key-32-bytes";

const POLICY: &str = r#"{
  "config_version": "mask-v1",
  "max_body_bytes": 65536,
  "rules": [
    {"name": "pii", "json_paths": ["/users/*/ssn", "**/password"], "json_keys": ["api_key"],
     "detectors": ["card", "email", "us_ssn", "iban", "jwt", "aws_access_key", "private_key"],
     "except_principals": ["cluster.local/ns/default/sa/auditor"]},
    {"name": "card-last4", "directions": ["response"], "json_keys": ["card_number"],
     "strategy": "partial", "keep_last": 4},
    {"name": "pseudonyms", "json_keys": ["customer_email"], "strategy": "hash"},
    {"name": "drop-notes", "json_keys": ["internal_notes"], "strategy": "remove"},
    {"name": "auth-header", "headers": ["authorization", "x-api-key"]},
    {"name": "bearer", "detectors": ["bearer_token"]}
  ]
}"#;

async fn mesh_with(policy: &str) -> Mesh {
    Mesh::builder()
        .filter(Filter::named("masking", policy).env("MESHGUARD_MASK_HASH_KEY", HASH_KEY))
        .start()
        .await
        .expect("mesh starts")
}

async fn mesh() -> Mesh {
    mesh_with(POLICY).await
}

fn post_json(body: &Value) -> Request {
    Request::new("POST", "/api/records")
        .header("content-type", "application/json")
        .body(body.to_string())
}

/// The one request that reached the upstream since the last call.
async fn arrived(mesh: &Mesh) -> Recorded {
    mesh.upstream().take_one().await.unwrap()
}

fn record() -> Value {
    json!({
        "users": [
            {"name": "Ann", "ssn": "078-05-1120", "email": "ann@example.com",
             "card": "4111 1111 1111 1111", "not_a_card": "4111111111111112",
             "api_key": "k-123", "customer_email": "ann@example.com",
             "internal_notes": "VIP", "nested": {"password": "hunter2"}},
            {"name": "Bob", "ssn": "219-09-9999", "iban": "GB82 WEST 1234 5698 7654 32",
             "bad_iban": "GB82 WEST 1234 5698 7654 33", "token": "AKIAIOSFODNN7EXAMPLE",
             "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"}
        ]
    })
}

#[tokio::test]
async fn requests_are_masked_before_the_upstream_sees_them() {
    let mesh = mesh().await;
    // The upstream answers with a body no rule touches: whatever the client
    // gets back, only the recording shows what request masking did.
    mesh.upstream()
        .set_default(Some(Script::typed("text/plain", "stored")));
    for protocol in Protocol::ALL {
        let resp = mesh
            .send_as(
                "frontend",
                post_json(&record())
                    .protocol(protocol)
                    .upstream_protocol(protocol),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{protocol:?}: {}", resp.text());
        assert_eq!(resp.text(), "stored", "{protocol:?}");
        let upstream = arrived(&mesh).await;
        assert_eq!(upstream.protocol, protocol);
        assert!(
            upstream
                .header("content-length")
                .is_none_or(|l| l == upstream.body.len().to_string()),
            "{protocol:?}: a stale content-length never reaches the upstream: {upstream:?}"
        );
        let got = upstream.json();
        check_masked_record(&got, protocol);
    }
    // Over a forced HTTP/1.1 sidecar leg from an HTTP/2 client as well.
    let resp = mesh
        .send_as(
            "frontend",
            post_json(&record()).http2().leg(Protocol::Http1),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    check_masked_record(&arrived(&mesh).await.json(), Protocol::Http2);

    let metric = |rule: &str| {
        format!(r#"meshguard_masking_fields_total{{rule="{rule}",direction="request"}}"#)
    };
    // Nine values per record (five of Ann's, four of Bob's), three requests.
    assert_eq!(mesh.server.metric(&metric("pii")).await.unwrap(), Some(27));
    assert_eq!(
        mesh.server.metric(&metric("drop-notes")).await.unwrap(),
        Some(3)
    );
}

/// The fixed expectations for [`record`] after request masking.
fn check_masked_record(got: &Value, protocol: Protocol) {
    let ann = &got["users"][0];
    let bob = &got["users"][1];
    let cases = [
        (&ann["ssn"], json!("[REDACTED]")),
        (&ann["email"], json!("[REDACTED]")),
        (&ann["card"], json!("[REDACTED]")),
        (&ann["not_a_card"], json!("4111111111111112")), // fails Luhn
        (&ann["api_key"], json!("[REDACTED]")),
        (&ann["nested"]["password"], json!("[REDACTED]")),
        (&ann["name"], json!("Ann")),
        (&bob["ssn"], json!("[REDACTED]")),
        (&bob["iban"], json!("[REDACTED]")),
        (&bob["bad_iban"], json!("GB82 WEST 1234 5698 7654 33")), // bad checksum
        (&bob["token"], json!("[REDACTED]")),
        (&bob["jwt"], json!("[REDACTED]")),
    ];
    for (got, want) in cases {
        assert_eq!(*got, want, "{protocol:?} in {got}");
    }
    // remove drops the member; hash is the keyed pseudonym pinned in
    // filters/core (HMAC-SHA-256 under HASH_KEY), the same on every request.
    assert!(ann.get("internal_notes").is_none(), "{ann}");
    assert_eq!(ann["customer_email"], PSEUDONYM_ANN, "{protocol:?}");
}

/// `hash` of "ann@example.com" under [`HASH_KEY`], computed outside the code
/// under test: `python3 -c 'import hmac,hashlib,base64; print(base64.urlsafe_b64encode(
/// hmac.new(b"meshguard-test-hash-key-32-bytes", b"ann@example.com", hashlib.sha256)
/// .digest()).decode()[:22])'`.
const PSEUDONYM_ANN: &str = "hash:sBiDMiQ9HgtDdrbm69GuLs";

#[tokio::test]
async fn responses_are_masked_before_the_caller_sees_them() {
    let mesh = mesh().await;
    let body = json!({"orders": [{"card_number": "4111111111111111", "email": "bob@example.org"},
                                 {"card_number": "5500 0000 0000 0004", "note": "call bob@example.org"}]});
    for protocol in Protocol::ALL {
        // Chunked by the upstream, so the filter must buffer the whole body.
        let text = body.to_string().into_bytes();
        let chunks: Vec<Vec<u8>> = text.chunks(29).map(<[u8]>::to_vec).collect();
        mesh.upstream().script(
            "orders",
            Script::new(200)
                .header("content-type", "application/json")
                .chunks(chunks),
        );
        let request = Request::new("GET", "/api/orders")
            .script("orders")
            .protocol(protocol)
            .upstream_protocol(protocol);
        let resp = mesh.send_as("frontend", request).await.unwrap();
        assert_eq!(resp.status, 200, "{protocol:?}");
        assert!(!resp.is_reset(), "{protocol:?}: {resp:?}");
        let got = resp.json().unwrap();
        assert_eq!(got["orders"][0]["card_number"], "************1111");
        assert_eq!(got["orders"][1]["card_number"], "**** **** **** 0004");
        assert_eq!(got["orders"][0]["email"], "[REDACTED]");
        assert_eq!(got["orders"][1]["note"], "call [REDACTED]");
        assert!(resp
            .header("content-length")
            .is_none_or(|l| l == resp.body.len().to_string()));
        // What the upstream was asked: an uncompressed answer, since the
        // response will be masked.
        let upstream = arrived(&mesh).await;
        assert_eq!(upstream.header_all("accept-encoding"), [&b"identity"[..]]);
    }
}

#[tokio::test]
async fn an_exempt_identity_sees_the_data_unmasked() {
    let mesh = mesh().await;
    let resp = mesh.send_as("auditor", post_json(&record())).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = arrived(&mesh).await.json();
    assert_eq!(
        got["users"][0]["ssn"], "078-05-1120",
        "pii does not apply to the auditor"
    );
    assert!(
        got["users"][0].get("internal_notes").is_none(),
        "other rules still apply"
    );
}

#[tokio::test]
async fn headers_text_and_form_bodies_are_masked() {
    let mesh = mesh().await;
    let request = Request::new("POST", "/submit")
        .header("authorization", "Bearer abcdefghijklmnopqrstuvwxyz")
        .header("x-api-key", "secret-key")
        .header("content-type", "text/plain")
        .body("contact ann@example.com, card 4111-1111-1111-1111, Authorization: Bearer abcdefghijklmnopqrstuvwxyz");
    mesh.upstream()
        .set_default(Some(Script::typed("text/plain", "ok")));
    let resp = mesh.send_as("frontend", request).await.unwrap();
    assert_eq!(resp.status, 200);
    let got = arrived(&mesh).await;
    assert_eq!(got.header_all("authorization"), [&b"[REDACTED]"[..]]);
    assert_eq!(got.header_all("x-api-key"), [&b"[REDACTED]"[..]]);
    assert_eq!(
        got.text(),
        "contact [REDACTED], card [REDACTED], Authorization: Bearer [REDACTED]"
    );

    // A repeated header: every copy is masked, none slips through beside it.
    let repeated = Request::new("GET", "/submit")
        .header("x-api-key", "first-secret")
        .header("x-api-key", "second-secret");
    for protocol in Protocol::ALL {
        let resp = mesh
            .send_as("frontend", repeated.clone().protocol(protocol))
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        let got = arrived(&mesh).await;
        let keys = got.header_all("x-api-key");
        assert!(!keys.is_empty(), "{protocol:?}: {got:?}");
        assert!(
            keys.iter().all(|v| *v == b"[REDACTED]"),
            "{protocol:?}: {got:?}"
        );
    }

    let form = Request::new("POST", "/submit")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("user=ann&password=hunter2&email=ann%40example.com&q=ok");
    mesh.send_as("frontend", form).await.unwrap();
    let body = arrived(&mesh).await.text();
    assert!(body.starts_with("user=ann&password="), "{body}");
    assert!(
        !body.contains("hunter2") && !body.contains("ann%40example.com"),
        "{body}"
    );
    assert!(body.ends_with("&q=ok"), "{body}");
}

#[tokio::test]
async fn chunked_uploads_are_buffered_and_masked() {
    let mesh = mesh().await;
    mesh.upstream()
        .set_default(Some(Script::typed("text/plain", "ok")));
    let body = record().to_string().into_bytes();
    let chunks: Vec<Vec<u8>> = body.chunks(37).map(<[u8]>::to_vec).collect();
    for protocol in Protocol::ALL {
        let request = Request::new("POST", "/api/records")
            .header("content-type", "application/json")
            .chunked(chunks.clone())
            .protocol(protocol);
        let resp = mesh.send_as("frontend", request).await.unwrap();
        assert_eq!(resp.status, 200, "{protocol:?}: {}", resp.text());
        check_masked_record(&arrived(&mesh).await.json(), protocol);
    }
}

#[tokio::test]
async fn a_length_changing_rewrite_never_desyncs_a_keep_alive_connection() {
    let mesh = mesh().await;
    // One client connection; the server sidecar reuses its pooled upstream
    // connection for the second request. A stale content-length after the
    // first (shorter) body would corrupt the second request.
    let mut conn = Connection::open(mesh.client_addr()).await.unwrap();
    let first = post_json(&json!({"ssn_list": ["078-05-1120", "219-09-9999"], "pad": "x"}))
        .header(ROUTE_HEADER, "frontend");
    let second = Request::new("POST", "/api/second")
        .header("content-type", "application/json")
        .header(ROUTE_HEADER, "frontend")
        .body(r#"{"ok": true}"#);
    mesh.upstream()
        .set_default(Some(Script::typed("text/plain", "ok")));
    for _ in 0..3 {
        let a = conn.send(&first).await.unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
        let got = arrived(&mesh).await;
        assert_eq!(
            got.json(),
            json!({"ssn_list": ["[REDACTED]", "[REDACTED]"], "pad": "x"})
        );
        assert_ne!(
            got.body.len(),
            first.body.len(),
            "the rewrite changed the length"
        );
        let b = conn.send(&second).await.unwrap();
        assert_eq!(b.status, 200, "{}", b.text());
        let got = arrived(&mesh).await;
        assert_eq!(got.target, "/api/second");
        assert_eq!(got.text(), r#"{"ok": true}"#);
    }
}

#[tokio::test]
async fn bodies_that_cannot_be_masked_are_refused_by_default() {
    let policy = POLICY.replace(r#""max_body_bytes": 65536"#, r#""max_body_bytes": 1024"#);
    let mesh = mesh_with(&policy).await;
    let big = json!({"blob": "x".repeat(2000)});
    let mut deep = json!("leaf");
    for _ in 0..100 {
        deep = json!([deep]);
    }
    mesh.upstream()
        .script("gzipped", Script::json(&json!({"a": 1})).gzip());
    // Refused requests: nothing reaches the upstream when the refusal is
    // decided at the headers; when decided on the whole body, the headers may
    // have left, but no body byte (see docs/testing.md).
    let requests: [(&str, Request, u16, &str); 4] = [
        (
            "oversize by content-length",
            post_json(&big),
            413,
            "oversize",
        ),
        (
            "malformed json",
            Request::new("POST", "/x")
                .header("content-type", "application/json")
                .body("{\"a\": "),
            400,
            "malformed_json",
        ),
        ("too deep", post_json(&deep), 400, "too_deep"),
        (
            "compressed request",
            Request::new("POST", "/x")
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body("\u{1f}\u{8b}"),
            415,
            "compressed",
        ),
    ];
    for protocol in Protocol::ALL {
        for (what, request, status, reason) in &requests {
            let resp = mesh
                .send_as("frontend", request.clone().protocol(protocol))
                .await
                .unwrap();
            assert_eq!(resp.status, *status, "{what} {protocol:?}: {}", resp.text());
            assert_eq!(
                resp.header("x-meshguard-deny-reason"),
                Some(*reason),
                "{what}"
            );
            let what = format!("{what} {protocol:?}");
            if *status == 400 {
                mesh.upstream().assert_no_body_arrived(&what).await;
            } else {
                mesh.assert_nothing_reached_upstream(&what).await;
            }
        }
        // A refused response: the request did reach the upstream; the client
        // gets a local 502 instead of the compressed body.
        let resp = mesh
            .send_as(
                "frontend",
                Request::new("GET", "/x")
                    .script("gzipped")
                    .protocol(protocol),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 502, "{protocol:?}: {}", resp.text());
        assert_eq!(resp.header("x-meshguard-deny-reason"), Some("compressed"));
        assert!(resp.header("content-encoding").is_none());
        arrived(&mesh).await;
    }
    let refused = mesh
        .server
        .metric(r#"meshguard_masking_bodies_refused_total{reason="oversize",direction="request"}"#)
        .await
        .unwrap();
    assert_eq!(refused, Some(2), "one per protocol");
}

#[tokio::test]
async fn gzip_responses_are_avoided_by_asking_the_upstream_for_identity() {
    let mesh = mesh().await;
    let body = json!({"email": "ann@example.com"});
    // The legacy echo gzips its answer if the request that reached it accepts
    // gzip: the filter must have replaced the caller's `accept-encoding`.
    let request = Request::new("GET", "/api/records")
        .header("x-echo-response", body.to_string())
        .header("x-echo-content-type", "application/json")
        .header("accept-encoding", "gzip")
        .header("x-echo-gzip", "if-accepted");
    let resp = mesh.send_as("frontend", request).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-encoding").is_none());
    assert_eq!(resp.json().unwrap()["email"], "[REDACTED]");
    let got = arrived(&mesh).await;
    assert_eq!(got.header_all("accept-encoding"), [&b"identity"[..]]);
}

#[tokio::test]
async fn dry_run_changes_nothing_but_counts_what_it_would_mask() {
    let policy = POLICY.replace(
        r#""config_version": "mask-v1","#,
        r#""config_version": "mask-v1", "mode": "dry-run","#,
    );
    let mesh = mesh_with(&policy).await;
    let request = post_json(&record()).header("accept-encoding", "gzip");
    let resp = mesh.send_as("frontend", request.clone()).await.unwrap();
    assert_eq!(resp.status, 200);
    let got = arrived(&mesh).await;
    assert_eq!(got.body, request.body, "forwarded byte for byte");
    assert_eq!(
        got.header_all("accept-encoding"),
        [&b"gzip"[..]],
        "accept-encoding left alone"
    );
    mesh.server
        .wait_for_metric(
            r#"meshguard_masking_dry_run_fields_total{rule="pii",direction="request"}"#,
            Duration::from_secs(5),
            |v| v == Some(9),
        )
        .await
        .unwrap();
    assert_eq!(
        mesh.server
            .metric(r#"meshguard_masking_fields_total{rule="pii",direction="request"}"#)
            .await
            .unwrap(),
        Some(0)
    );
    // The log never carries the values (read once everything before a later
    // marker request is flushed).
    let log = mesh.flushed_server_log().await.unwrap();
    assert!(log.contains("mask-v1"), "the log is the sidecar's");
    assert!(!log.contains("078-05-1120"));
}

#[tokio::test]
async fn a_response_refused_after_its_headers_left_is_reset_without_one_unmasked_byte() {
    let policy = POLICY.replace(r#""max_body_bytes": 65536"#, r#""max_body_bytes": 1024"#);
    let mesh = mesh_with(&policy).await;
    let secret = "ann@example.com";
    // No content-length: the body grows past max_body_bytes while buffered.
    let growing: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            format!(
                r#"{{"n": {i}, "email": "{secret}", "pad": "{}"}}"#,
                "x".repeat(300)
            )
            .into_bytes()
        })
        .collect();
    mesh.upstream().script(
        "growing",
        Script::new(200)
            .header("content-type", "application/json")
            .chunks(growing),
    );
    mesh.upstream().script(
        "malformed",
        Script::new(200)
            .header("content-type", "application/json")
            .chunks(vec![format!(r#"{{"email": "{secret}", "#).into_bytes()]),
    );
    for (script, reason) in [("growing", "oversize"), ("malformed", "malformed_json")] {
        for protocol in Protocol::ALL {
            let what = format!("{script} over {protocol:?}");
            let request = Request::new("GET", "/api/records")
                .script(script)
                .protocol(protocol)
                .upstream_protocol(protocol);
            let resp = mesh.send_as("frontend", request).await.unwrap();
            assert!(resp.is_reset(), "{what}: {resp:?}");
            assert_eq!(resp.status, 200, "{what}: the headers had left");
            assert!(
                !resp.text().contains(secret) && resp.body.is_empty(),
                "{what}: {resp:?}"
            );
            arrived(&mesh).await;
        }
        let refused = mesh
            .server
            .metric(&format!(
                r#"meshguard_masking_bodies_refused_total{{reason="{reason}",direction="response"}}"#
            ))
            .await
            .unwrap();
        assert_eq!(refused, Some(2), "{script}");
    }
}

#[tokio::test]
async fn a_chunked_request_growing_past_the_limit_is_refused_before_any_body_byte_leaves() {
    let policy = POLICY.replace(r#""max_body_bytes": 65536"#, r#""max_body_bytes": 1024"#);
    let mesh = mesh_with(&policy).await;
    let chunks: Vec<Vec<u8>> = std::iter::once(br#"{"ssn": "078-05-1120", "pad": ""#.to_vec())
        .chain((0..6).map(|_| vec![b'x'; 300]))
        .chain(std::iter::once(br#""}"#.to_vec()))
        .collect();
    for protocol in Protocol::ALL {
        let request = Request::new("POST", "/api/records")
            .header("content-type", "application/json")
            .chunked(chunks.clone())
            .protocol(protocol);
        let resp = mesh.send_as("frontend", request).await.unwrap();
        let what = format!("{protocol:?}");
        assert_eq!(resp.status, 413, "{what}: {resp:?}");
        assert_eq!(resp.header("x-meshguard-deny-reason"), Some("oversize"));
        mesh.upstream().assert_no_body_arrived(&what).await;
    }
}

#[tokio::test]
async fn pass_unmasked_forwards_an_oversize_body_as_sent_and_counts_it() {
    let policy = POLICY.replace(
        r#""max_body_bytes": 65536"#,
        r#""max_body_bytes": 1024, "on_oversize": "pass_unmasked""#,
    );
    let mesh = mesh_with(&policy).await;
    let body = json!({"ssn_list": ["078-05-1120"], "blob": "x".repeat(2000)}).to_string();
    for (i, protocol) in Protocol::ALL.into_iter().enumerate() {
        // Announced by content-length, and growing without one.
        for (j, request) in [
            post_json(&serde_json::from_str(&body).unwrap()),
            Request::new("POST", "/api/records")
                .header("content-type", "application/json")
                .chunked(body.as_bytes().chunks(500).map(<[u8]>::to_vec).collect()),
        ]
        .into_iter()
        .enumerate()
        {
            let resp = mesh
                .send_as("frontend", request.protocol(protocol))
                .await
                .unwrap();
            assert_eq!(resp.status, 200, "{protocol:?} {j}: {}", resp.text());
            let got = arrived(&mesh).await;
            assert_eq!(
                got.body,
                body.as_bytes(),
                "{protocol:?} {j}: forwarded as sent"
            );
            let skipped = mesh
                .server
                .metric(r#"meshguard_masking_bodies_skipped_total{reason="oversize",direction="request"}"#)
                .await
                .unwrap();
            assert_eq!(skipped, Some((2 * i + j + 1) as u64), "{protocol:?} {j}");
        }
    }
    assert_eq!(
        mesh.server
            .metric(
                r#"meshguard_masking_bodies_refused_total{reason="oversize",direction="request"}"#
            )
            .await
            .unwrap(),
        Some(0)
    );
}

/// Runs `meshguard mask` (the CLI binary) on one message; returns (exit code,
/// stdout bytes, stderr).
fn cli_mask(policy: &str, args: &[&str], body: &[u8]) -> (Option<i32>, Vec<u8>, String) {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, policy).unwrap();
    let mut child = std::process::Command::new(meshguard_host_tests::meshguard_cli())
        .arg("mask")
        .arg(&file)
        .args(args)
        .env("MESHGUARD_MASK_HASH_KEY", HASH_KEY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn what_meshguard_mask_prints_is_byte_for_byte_what_envoy_forwards() {
    let policy = POLICY.replace(r#""max_body_bytes": 65536"#, r#""max_body_bytes": 4096"#);
    let mesh = mesh_with(&policy).await;
    let frontend = "spiffe://cluster.local/ns/default/sa/frontend";
    let mut deep = String::new();
    for _ in 0..100 {
        deep.push('[');
    }
    let record = record().to_string();
    let pinned = r#"{"customer_email": "ann@example.com", "card_number": "5500 0000 0000 0004"}"#;
    let inputs: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "a JSON record",
            "application/json",
            record.clone().into_bytes(),
        ),
        (
            "pinned strategies",
            "application/json",
            pinned.as_bytes().to_vec(),
        ),
        (
            "text",
            "text/plain",
            b"mail ann@example.com, card 4111-1111-1111-1111".to_vec(),
        ),
        (
            "a form",
            "application/x-www-form-urlencoded",
            b"user=ann&password=hunter2&email=ann%40example.com".to_vec(),
        ),
        ("malformed JSON", "application/json", b"{\"a\": ".to_vec()),
        ("too deep", "application/json", deep.into_bytes()),
        ("oversize", "application/json", vec![b' '; 5000]),
    ];
    for (what, content_type, body) in &inputs {
        // Request direction: the CLI's stdout against the recording upstream.
        let (code, stdout, stderr) = cli_mask(
            &policy,
            &[
                "--path",
                "/api/records",
                "--peer",
                frontend,
                "--content-type",
                content_type,
            ],
            body,
        );
        let request = Request::new("POST", "/api/records")
            .header("content-type", *content_type)
            .body(body.clone());
        let resp = mesh.send_as("frontend", request).await.unwrap();
        match code {
            Some(0) => {
                assert_eq!(resp.status, 200, "{what}: {}", resp.text());
                let got = arrived(&mesh).await;
                assert_eq!(
                    String::from_utf8_lossy(&got.body),
                    String::from_utf8_lossy(&stdout),
                    "{what}: the upstream got what the CLI printed"
                );
            }
            Some(3) => {
                let reason = resp.header("x-meshguard-deny-reason").unwrap_or_default();
                assert!(
                    stderr.contains(&format!(
                        "refused: {reason} (the filter would answer {})",
                        resp.status
                    )),
                    "{what}: Envoy answered {} {reason}; the CLI said {stderr}",
                    resp.status
                );
                mesh.upstream().settled().await.unwrap();
                mesh.upstream().take();
            }
            other => panic!("{what}: meshguard mask exited {other:?}: {stderr}"),
        }

        // Response direction: the CLI's stdout against what the client got.
        let (code, stdout, stderr) = cli_mask(
            &policy,
            &[
                "--response",
                "--path",
                "/api/records",
                "--method",
                "GET",
                "--peer",
                frontend,
                "--content-type",
                content_type,
            ],
            body,
        );
        mesh.upstream().script(
            "parity",
            Script::new(200)
                .header("content-type", *content_type)
                .body(body.clone()),
        );
        let resp = mesh
            .send_as(
                "frontend",
                Request::new("GET", "/api/records").script("parity"),
            )
            .await
            .unwrap();
        arrived(&mesh).await;
        match code {
            Some(0) => {
                assert_eq!(resp.status, 200, "{what} (response): {}", resp.text());
                assert!(!resp.is_reset(), "{what} (response)");
                assert_eq!(
                    String::from_utf8_lossy(&resp.body),
                    String::from_utf8_lossy(&stdout),
                    "{what} (response): the client got what the CLI printed"
                );
            }
            Some(3) if stderr.contains("reset") => {
                assert!(
                    resp.is_reset(),
                    "{what} (response): CLI {stderr}; got {resp:?}"
                );
            }
            Some(3) => {
                let reason = resp.header("x-meshguard-deny-reason").unwrap_or_default();
                assert!(
                    stderr.contains(&format!(
                        "refused: {reason} (the filter would answer {})",
                        resp.status
                    )),
                    "{what} (response): Envoy answered {} {reason}; the CLI said {stderr}",
                    resp.status
                );
            }
            other => panic!("{what} (response): meshguard mask exited {other:?}: {stderr}"),
        }
    }
}

const AUDITOR: &str = "spiffe://cluster.local/ns/default/sa/auditor";

/// Whether the `pii` rule (which excepts the auditor) was applied to what
/// reached the upstream.
fn pii_masked(got: &Recorded) -> bool {
    match got.json()["users"][0]["ssn"].as_str() {
        Some("078-05-1120") => false,
        Some("[REDACTED]") => true,
        other => panic!("unexpected ssn {other:?}: {got:?}"),
    }
}

/// `except_principals` exempts the identity the mesh authenticated, and only
/// a usable one: a plaintext caller naming the auditor in XFCC, a gateway
/// forwarding an auditor's XFCC element, and a certificate naming the
/// auditor beside another SPIFFE ID (no valid X509-SVID: the identity filter
/// refuses it as `peer_identity_unusable`) all get masked data.
///
/// The two-SAN row found a bug: the masking filter took the certificate's
/// first URI SAN (`connection.uri_san_peer_certificate`) as the caller, so
/// the auditor-first certificate was exempted; fixed in the masking filter.
/// Broken by hand: before that fix, the two-SAN row failed (unmasked). And
/// the filter taking the caller from the first `URI` of the request's XFCC
/// when there is one: the gateway row failed, then (the rows before it
/// removed) the two-SAN row, then (those removed too) the plaintext row.
#[tokio::test]
async fn except_principals_exempt_only_a_usable_authenticated_identity() {
    let two_sans = ClientProfile {
        route: "auditor-two-uris",
        identity: Some(AUDITOR),
        max_tls: "TLSv1_3",
        extra_uris: &["spiffe://cluster.local/ns/default/sa/frontend"],
    };
    let mesh = Mesh::builder()
        .filter(Filter::named("masking", POLICY).env("MESHGUARD_MASK_HASH_KEY", HASH_KEY))
        .profile(two_sans)
        .start()
        .await
        .expect("mesh starts");
    let forged_element = format!("By={};URI={AUDITOR}", meshguard_host_tests::mesh::SERVER_ID);
    for protocol in Protocol::ALL {
        // (profile, XFCC sent by the caller, masked?)
        for (profile, xfcc, masked) in [
            ("auditor", None, false),
            ("frontend", None, true),
            ("gateway", Some(forged_element.as_str()), true),
            ("frontend", Some(forged_element.as_str()), true),
            ("auditor-two-uris", None, true),
        ] {
            let what = format!("{profile} (XFCC {xfcc:?}) over {protocol:?}");
            let mut request = post_json(&record()).protocol(protocol);
            if let Some(x) = xfcc {
                request = request.header("x-forwarded-client-cert", x);
            }
            let resp = mesh.send_as(profile, request).await.unwrap();
            assert_eq!(resp.status, 200, "{what}: {resp:?}");
            assert_eq!(pii_masked(&arrived(&mesh).await), masked, "{what}");
        }
    }
    // A plaintext caller's XFCC reaches the filter only when the sidecar
    // forwards it (Istio's APPEND_FORWARD drops it): even then, no exemption.
    let mesh = Mesh::builder()
        .filter(Filter::named("masking", POLICY).env("MESHGUARD_MASK_HASH_KEY", HASH_KEY))
        .forward_client_cert("ALWAYS_FORWARD_ONLY")
        .start()
        .await
        .expect("mesh starts");
    for protocol in Protocol::ALL {
        let what = format!("plaintext naming the auditor over {protocol:?}");
        let request = post_json(&record())
            .protocol(protocol)
            .header("x-forwarded-client-cert", format!("URI={AUDITOR}"));
        let resp = mesh.send_as("plaintext", request).await.unwrap();
        assert_eq!(resp.status, 200, "{what}: {resp:?}");
        let got = arrived(&mesh).await;
        assert_eq!(
            got.header("x-forwarded-client-cert"),
            Some(format!("URI={AUDITOR}").as_str()),
            "{what}: the XFCC did reach the filter"
        );
        assert!(pii_masked(&got), "{what}");
        // This sidecar appends no XFCC element of its own, so not even the
        // auditor over mTLS has a usable identity here (docs/identity.md,
        // deployment requirement): masked too. The first mesh above is the
        // control where the same auditor is exempt.
        let resp = mesh
            .send_as("auditor", post_json(&record()).protocol(protocol))
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(
            pii_masked(&arrived(&mesh).await),
            "auditor over {protocol:?} behind ALWAYS_FORWARD_ONLY"
        );
    }
}
