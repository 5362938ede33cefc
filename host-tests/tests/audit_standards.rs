//! The audit filter on open standards, in a real mesh, checked with code
//! nobody here wrote:
//!
//! - RFC 9421 signatures toward the upstream (HMAC-SHA256 and Ed25519), over
//!   HTTP/1.1 and HTTP/2: PyPI's and npm's `http-message-signatures` accept
//!   what the upstream received and reject every tampered variant (method,
//!   path, query, body, header, authority) and every replay after `expires`;
//!   the project's own verifier (`meshguard audit verify-request`) agrees on
//!   every case;
//! - an upstream holding only the Ed25519 public key verifies the headers and
//!   the records;
//! - records delivered as OTLP/HTTP JSON parse with the official
//!   `opentelemetry-proto` package, and `meshguard audit verify` passes on
//!   the file a Collector's file exporter would write, and fails on a
//!   tampered one;
//! - a config push over ECDS while OTLP records wait loses none of them.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use meshguard_cli::httpsig_verify::{verify, Profile, ReceivedRequest};
use meshguard_core::audit::keys::{private_key_pem, public_key_pem};
use meshguard_core::audit::{verify_records_in, Keyring, Order, RECORD_PREFIX};
use meshguard_host_tests::collector::Collector;
use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::{Filter, Mesh, PushOutcome, AUDIT_KEY};
use meshguard_host_tests::meshguard_cli;
use meshguard_host_tests::upstream::Recorded;
use meshguard_host_tests::verifiers::{self, request_json, Verdict};
use serde_json::{json, Value};

const HMAC_KID: &str = "hmac-2024";
const ED_KID: &str = "ed-2024";
/// A fixed Ed25519 key for the proxy (the public key is all verifiers get).
const ED_SEED: [u8; 32] = [42; 32];
/// `expires` is this many seconds after `created`: each algorithm's requests
/// are verified within it, then replayed after it.
const EXPIRES: u64 = 5;
const LABEL: &str = "meshguard";
const TAG: &str = "meshguard-audit";
const COMMAND_HEADER: &str = "x-meshguard-command-sha256";
const ID_HEADER: &str = "x-meshguard-audit-id";
const COLLECTOR_CLUSTER: &str = "otel-collector";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Hmac,
    Ed25519,
}

impl Alg {
    fn kid(self) -> &'static str {
        match self {
            Self::Hmac => HMAC_KID,
            Self::Ed25519 => ED_KID,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hmac => "hmac-sha256",
            Self::Ed25519 => "ed25519",
        }
    }
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&ED_SEED)
}

fn public_pem() -> String {
    public_key_pem(&signing_key().verifying_key())
}

/// The audit section: RFC 9421 toward the upstream (with the v1 header too
/// under HMAC, as while upstreams migrate), commands over the body and a JSON
/// field, and an optional collector.
fn config(alg: Alg, collector: Option<&str>) -> String {
    let upstream = match alg {
        Alg::Hmac => "both",
        Alg::Ed25519 => "rfc9421",
    };
    let collector = collector.map_or(String::new(), |c| format!(r#", "collector": {c}"#));
    format!(
        r#"{{
  "config_version": "standards-v1",
  "key_id": "{kid}",
  "algorithm": "{alg}",
  "upstream_signature": "{upstream}",
  "signature_expires_seconds": {EXPIRES},
  "commands": [
    {{"name": "exec", "paths": ["/exec/*"], "methods": ["POST"], "parts": ["method", "path", "query", "body"]}},
    {{"name": "sql", "paths": ["/query"], "methods": ["POST"], "parts": ["method", "path", {{"json_pointer": "/sql"}}]}}
  ]{collector}
}}"#,
        kid = alg.kid(),
        alg = alg.name(),
    )
}

/// The audit plugin with the proxy's key in MESHGUARD_AUDIT_KEY: the HMAC
/// secret, or the Ed25519 private key in PKCS#8 PEM (as from a Secret).
fn filter(alg: Alg, collector: Option<&str>) -> Filter {
    let key = match alg {
        Alg::Hmac => AUDIT_KEY.to_owned(),
        Alg::Ed25519 => private_key_pem(&signing_key()),
    };
    Filter::named("audit", config(alg, collector))
        .env("MESHGUARD_AUDIT_KEY", &key)
        .envoyfilter_variant()
}

