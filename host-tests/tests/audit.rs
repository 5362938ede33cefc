//! The audit filter in a real mesh: signed command-hash headers the upstream
//! verifies, spoofed headers stripped, records in the log and at a collector,
//! chains that verify across 1,000 requests and break on tampering, and the
//! collector down with fail_closed on and off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use meshguard_core::audit::{verify_header, verify_records, AuditPolicy, RECORD_PREFIX};
use meshguard_host_tests::collector::Collector;
use meshguard_host_tests::http::{Connection, Request};
use meshguard_host_tests::mesh::{Filter, Mesh, AUDIT_KEY};
use meshguard_host_tests::meshguard_cli;
use serde_json::Value;

const COLLECTOR_CLUSTER: &str = "audit-collector";

fn audit_config(fail_closed: bool, collector: bool) -> String {
    let collector = if collector {
        format!(
            r#", "collector": {{"cluster": "{COLLECTOR_CLUSTER}", "path": "/v1/records", "timeout_ms": 1000,
                              "max_retries": 1, "batch_size": 100, "max_queue": 5000}}"#
        )
    } else {
        String::new()
    };
    format!(
        r#"{{
  "config_version": "audit-v1",
  "key_id": "test",
  "commands": [
    {{"name": "sql", "paths": ["/query"], "methods": ["POST"], "parts": ["method", "path", {{"json_pointer": "/sql"}}]}},
    {{"name": "exec", "paths": ["/exec/*"], "parts": ["method", "path", "query", "body"]}}
  ],
  "fail_closed": {fail_closed}{collector}
}}"#
    )
}

fn key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(AUDIT_KEY)
        .unwrap()
}

fn keys() -> HashMap<String, Vec<u8>> {
    HashMap::from([("test".to_string(), key())])
}

async fn mesh(filters: Vec<Filter>, collector: Option<SocketAddr>) -> Mesh {
    // Nothing listens on port 9 of loopback: a collector that is down.
    let collector = collector.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9)));
    let mut builder = Mesh::builder().server_cluster(COLLECTOR_CLUSTER, collector);
    // These commands hash bodies (`json_pointer`, `body`): the filter must be
    // deployed as the documented EnvoyFilter (allow_on_headers_stop_iteration).
    for f in filters {
        builder = builder.filter(f.envoyfilter_variant());
    }
    builder.start().await.expect("mesh starts")
}

/// The record lines in the server sidecar's log.
fn log_records(mesh: &Mesh) -> Vec<String> {
    mesh.server
        .log()
        .lines()
        .filter_map(|l| l.find(RECORD_PREFIX).map(|i| l[i..].to_string()))
        .collect()
}

