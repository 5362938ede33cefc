//! The masking filter in a real mesh: requests masked before the upstream sees
//! them, responses masked before the caller does, with the failure modes a
//! body filter must get right (size, compression, bad JSON, keep-alive).

use std::time::Duration;

use meshguard_host_tests::http::{Connection, Request, Response};
use meshguard_host_tests::mesh::{Filter, Mesh, ROUTE_HEADER};
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

/// The body the upstream received, as JSON.
fn upstream_body(resp: &Response) -> Value {
    let echo = resp.json().unwrap();
    serde_json::from_str(echo["body"].as_str().unwrap()).unwrap_or(Value::Null)
}

/// A request whose response is `body` (served by the echo upstream).
fn respond_with(body: &Value) -> Request {
    Request::new("GET", "/api/records")
        .header("x-echo-response", body.to_string())
        .header("x-echo-content-type", "application/json")
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
    let resp = mesh
        .send_as("frontend", post_json(&record()))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = upstream_body(&resp);
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
        assert_eq!(*got, want, "in {got}");
    }
    // remove drops the member; hash is a stable keyed pseudonym.
    assert!(ann.get("internal_notes").is_none(), "{ann}");
    let pseudonym = ann["customer_email"].as_str().unwrap().to_string();
    assert!(
        pseudonym.starts_with("hash:") && pseudonym.len() == 27,
        "{pseudonym}"
    );
    let again = upstream_body(
        &mesh
            .send_as("frontend", post_json(&record()))
            .await
            .unwrap(),
    );
    assert_eq!(
        again["users"][0]["customer_email"],
        pseudonym.as_str(),
        "stable across requests"
    );

    let metric = |rule: &str| {
        format!(r#"meshguard_masking_fields_total{{rule="{rule}",direction="request"}}"#)
    };
    // Nine values per record (five of Ann's, four of Bob's), two requests.
    assert_eq!(mesh.server.metric(&metric("pii")).await.unwrap(), Some(18));
    assert_eq!(
        mesh.server.metric(&metric("drop-notes")).await.unwrap(),
        Some(2)
    );
}

#[tokio::test]
async fn responses_are_masked_before_the_caller_sees_them() {
    let mesh = mesh().await;
    let body = json!({"orders": [{"card_number": "4111111111111111", "email": "bob@example.org"},
                                 {"card_number": "5500 0000 0000 0004", "note": "call bob@example.org"}]});
    let resp = mesh.send_as("frontend", respond_with(&body)).await.unwrap();
    assert_eq!(resp.status, 200);
    let got = resp.json().unwrap();
    assert_eq!(got["orders"][0]["card_number"], "************1111");
    assert_eq!(got["orders"][1]["card_number"], "**** **** **** 0004");
    assert_eq!(got["orders"][0]["email"], "[REDACTED]");
    assert_eq!(got["orders"][1]["note"], "call [REDACTED]");
    assert!(resp
        .header("content-length")
        .is_none_or(|l| l == resp.body.len().to_string()));
}

#[tokio::test]
async fn an_exempt_identity_sees_the_data_unmasked() {
    let mesh = mesh().await;
    let resp = mesh.send_as("auditor", post_json(&record())).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = upstream_body(&resp);
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
    let resp = mesh.send_as("frontend", request).await.unwrap();
    let echo = resp.json().unwrap();
    assert_eq!(echo["headers"]["authorization"], "[REDACTED]");
    assert_eq!(echo["headers"]["x-api-key"], "[REDACTED]");
    assert_eq!(
        echo["body"],
        "contact [REDACTED], card [REDACTED], Authorization: Bearer [REDACTED]"
    );

    let form = Request::new("POST", "/submit")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("user=ann&password=hunter2&email=ann%40example.com&q=ok");
    let echo = mesh
        .send_as("frontend", form)
        .await
        .unwrap()
        .json()
        .unwrap();
    let body = echo["body"].as_str().unwrap();
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
    let body = record().to_string().into_bytes();
    let chunks: Vec<Vec<u8>> = body.chunks(37).map(<[u8]>::to_vec).collect();
    let request = Request::new("POST", "/api/records")
        .header("content-type", "application/json")
        .chunked(chunks);
    let resp = mesh.send_as("frontend", request).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(upstream_body(&resp)["users"][0]["ssn"], "[REDACTED]");
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
    for _ in 0..3 {
        let a = conn.send(&first).await.unwrap();
        assert_eq!(upstream_body(&a)["ssn_list"][0], "[REDACTED]");
        let b = conn.send(&second).await.unwrap();
        assert_eq!(b.status, 200, "{}", b.text());
        let echo = b.json().unwrap();
        assert_eq!(echo["path"], "/api/second");
        assert_eq!(echo["body"], r#"{"ok": true}"#);
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
    let cases: [(&str, Request, u16, &str); 5] = [
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
        (
            "compressed response despite accept-encoding: identity",
            respond_with(&json!({"a": 1})).header("x-echo-gzip", "always"),
            502,
            "compressed",
        ),
    ];
    for (what, request, status, reason) in cases {
        let resp = mesh.send_as("frontend", request).await.unwrap();
        assert_eq!(resp.status, status, "{what}: {}", resp.text());
        assert_eq!(
            resp.header("x-meshguard-deny-reason"),
            Some(reason),
            "{what}"
        );
    }
    let refused = mesh
        .server
        .metric(r#"meshguard_masking_bodies_refused_total{reason="oversize",direction="request"}"#)
        .await
        .unwrap();
    assert_eq!(refused, Some(1));
}

#[tokio::test]
async fn gzip_responses_are_avoided_by_asking_the_upstream_for_identity() {
    let mesh = mesh().await;
    let body = json!({"email": "ann@example.com"});
    let request = respond_with(&body)
        .header("accept-encoding", "gzip")
        .header("x-echo-gzip", "if-accepted");
    let resp = mesh.send_as("frontend", request).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-encoding").is_none());
    assert_eq!(resp.json().unwrap()["email"], "[REDACTED]");
}

#[tokio::test]
async fn dry_run_changes_nothing_but_counts_what_it_would_mask() {
    let policy = POLICY.replace(
        r#""config_version": "mask-v1","#,
        r#""config_version": "mask-v1", "mode": "dry-run","#,
    );
    let mesh = mesh_with(&policy).await;
    let resp = mesh
        .send_as("frontend", post_json(&record()))
        .await
        .unwrap();
    assert_eq!(upstream_body(&resp), record(), "forwarded unchanged");
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
    // The log never carries the values.
    assert!(!mesh.server.log().contains("078-05-1120"));
}