/// What a verifier holds: the HMAC secret, or only the public key.
fn keyring() -> Keyring {
    let mut keys = Keyring::new();
    keys.add_secret(
        HMAC_KID,
        base64::engine::general_purpose::STANDARD
            .decode(AUDIT_KEY)
            .unwrap(),
    )
    .unwrap();
    keys.add_public(ED_KID, signing_key().verifying_key())
        .unwrap();
    keys
}

/// What an upstream or auditor holding only the Ed25519 public key has.
fn public_only() -> Keyring {
    let mut keys = Keyring::new();
    keys.add_public(ED_KID, signing_key().verifying_key())
        .unwrap();
    keys
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One request the upstream received, and what each verifier must say.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    kid: &'static str,
    request: Value,
    valid: bool,
}

/// The request with one field of its JSON description replaced.
fn tampered(request: &Value, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut request = request.clone();
    if let Value::Object(map) = &mut request {
        edit(map);
    }
    request
}

fn set_header(map: &mut serde_json::Map<String, Value>, name: &str, value: &str) {
    if let Some(Value::Array(headers)) = map.get_mut("headers") {
        for header in headers.iter_mut() {
            if header[0].as_str() == Some(name) {
                header[1] = Value::String(value.to_owned());
            }
        }
    }
}

/// The received request, and one variant per thing an attacker between the
/// proxy and the upstream could change.
fn cases_for(alg: Alg, what: &str, rec: &Recorded) -> Vec<Case> {
    let request = request_json(rec);
    let case = |name: &str, request: Value, valid: bool| Case {
        name: format!("{}/{what}/{name}", alg.name()),
        kid: alg.kid(),
        request,
        valid,
    };
    let b64 = |text: &[u8]| base64::engine::general_purpose::STANDARD.encode(text);
    let (path, query) = rec.target.split_once('?').unwrap_or((&rec.target, ""));
    vec![
        case("as received", request.clone(), true),
        case(
            "method",
            tampered(&request, |m| {
                m.insert("method".into(), json!("DELETE"));
            }),
            false,
        ),
        case(
            "path",
            tampered(&request, |m| {
                m.insert("target".into(), json!(format!("{path}x?{query}")));
            }),
            false,
        ),
        case(
            "query",
            tampered(&request, |m| {
                m.insert("target".into(), json!(format!("{path}?{query}&admin=1")));
            }),
            false,
        ),
        case(
            "body",
            tampered(&request, |m| {
                let mut body = rec.body.clone();
                body.extend_from_slice(b" ");
                m.insert("body_base64".into(), json!(b64(&body)));
            }),
            false,
        ),
        case(
            "command header",
            tampered(&request, |m| set_header(m, COMMAND_HEADER, &"0".repeat(64))),
            false,
        ),
        case(
            "audit id header",
            tampered(&request, |m| set_header(m, ID_HEADER, "forged-id")),
            false,
        ),
        case(
            "authority",
            tampered(&request, |m| {
                m.insert("authority".into(), json!("admin.default.svc"));
            }),
            false,
        ),
    ]
}