async fn wait_records(mesh: &Mesh, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = log_records(mesh);
        if records.len() >= n {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records in the log",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn record(line: &str) -> Value {
    serde_json::from_str(line.strip_prefix(RECORD_PREFIX).unwrap_or(line)).unwrap()
}

#[tokio::test]
async fn the_upstream_receives_a_signed_command_hash_it_can_verify() {
    let mesh = mesh(vec![Filter::audit(audit_config(false, false))], None).await;
    let body = r#"{"sql": "SELECT * FROM accounts WHERE id = 7", "trace": "abc"}"#;
    let resp = mesh
        .send_as("frontend", Request::new("POST", "/query").body(body))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echoed = resp.json().unwrap();
    let headers = &echoed["headers"];
    let header = headers["x-meshguard-audit"]
        .as_str()
        .expect("audit header upstream");
    // What an upstream does: verify the MAC, then recompute the command hash.
    let stamp = verify_header(header, &key()).expect("valid signature");
    assert_eq!(
        stamp.peer.as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/frontend")
    );
    let policy = AuditPolicy::from_json(audit_config(false, false).as_bytes()).unwrap();
    let expected = policy
        .hash_request("POST", "/query", "backend.default.svc", body.as_bytes())
        .unwrap();
    assert_eq!(stamp.command_sha256, expected);
    let hex = meshguard_core::canonical::hex(&expected);
    assert_eq!(headers["x-meshguard-command-sha256"], hex);
    assert_eq!(headers["x-meshguard-audit-id"], stamp.id);
    // The caller gets the same id and hash.
    assert_eq!(resp.header("x-meshguard-audit-id"), Some(stamp.id.as_str()));
    assert_eq!(
        resp.header("x-meshguard-command-sha256"),
        Some(hex.as_str())
    );

    // The same command written differently hashes the same; another command does not.
    let reordered = r#"{"trace": "zzz", "sql": "SELECT * FROM accounts WHERE id = 7"}"#;
    let other = r#"{"sql": "SELECT * FROM accounts WHERE id = 8"}"#;
    for (body, same) in [(reordered, true), (other, false)] {
        let resp = mesh
            .send_as("frontend", Request::new("POST", "/query").body(body))
            .await
            .unwrap();
        let got = resp
            .header("x-meshguard-command-sha256")
            .unwrap()
            .to_string();
        assert_eq!(got == hex, same, "{body}");
    }
}

#[tokio::test]
async fn spoofed_audit_headers_never_reach_the_upstream() {
    let mesh = mesh(vec![Filter::audit(audit_config(false, false))], None).await;
    let forged = "v=1;kid=test;id=x;ts=1;peer=spiffe://cluster.local/ns/default/sa/admin;cfg=-;cmd=00;sig=AAAA";
    let request = Request::new("GET", "/exec/report?b=2&a=1")
        .header("x-meshguard-audit", forged)
        .header("x-meshguard-command-sha256", "0".repeat(64))
        .header("x-meshguard-audit-id", "forged-id");
    let resp = mesh.send_as("unknown", request).await.unwrap();
    assert_eq!(resp.status, 200);
    let headers = &resp.json().unwrap()["headers"];
    let header = headers["x-meshguard-audit"].as_str().unwrap();
    assert_ne!(header, forged);
    let stamp = verify_header(header, &key()).unwrap();
    assert_eq!(
        stamp.peer.as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/unknown")
    );
    assert_ne!(headers["x-meshguard-command-sha256"], "0".repeat(64));
    assert_ne!(headers["x-meshguard-audit-id"], "forged-id");
}

#[tokio::test]
async fn records_chain_across_a_thousand_requests_and_tampering_is_detected() {
    let collector = Collector::start().await.unwrap();
    let mesh = mesh(
        vec![Filter::audit(audit_config(false, true))],
        Some(collector.addr()),
    )
    .await;
    // Keep-alive connection: 1,000 requests without 1,000 handshakes.
    let mut conn = Connection::open(mesh.client_addr()).await.unwrap();
    for i in 0..1000 {
        let request = Request::new("POST", &format!("/exec/job?n={i}"))
            .header("x-meshguard-test-route", "frontend")
            .body(format!("run {i}"));
        let resp = conn.send(&request).await.unwrap();
        assert_eq!(resp.status, 200, "request {i}");
    }
    let lines = wait_records(&mesh, 1000).await;
    let first = record(&lines[0]);
    assert_eq!(first["command"], "exec");
    assert_eq!(first["status"], 200);
    assert_eq!(
        first["peer"],
        "spiffe://cluster.local/ns/default/sa/frontend"
    );

    // `meshguard audit verify` on the sidecar's log lines: all chains verify.
    let dir = mesh.dir();
    let verify = |name: &str, lines: &[String]| {
        let file = dir.join(name);
        std::fs::write(&file, lines.join("\n")).unwrap();
        let out = std::process::Command::new(meshguard_cli())
            .args(["audit", "verify"])
            .arg(&file)
            .args(["--key", &format!("test={AUDIT_KEY}")])
            .env_remove("MESHGUARD_AUDIT_KEY")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = verify("records.log", &lines);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1000 records, 0 broken"), "{out}");

    // Edit one record (its status): the chain breaks at that record.
    let mut edited = lines.clone();
    let seq = record(&edited[500])["seq"].clone();
    edited[500] = edited[500].replace(r#""status":200"#, r#""status":500"#);
    let (code, out) = verify("edited.log", &edited);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!("(seq {seq})")),
        "the break names seq {seq}: {out}"
    );
    // Delete one record: the next one reports the gap.
    let mut deleted = lines.clone();
    let seq = record(&deleted[701])["seq"].clone();
    deleted.remove(700);
    let (code, out) = verify("deleted.log", &deleted);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!("(seq {seq})")),
        "the break names seq {seq}: {out}"
    );

    // The collector received the same records.
    let deadline = Instant::now() + Duration::from_secs(20);
    while collector.lines().len() < 1000 {
        assert!(
            Instant::now() < deadline,
            "collector has {}",
            collector.lines().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = verify_records(&collector.lines().join("\n"), &keys());
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        mesh.server
            .metric(r#"meshguard_audit_records_total{result="emitted"}"#)
            .await
            .unwrap(),
        Some(1000)
    );
    mesh.server
        .wait_for_metric(
            r#"meshguard_audit_records_total{result="delivered"}"#,
            Duration::from_secs(10),
            |v| v == Some(1000),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn records_carry_the_identity_filters_decision() {
    let identity = Filter::identity(
        r#"{"rules": [{"name": "frontend", "action": "allow", "principals": ["cluster.local/ns/default/sa/frontend"]}]}"#,
    );
    let mesh = mesh(
        vec![identity, Filter::audit(audit_config(false, false))],
        None,
    )
    .await;
    let resp = mesh
        .send_as("frontend", Request::new("GET", "/exec/x"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let lines = wait_records(&mesh, 1).await;
    assert_eq!(
        record(&lines[0])["decisions"]["identity"],
        "allowed:allowed_by_rule"
    );
}

#[tokio::test]
async fn a_down_collector_refuses_traffic_only_under_fail_closed() {
    // fail_closed off: traffic flows; records are retried, then dropped and counted.
    let mesh_open = mesh(vec![Filter::audit(audit_config(false, true))], None).await;
    for _ in 0..3 {
        let resp = mesh_open
            .send_as("frontend", Request::new("GET", "/exec/x"))
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
    }
    mesh_open
        .server
        .wait_for_metric(
            r#"meshguard_audit_records_total{result="dropped"}"#,
            Duration::from_secs(15),
            |v| v.is_some_and(|n| n >= 3),
        )
        .await
        .unwrap();
    assert_eq!(log_records(&mesh_open).len(), 3, "records stay in the log");

    // fail_closed on: once a delivery failed, requests are refused with 503.
    let mesh_closed = mesh(vec![Filter::audit(audit_config(true, true))], None).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = mesh_closed
            .send_as("frontend", Request::new("GET", "/exec/x"))
            .await
            .unwrap();
        if resp.status == 503 {
            assert_eq!(
                resp.header("x-meshguard-deny-reason"),
                Some("audit_collector_unavailable")
            );
            break;
        }
        assert_eq!(resp.status, 200);
        assert!(Instant::now() < deadline, "fail_closed never closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = mesh_closed
        .server
        .metric(r#"meshguard_audit_refused_total{reason="collector_unavailable"}"#)
        .await
        .unwrap();
    assert!(refused.is_some_and(|n| n >= 1));
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_hash_failure_refused_under_fail_closed() {
    let open = mesh(vec![Filter::audit(audit_config(false, false))], None).await;
    let resp = open
        .send_as("frontend", Request::new("POST", "/query").body("not json"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "forwarded unaudited");
    assert!(resp.json().unwrap()["headers"]
        .get("x-meshguard-audit")
        .is_none());
    assert_eq!(
        open.server
            .metric("meshguard_audit_hash_failures_total")
            .await
            .unwrap(),
        Some(1)
    );

    let collector = Collector::start().await.unwrap();
    let closed = mesh(
        vec![Filter::audit(audit_config(true, true))],
        Some(collector.addr()),
    )
    .await;
    let resp = closed
        .send_as("frontend", Request::new("POST", "/query").body("not json"))
        .await
        .unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(
        resp.header("x-meshguard-deny-reason"),
        Some("audit_hash_failed")
    );
    let ok = closed
        .send_as(
            "frontend",
            Request::new("POST", "/query").body(r#"{"sql": "SELECT 1"}"#),
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
}