/// The cases file every verifier reads (host-tests/verifiers/rfc9421_verify.py).
fn write_cases(path: &Path, cases: &[Case]) {
    let doc = json!({
        "label": LABEL,
        "tag": TAG,
        "required": ["@method", "@authority", "@path", "@query", COMMAND_HEADER, ID_HEADER],
        "keys": {
            HMAC_KID: {"alg": "hmac-sha256", "secret_base64": AUDIT_KEY},
            ED_KID: {"alg": "ed25519", "public_pem": public_pem()},
        },
        "cases": cases.iter().map(|c| json!({"name": c.name, "kid": c.kid, "request": c.request})).collect::<Vec<_>>(),
    });
    std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

/// The project's own verifier on the same cases.
fn ours(cases: &[Case], now: u64) -> Vec<Verdict> {
    let keys = keyring();
    cases
        .iter()
        .map(|c| {
            let request: ReceivedRequest = serde_json::from_value(c.request.clone()).unwrap();
            let body = request.body().unwrap();
            let verdict = verify(&request, &body, &keys, &Profile::default(), now);
            Verdict {
                name: c.name.clone(),
                valid: verdict.is_ok(),
                error: verdict.err().map(|e| e.to_string()).unwrap_or_default(),
            }
        })
        .collect()
}

/// Every verifier says what each case expects.
fn assert_agree(cases: &[Case], dir: &Path, round: &str, now: u64) {
    let file = dir.join(format!("cases-{round}.json"));
    write_cases(&file, cases);
    let python = verifiers::rfc9421_python(&file).unwrap();
    let node = verifiers::rfc9421_node(&file).unwrap();
    let ours = ours(cases, now);
    for (who, verdicts) in [("python", &python), ("node", &node), ("meshguard", &ours)] {
        assert_eq!(verdicts.len(), cases.len(), "{who}");
        for (case, verdict) in cases.iter().zip(verdicts.iter()) {
            assert_eq!(verdict.name, case.name, "{who}");
            assert_eq!(
                verdict.valid, case.valid,
                "{round}: {who} on {}: {}\n{}",
                case.name, verdict.error, case.request
            );
        }
    }
}

/// Sends the signed requests of one algorithm over both protocols and
/// returns the received requests' cases and the server log.
async fn signed_requests(alg: Alg) -> (Vec<Case>, String) {
    let mesh = Mesh::builder()
        .filter(filter(alg, None))
        .start()
        .await
        .expect("mesh starts");
    let mut cases = Vec::new();
    for protocol in Protocol::ALL {
        let p = protocol.short();
        let requests = [
            ("get", Request::new("GET", "/orders/42?b=2&a=1")),
            (
                "exec body",
                Request::new("POST", "/exec/run?dry=1").body("rm -rf /tmp/cache"),
            ),
            (
                "json field",
                Request::new("POST", "/query")
                    .body(r#"{"sql": "SELECT * FROM accounts WHERE id = 7", "trace": "t"}"#),
            ),
            // A caller's own signature is kept; its member under meshguard's
            // label is removed, never merged with meshguard's.
            (
                "caller members",
                Request::new("GET", "/orders/7")
                    .header(
                        "signature-input",
                        r#"client=("@method");created=1;keyid="c";tag="client", meshguard=("@path");created=1;keyid="forged";tag="meshguard-audit""#,
                    )
                    .header("signature", "client=:AAAA:, meshguard=:BBBB:"),
            ),
        ];
        for (what, request) in requests {
            let request = request.protocol(protocol).upstream_protocol(protocol);
            let resp = mesh.send_as("frontend", request).await.unwrap();
            assert_eq!(resp.status, 200, "{what} {p}: {}", resp.text());
            let rec = mesh.upstream().take_one().await.unwrap();
            let inputs = rec.header_all("signature-input");
            assert_eq!(inputs.len(), 1, "{what} {p}: {rec:?}");
            let input = String::from_utf8_lossy(inputs[0]).into_owned();
            assert_eq!(input.matches("meshguard=(").count(), 1, "{input}");
            assert!(input.contains(r#";tag="meshguard-audit""#), "{input}");
            assert_eq!(
                input.contains("content-digest"),
                what != "get" && what != "caller members",
                "{what}: {input}"
            );
            if what == "caller members" {
                assert!(
                    input.starts_with(
                        r#"client=("@method");created=1;keyid="c";tag="client", meshguard=("#
                    ),
                    "{input}"
                );
                assert!(!input.contains("forged"), "{input}");
                let signature = rec.header("signature").unwrap();
                assert!(
                    signature.starts_with("client=:AAAA:, meshguard=:"),
                    "{signature}"
                );
                assert!(!signature.contains("BBBB"), "{signature}");
            }
            // The v1 header stays available beside RFC 9421 (HMAC only).
            assert_eq!(
                rec.header_all("x-meshguard-audit").len(),
                usize::from(alg == Alg::Hmac),
                "{rec:?}"
            );
            cases.extend(cases_for(alg, &format!("{what} {p}"), &rec));
        }
    }
    let log = mesh.flushed_server_log().await.unwrap();
    (cases, log)
}

/// The record lines of a server log.
fn records_of(log: &str) -> String {
    log.lines()
        .filter_map(|l| l.find(RECORD_PREFIX).map(|i| &l[i..]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn stock_rfc9421_verifiers_in_two_languages_accept_what_the_upstream_received_and_reject_every_tampered_variant(
) {
    // Broken by hand: with `@query` written without its `?`
    // (httpsig::query_component), the stock verifiers refuse the fresh
    // requests; with the expiry check skipped in cli/src/httpsig_verify.rs,
    // the project's verifier accepts the replays. Both fail this test.
    let dir = tempfile::tempdir().unwrap();
    let (mut cases, hmac_log) = signed_requests(Alg::Hmac).await;
    assert_agree(&cases, dir.path(), "fresh-hmac", now_seconds());
    let (ed_cases, ed_log) = signed_requests(Alg::Ed25519).await;
    assert_agree(&ed_cases, dir.path(), "fresh-ed25519", now_seconds());
    let latest_created = now_seconds();
    cases.extend(ed_cases);

    // `meshguard audit verify-request` says the same, with the public key only.
    let cli = meshguard_cli();
    let pub_file = dir.path().join("ed.pub.pem");
    std::fs::write(&pub_file, public_pem()).unwrap();
    for case in cases.iter().filter(|c| c.kid == ED_KID).take(2) {
        let file = dir.path().join("request.json");
        std::fs::write(&file, case.request.to_string()).unwrap();
        let out = std::process::Command::new(&cli)
            .args(["audit", "verify-request"])
            .arg(&file)
            .arg("--public-key")
            .arg(format!("{ED_KID}={}", pub_file.display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(if case.valid { 0 } else { 2 }),
            "{}: {text}",
            case.name
        );
    }

    // The records of both logs verify; the Ed25519 ones with the public key only.
    let public_only = public_only();
    let report = verify_records_in(&records_of(&ed_log), &public_only, Order::File);
    assert!(report.is_ok(), "{report}");
    // Eight requests, and the one that flushed the log.
    assert!(report.record_count() > 8, "{report}");
    let report = verify_records_in(&records_of(&hmac_log), &keyring(), Order::File);
    assert!(report.is_ok(), "{report}");
    let report = verify_records_in(&records_of(&hmac_log), &public_only, Order::File);
    assert!(
        !report.is_ok(),
        "an HMAC record does not verify without its secret"
    );

    // A replay after `expires` is refused by every verifier. The Python
    // library allows 5 s of clock skew past `expires`.
    let after = latest_created + EXPIRES + 6;
    while now_seconds() <= after {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let replays: Vec<Case> = cases
        .iter()
        .filter(|c| c.valid)
        .map(|c| Case {
            name: format!("{} replayed", c.name),
            valid: false,
            ..c.clone()
        })
        .collect();
    assert!(replays.len() >= 16);
    assert_agree(&replays, dir.path(), "replayed", now_seconds());
}

/// The records in the OTLP batches a collector received.
fn otlp_record_count(lines: &[String]) -> usize {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            v["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .sum()
}

/// `meshguard audit verify FILE --by-seq` with the Ed25519 public key only.
fn cli_verify(file: &Path, public_key: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(meshguard_cli())
        .args(["audit", "verify", "--by-seq"])
        .arg(file)
        .arg("--public-key")
        .arg(format!("{ED_KID}={}", public_key.display()))
        .env_remove("MESHGUARD_AUDIT_KEY")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn records_reach_an_otlp_receiver_parse_with_the_official_proto_and_verify_from_the_exported_file(
) {
    // Broken by hand: with `observedTimeUnixNano` misspelled in
    // otlp::log_record, json_format refuses the first batch; with the
    // attribute check skipped in audit/verify.rs, the file with an edited
    // attribute verifies. Both fail this test.
    let collector = Collector::start().await.unwrap();
    let collector_config = format!(
        r#"{{"cluster": "{COLLECTOR_CLUSTER}", "format": "otlp_json", "batch_size": 4, "timeout_ms": 1000}}"#
    );
    let mut config_filter = filter(Alg::Ed25519, Some(&collector_config));
    // Every record reaches the collector or the request is refused.
    config_filter.config =
        config_filter
            .config
            .replacen("\"commands\"", "\"fail_closed\": true,\n  \"commands\"", 1);
    let mesh = Mesh::builder()
        .server_cluster(COLLECTOR_CLUSTER, collector.addr())
        .filter(config_filter)
        .start()
        .await
        .expect("mesh starts");
    let sent = 10;
    for i in 0..sent {
        let protocol = Protocol::ALL[i % 2];
        let request = if i % 3 == 0 {
            Request::new("POST", "/exec/job").body(format!("job {i}"))
        } else {
            Request::new("GET", &format!("/orders/{i}?q=x&n={i}"))
        };
        let resp = mesh
            .send_as(
                "frontend",
                request.protocol(protocol).upstream_protocol(protocol),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while otlp_record_count(&collector.lines()) < sent {
        assert!(Instant::now() < deadline, "{:?}", collector.lines());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What an OpenTelemetry Collector's otlp receiver expects: POST /v1/logs,
    // application/json.
    for (path, content_type) in collector.requests() {
        assert_eq!(
            (path.as_str(), content_type.as_str()),
            ("/v1/logs", "application/json")
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let batches = dir.path().join("batches.jsonl");
    std::fs::write(&batches, collector.lines().join("\n") + "\n").unwrap();
    let exported = dir.path().join("exported.jsonl");
    let summary = verifiers::otlp_parse(&batches, &exported).unwrap();
    assert_eq!(summary["records"], json!(sent), "{summary}");
    assert_eq!(summary["json_bodies"], json!(sent), "{summary}");
    assert!(summary["batches"].as_u64().unwrap() >= 3, "{summary}");
    for name in summary["event_names"].as_array().unwrap() {
        assert_eq!(name, "meshguard.audit.request");
    }
    for severity in summary["severities"].as_array().unwrap() {
        assert_eq!(severity, &json!([9, "INFO"]));
    }
    for scope in summary["scopes"].as_array().unwrap() {
        assert_eq!(scope, "meshguard.audit");
    }
    for times in summary["times"].as_array().unwrap() {
        let (at, observed) = (times[0].as_u64().unwrap(), times[1].as_u64().unwrap());
        assert!(at > 1_600_000_000_000_000_000 && observed >= at, "{times}");
    }
    let keys: Vec<String> = summary["attribute_keys"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|k| k.as_array().unwrap().iter())
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    for key in [
        "meshguard.audit.id",
        "meshguard.audit.chain",
        "meshguard.audit.seq",
        "meshguard.audit.command_sha256",
        "meshguard.peer",
        "meshguard.config.fingerprint",
        "security_rule.name",
        "security_rule.ruleset.name",
        "http.request.method",
        "http.response.status_code",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key}: {keys:?}");
    }

    // The exported file verifies with the public key only...
    let public_key = dir.path().join("ed.pub.pem");
    std::fs::write(&public_key, public_pem()).unwrap();
    let (code, text) = cli_verify(&exported, &public_key);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("{sent} records ok (seq 0..={})", sent - 1)),
        "{text}"
    );
    // ...and fails when a sealed body, an attribute or a whole record is edited.
    let original = std::fs::read_to_string(&exported).unwrap();
    let edit_body = original.replacen("/orders/1\\\"", "/orders/9\\\"", 1);
    let mut first: Value = serde_json::from_str(original.lines().next().unwrap()).unwrap();
    let attributes = first["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["attributes"]
        .as_array_mut()
        .unwrap();
    for attribute in attributes.iter_mut() {
        if attribute["key"] == "meshguard.audit.command" {
            attribute["value"]["stringValue"] = json!("harmless");
        }
    }
    let edit_attribute = std::iter::once(first.to_string())
        .chain(original.lines().skip(1).map(str::to_owned))
        .collect::<Vec<_>>()
        .join("\n");
    // The record of seq 1, wherever its batch landed: a gap in the chain.
    let delete_record =
        original
            .lines()
            .map(|line| {
                let mut batch: Value = serde_json::from_str(line).unwrap();
                batch["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|r| {
                        !r["attributes"].as_array().unwrap().iter().any(|a| {
                            a["key"] == "meshguard.audit.seq" && a["value"]["intValue"] == "1"
                        })
                    });
                batch.to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
    for (what, text, kind) in [
        ("edited body", edit_body, "bad_mac"),
        ("edited attribute", edit_attribute, "attribute_mismatch"),
        ("deleted record", delete_record, "missing_records"),
    ] {
        assert_ne!(text, original, "{what}: the edit applies");
        let file = dir.path().join("tampered.jsonl");
        std::fs::write(&file, text).unwrap();
        let (code, out) = cli_verify(&file, &public_key);
        assert_eq!(code, Some(2), "{what}: {out}");
        assert!(out.contains(kind), "{what}: {out}");
    }

    // The proxy's own log holds the same chain, verified with the public key.
    let log = mesh.flushed_server_log().await.unwrap();
    let public_only = public_only();
    let report = verify_records_in(&records_of(&log), &public_only, Order::File);
    assert!(report.is_ok(), "{report}");
    // (and the record of the request that flushed the log)
    assert!(report.record_count() > sent, "{report}");
}

/// A push replaces the config while its OTLP records wait for a slow
/// collector: the retired config keeps delivering them (docs/audit.md, "When
/// a config push replaces the plugin"), and the file written from what the
/// collector received verifies whole.
#[tokio::test]
async fn a_config_push_over_ecds_loses_no_otlp_record() {
    // Broken by hand: `PluginRoot::done` returning true at once
    // (filters/host/src/root.rs): the records still waiting when the push
    // retired the config never reached the collector ("0 of 8 records
    // delivered").
    let collector = Collector::start_with_delay(Duration::from_millis(1500))
        .await
        .unwrap();
    let collector_config = format!(
        r#"{{"cluster": "{COLLECTOR_CLUSTER}", "format": "otlp_json", "batch_size": 2, "max_in_flight": 1, "timeout_ms": 10000}}"#
    );
    let before = filter(Alg::Ed25519, Some(&collector_config));
    let mesh = Mesh::builder()
        .ecds()
        .server_cluster(COLLECTOR_CLUSTER, collector.addr())
        .filter(before.clone())
        .start()
        .await
        .expect("mesh starts");
    let sent = 8;
    for i in 0..sent {
        let protocol = Protocol::ALL[i % 2];
        let request = Request::new("GET", &format!("/orders/{i}"))
            .protocol(protocol)
            .upstream_protocol(protocol);
        let resp = mesh.send_as("frontend", request).await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    // One batch of two is at the collector for 1.5 s; six records wait.
    assert!(otlp_record_count(&collector.lines()) < sent);
    let mut after = before;
    after.config = after.config.replace("standards-v1", "standards-v2");
    let outcome = mesh.push_filters(&[after]).await.unwrap();
    assert_eq!(outcome, PushOutcome::Accepted);

    let deadline = Instant::now() + Duration::from_secs(25);
    while otlp_record_count(&collector.lines()) < sent {
        assert!(
            Instant::now() < deadline,
            "{} of {sent} records delivered",
            otlp_record_count(&collector.lines())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let batches = dir.path().join("batches.jsonl");
    std::fs::write(&batches, collector.lines().join("\n") + "\n").unwrap();
    let exported = dir.path().join("exported.jsonl");
    let summary = verifiers::otlp_parse(&batches, &exported).unwrap();
    assert_eq!(summary["records"], json!(sent), "{summary}");
    let public_key = dir.path().join("ed.pub.pem");
    std::fs::write(&public_key, public_pem()).unwrap();
    let (code, text) = cli_verify(&exported, &public_key);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("{sent} records ok (seq 0..={})", sent - 1)),
        "{text}"
    );
}
