//! `meshguard audit verify`, `meshguard audit verify-header` and
//! `meshguard validate --filter audit`, run as built, on records, headers and
//! configurations made by the audit filter's own engine.

// Test code: clippy.toml allows these inside `#[test]` functions only, and this
// file's helpers are test code too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshguard_core::audit::{AuditPolicy, AuditStamp, Chain, Record, RecordFields};
use meshguard_core::integrity::{self, IntegrityEnv};
use meshguard_core::request::RequestInfo;
use serde_json::{json, Value};

use common::{assert_output, keygen, meshguard, TempDir};

const KEY: [u8; 32] = *b"meshguard-cli-test-key-012345678";
/// A valid key, not KEY.
const OTHER_KEY: [u8; 32] = [7; 32];
const KID: &str = "2026-01";
const RECORDS: usize = 1000;

/// An audit policy with a command selected by path and method, hashing JSON
/// fields of the body.
const POLICY: &str = r#"{
  "config_version": "v1",
  "key_id": "2026-01",
  "commands": [
    {"name": "refund", "paths": ["/v1/orders/*"], "methods": ["POST"],
     "parts": ["method", "path", "query", {"json_pointer": "/action"}, {"json_pointer": "/amount"}]},
    {"name": "upload", "paths": ["/files/*"], "methods": ["PUT"], "parts": ["method", "path", "body"]}
  ]
}"#;
const BODY: &str = r#"{"amount": 12.5, "action": "refund", "note": "customer called"}"#;

fn b64(key: &[u8]) -> String {
    STANDARD.encode(key)
}

/// `n` records of chain `chain`, sealed with `key` under `kid`, as the filter
/// seals them.
fn records(chain: &str, n: usize, key: &[u8], kid: &str) -> Vec<Record> {
    let mut c = Chain::new(chain);
    (0..n)
        .map(|i| {
            let path = format!("/v1/orders/{i}?dry_run=true");
            let request = RequestInfo {
                path: &path,
                method: "post",
                host: "shop.example.com",
            };
            let mut fields = RecordFields::new(
                format!("{chain}-{i}"),
                1_767_225_600_000 + i as u64,
                &request,
                "refund",
                [u8::try_from(i % 256).unwrap(); 32],
            );
            fields.peer = Some("spiffe://cluster.local/ns/shop/sa/frontend".into());
            fields.status = Some(200);
            fields.duration_ms = Some(3);
            fields
                .decisions
                .insert("identity".into(), Value::from("allowed"));
            c.seal(fields, key, kid).unwrap()
        })
        .collect()
}

/// An Envoy log holding records, with other lines between them, and the
/// 1-based line of each record.
#[derive(Clone)]
struct Log {
    lines: Vec<String>,
    /// `(chain, seq)` of each record line, by line index.
    record_at: Vec<Option<(String, u64)>>,
}

impl Log {
    fn envoy(chains: &[Vec<Record>]) -> Self {
        let mut log = Self {
            lines: Vec::new(),
            record_at: Vec::new(),
        };
        log.other("[2026-01-01 00:00:00.000][1][info][main] [source/server/server.cc:430] initializing epoch 0");
        log.other(r#"{"authority":"shop.example.com","method":"POST","path":"/v1/orders/1","response_code":200}"#);
        let longest = chains.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..longest {
            for (worker, chain) in chains.iter().enumerate() {
                let Some(record) = chain.get(i) else { continue };
                log.lines.push(format!(
                    "[2026-01-01 00:00:{:02}.{:03}][{}][info][wasm] [source/extensions/common/wasm/context.cc:1192] \
                     wasm log meshguard-audit meshguard-audit: {}",
                    i / 1000 % 60,
                    i % 1000,
                    20 + worker,
                    record.to_line()
                ));
                log.record_at.push(Some((record.chain.clone(), record.seq)));
            }
            if i % 97 == 0 {
                log.other("[2026-01-01 00:00:01.000][21][debug][http] [source/common/http/conn_manager_impl.cc:393] new stream");
            }
        }
        log
    }

    /// The records alone, one bare JSON object a line (a collector's NDJSON).
    fn ndjson(chain: &[Record]) -> Self {
        Self {
            lines: chain
                .iter()
                .map(|r| String::from_utf8(r.canonical_bytes(true).unwrap()).unwrap())
                .collect(),
            record_at: chain
                .iter()
                .map(|r| Some((r.chain.clone(), r.seq)))
                .collect(),
        }
    }

    fn other(&mut self, line: &str) {
        self.lines.push(line.into());
        self.record_at.push(None);
    }

    fn index_of(&self, chain: &str, seq: u64) -> usize {
        self.record_at
            .iter()
            .position(|r| r.as_ref().is_some_and(|(c, s)| c == chain && *s == seq))
            .unwrap()
    }

    /// The 1-based line number of record `seq` of `chain`.
    fn line_of(&self, chain: &str, seq: u64) -> usize {
        self.index_of(chain, seq) + 1
    }

    fn edit(&mut self, chain: &str, seq: u64, from: &str, to: &str) {
        let i = self.index_of(chain, seq);
        assert!(self.lines[i].contains(from), "{}", self.lines[i]);
        self.lines[i] = self.lines[i].replacen(from, to, 1);
    }

    fn delete(&mut self, chain: &str, seq: u64) {
        let i = self.index_of(chain, seq);
        self.lines.remove(i);
        self.record_at.remove(i);
    }

    fn text(&self) -> String {
        let mut text = self.lines.join("\n");
        text.push('\n');
        text
    }
}

struct VerifyCase {
    name: &'static str,
    /// The input, from the original log of 1000 records of chain `a`.
    input: fn(&Log) -> Log,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    code: i32,
    /// Each must appear in stdout; computed from the original log.
    stdout: fn(&Log) -> Vec<String>,
}

fn check_verify(cases: &[VerifyCase]) {
    let original = Log::envoy(&[records("a", RECORDS, &KEY, KID)]);
    let key_arg = format!("{KID}={}", b64(&KEY));
    let other_key_arg = format!("{KID}={}", b64(&OTHER_KEY));
    let key_b64 = b64(&KEY);
    for case in cases {
        let dir = TempDir::new();
        let input = (case.input)(&original);
        let path = dir.write("envoy.log", &input.text());
        let mut args: Vec<&str> = vec!["audit", "verify", &path];
        let mut env: Vec<(&str, &str)> = case.env.to_vec();
        for arg in case.args {
            match *arg {
                "KEY" => args.extend(["--key", &key_arg]),
                "OTHER_KEY" => args.extend(["--key", &other_key_arg]),
                "KEY_ENV" => env.push(("MESHGUARD_AUDIT_KEY", &key_b64)),
                other => args.push(other),
            }
        }
        let out = meshguard(&args, &env, None);
        let context = format!("case {:?}\n{}", case.name, out.context());
        assert_eq!(out.code, Some(case.code), "{context}");
        for want in (case.stdout)(&original) {
            assert!(
                out.stdout.contains(&want),
                "stdout lacks {want:?}\n{context}"
            );
        }
    }
}

#[test]
fn verify_accepts_an_intact_envoy_log_and_names_the_first_break() {
    check_verify(&[
        VerifyCase {
            name: "1000 intact records among other log lines",
            input: Log::clone,
            args: &["KEY"],
            env: &[],
            code: 0,
            stdout: |_| {
                vec![
                    "chain a: 1000 records ok (seq 0..=999)\n".into(),
                    "verified: 1 chains, 1000 records, 0 broken\n".into(),
                ]
            },
        },
        VerifyCase {
            name: "the key from MESHGUARD_AUDIT_KEY, for another key id",
            input: Log::clone,
            args: &["KEY_ENV", "--key-env-kid", KID],
            env: &[],
            code: 0,
            stdout: |_| vec!["chain a: 1000 records ok".into()],
        },
        VerifyCase {
            name: "one record's status edited",
            input: |log| {
                let mut log = log.clone();
                log.edit("a", 500, r#""status":200"#, r#""status":500"#);
                log
            },
            args: &["KEY"],
            env: &[],
            code: 2,
            stdout: |log| {
                vec![
                    format!(
                        "chain a: BROKEN at line {} (seq 500): bad_mac: record seq 500: the MAC does not match",
                        log.line_of("a", 500)
                    ),
                    "verified: 1 chains, 1000 records, 1 broken\n".into(),
                ]
            },
        },
        VerifyCase {
            name: "one record line deleted",
            input: |log| {
                let mut log = log.clone();
                log.delete("a", 700);
                log
            },
            args: &["KEY"],
            env: &[],
            code: 2,
            stdout: |log| {
                vec![
                    format!(
                        "chain a: BROKEN at line {} (seq 701): missing_records: seq 701 follows 699: 1 record missing",
                        log.line_of("a", 701) - 1
                    ),
                    "verified: 1 chains, 999 records, 1 broken\n".into(),
                ]
            },
        },
        VerifyCase {
            name: "two records swapped",
            input: |log| {
                let mut log = log.clone();
                let (i, j) = (log.index_of("a", 10), log.index_of("a", 11));
                log.lines.swap(i, j);
                log
            },
            args: &["KEY"],
            env: &[],
            code: 2,
            stdout: |log| {
                vec![format!(
                    "chain a: BROKEN at line {} (seq 11): out_of_order:",
                    log.line_of("a", 10)
                )]
            },
        },
        VerifyCase {
            name: "the wrong key",
            input: Log::clone,
            args: &["OTHER_KEY"],
            env: &[],
            code: 2,
            stdout: |log| {
                vec![format!(
                    "chain a: BROKEN at line {} (seq 0): bad_mac:",
                    log.line_of("a", 0)
                )]
            },
        },
        VerifyCase {
            name: "no key for the records' key id",
            input: Log::clone,
            args: &["KEY_ENV"],
            env: &[],
            code: 2,
            stdout: |log| {
                vec![format!(
                    "chain a: BROKEN at line {} (seq 0): unknown_kid: record seq 0 is signed with key id \"2026-01\"",
                    log.line_of("a", 0)
                )]
            },
        },
        VerifyCase {
            name: "a record line that is not JSON",
            input: |log| {
                let mut log = log.clone();
                log.other(
                    "[2026-01-01][info][wasm] wasm log x: meshguard-audit-record: {\"chain\":",
                );
                log
            },
            args: &["KEY"],
            env: &[],
            code: 0,
            stdout: |log| {
                vec![
                    "chain a: 1000 records ok".into(),
                    format!("line {}: foreign: not a JSON record:", log.lines.len() + 1),
                    "verified: 1 chains, 1000 records, 0 broken, 1 foreign lines ignored\n".into(),
                ]
            },
        },
        VerifyCase {
            name: "hostile lines echoing the record marker, escaped and not",
            input: |log| {
                let mut log = log.clone();
                // What meshguard writes now: the marker's `:` escaped, one line.
                log.other(
                    r#"[warn][wasm] meshguard identity: denied: reason=no_rule_matched path="/x" request_id="meshguard-audit-record\u{3a} {\"chain\":\"a\",\"seq\":1}""#,
                );
                // What an unescaped log line of another component could hold.
                log.other(
                    r#"[info][http] request_id="x" ua="meshguard-audit-record: {\"chain\":\"a\"}" bytes=12"#,
                );
                log.other("meshguard-audit-record: not even json");
                log
            },
            args: &["KEY", "--json"],
            env: &[],
            code: 0,
            stdout: |log| {
                vec![
                    format!(
                        r#""foreign":[{{"line":{},"message":"not a JSON record:"#,
                        log.lines.len() + 2
                    ),
                    r#""summary":{"broken":0,"chains":1,"foreign":2,"records":1000,"unreadable":0}"#.into(),
                ]
            },
        },
        VerifyCase {
            name: "a collector's NDJSON delivered out of order, checked by seq",
            input: |_| {
                let mut log = Log::ndjson(&records("a", 10, &KEY, KID));
                log.lines.swap(2, 7);
                log
            },
            args: &["KEY", "--by-seq"],
            env: &[],
            code: 0,
            stdout: |_| vec!["chain a: 10 records ok (seq 0..=9)\n".into()],
        },
        VerifyCase {
            name: "a collector's NDJSON out of order, in file order",
            input: |_| {
                let mut log = Log::ndjson(&records("a", 10, &KEY, KID));
                log.lines.swap(2, 7);
                log
            },
            args: &["KEY"],
            env: &[],
            code: 2,
            stdout: |_| vec!["out_of_order".into()],
        },
        VerifyCase {
            name: "a collector's NDJSON with a gap, checked by seq",
            input: |_| {
                let mut log = Log::ndjson(&records("a", 10, &KEY, KID));
                log.lines.remove(4);
                log.lines.swap(2, 7);
                log
            },
            args: &["KEY", "--by-seq"],
            env: &[],
            code: 2,
            stdout: |_| vec!["missing_records".into()],
        },
        VerifyCase {
            name: "a log rotated away from the chain's beginning",
            input: |log| {
                let mut log = log.clone();
                for seq in 0..990 {
                    log.delete("a", seq);
                }
                log
            },
            args: &["KEY"],
            env: &[],
            code: 0,
            stdout: |_| {
                vec!["chain a: 10 records ok (seq 990..=999; the chain's beginning, seq 0 to 989, is not in the input)\n".into()]
            },
        },
        VerifyCase {
            name: "a collector's NDJSON: bare records",
            input: |_| Log::ndjson(&records("a", RECORDS, &KEY, KID)),
            args: &["KEY"],
            env: &[],
            code: 0,
            stdout: |_| {
                vec![
                    "chain a: 1000 records ok (seq 0..=999)\n".into(),
                    "verified: 1 chains, 1000 records, 0 broken\n".into(),
                ]
            },
        },
        VerifyCase {
            name: "a collector's NDJSON with a record edited",
            input: |_| {
                let mut log = Log::ndjson(&records("a", RECORDS, &KEY, KID));
                log.edit("a", 42, r#""status":200"#, r#""status":404"#);
                log
            },
            args: &["KEY"],
            env: &[],
            code: 2,
            stdout: |_| vec!["chain a: BROKEN at line 43 (seq 42): bad_mac:".into()],
        },
        VerifyCase {
            name: "a collector's NDJSON with a torn line",
            input: |_| {
                let mut log = Log::ndjson(&records("a", 3, &KEY, KID));
                log.other(r#"{"chain":"a","seq":3,"#);
                log
            },
            args: &["KEY"],
            env: &[],
            code: 0,
            stdout: |_| vec!["line 4: foreign: not a JSON record:".into()],
        },
        VerifyCase {
            name: "no record at all",
            input: |_| Log {
                lines: vec!["[info] nothing to see".into()],
                record_at: vec![None],
            },
            args: &["KEY"],
            env: &[],
            code: 2,
            stdout: |_| vec!["verified: 0 chains, 0 records, 0 broken\n".into()],
        },
        VerifyCase {
            name: "no record at all, allowed",
            input: |_| Log {
                lines: vec!["[info] nothing to see".into()],
                record_at: vec![None],
            },
            args: &["KEY", "--allow-empty"],
            env: &[],
            code: 0,
            stdout: |_| vec!["verified: 0 chains, 0 records, 0 broken\n".into()],
        },
    ]);
}

#[test]
fn verify_checks_interleaved_chains_and_rotated_keys_each_on_its_own() {
    let old_key = [1u8; 32];
    let a = records("vm-a", 50, &KEY, KID);
    let b = records("vm-b", 70, &old_key, "2025-12");
    let mut log = Log::envoy(&[a, b]);
    let dir = TempDir::new();
    let keys = [
        format!("{KID}={}", b64(&KEY)),
        format!("2025-12={}", b64(&old_key)),
    ];
    let path = dir.write("envoy.log", &log.text());
    let out = meshguard(
        &[
            "audit", "verify", &path, "--key", &keys[0], "--key", &keys[1],
        ],
        &[],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.context());
    assert_eq!(
        out.stdout,
        "chain vm-a: 50 records ok (seq 0..=49)\n\
         chain vm-b: 70 records ok (seq 0..=69)\n\
         verified: 2 chains, 120 records, 0 broken\n"
    );

    // Without the old key, only vm-b breaks.
    let out = meshguard(&["audit", "verify", &path, "--key", &keys[0]], &[], None);
    assert_eq!(out.code, Some(2), "{}", out.context());
    assert!(
        out.stdout.contains("chain vm-a: 50 records ok"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("chain vm-b: BROKEN at line") && out.stdout.contains("unknown_kid"),
        "{}",
        out.stdout
    );

    // A record moved to the other chain.
    let line = log.index_of("vm-a", 3);
    log.lines[line] = log.lines[line].replace(r#""chain":"vm-a""#, r#""chain":"vm-b""#);
    let out = meshguard(
        &["audit", "verify", "-", "--key", &keys[0], "--key", &keys[1]],
        &[],
        Some(&log.text()),
    );
    assert_eq!(out.code, Some(2), "{}", out.context());
    assert!(
        out.stdout.contains(&format!(
            "chain vm-a: BROKEN at line {} (seq 4): missing_records:",
            log.line_of("vm-a", 4)
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("verified: 2 chains, 120 records, 2 broken\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn verify_json_reports_every_chain_and_break() {
    let mut log = Log::envoy(&[records("a", 20, &KEY, KID)]);
    log.edit("a", 5, r#""status":200"#, r#""status":201"#);
    let key = format!("{KID}={}", b64(&KEY));
    let out = meshguard(
        &["audit", "verify", "-", "--key", &key, "--json"],
        &[],
        Some(&log.text()),
    );
    assert_eq!(out.code, Some(2), "{}", out.context());
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        report,
        json!({
            "ok": false,
            "chains": [{
                "chain": "a",
                "ok": false,
                "records": 20,
                "verified": 5,
                "first_seq": 0,
                "last_seq": 4,
                "break": {
                    "line": log.line_of("a", 5),
                    "seq": 5,
                    "kind": "bad_mac",
                    "message": "record seq 5: the MAC does not match: the record was modified (or signed with another key named \"2026-01\")",
                },
            }],
            "foreign": [],
            "unreadable": [],
            "summary": {"chains": 1, "records": 20, "broken": 1, "foreign": 0, "unreadable": 0},
        })
    );
}

/// Name, command line, environment, what stderr must say.
type ErrorCase<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn key_and_input_problems_are_errors_not_verdicts() {
    let dir = TempDir::new();
    let log = dir.write(
        "envoy.log",
        &Log::envoy(&[records("a", 3, &KEY, KID)]).text(),
    );
    let missing = dir.0.join("missing.log");
    let missing = missing.to_str().unwrap();
    let good = format!("{KID}={}", b64(&KEY));
    let other = format!("{KID}={}", b64(&OTHER_KEY));
    let cases: &[ErrorCase<'_>] = &[
        (
            "no key anywhere",
            vec!["audit", "verify", &log],
            vec![],
            "no key: set MESHGUARD_AUDIT_KEY",
        ),
        (
            "a key without its key id",
            vec!["audit", "verify", &log, "--key", "bWVzaGd1YXJk"],
            vec![],
            "--key expects KID=BASE64",
        ),
        (
            "a key too short",
            vec!["audit", "verify", &log, "--key", "k=c2hvcnQ="],
            vec![],
            "--key k: the key decodes to 5 bytes; at least 32 are needed",
        ),
        (
            "a key that is not base64",
            vec!["audit", "verify", &log, "--key", "k=not base64!"],
            vec![],
            "--key k: the key is not base64",
        ),
        (
            "a bad key id",
            vec!["audit", "verify", &log, "--key", "a b=c2hvcnQ="],
            vec![],
            "meshguard: error: --key a b:",
        ),
        (
            "one key id, two keys",
            vec!["audit", "verify", &log, "--key", &good, "--key", &other],
            vec![],
            "key id \"2026-01\" is given twice, with different keys",
        ),
        (
            "a named key variable that is unset",
            vec!["audit", "verify", &log, "--key-env", "NO_SUCH_AUDIT_KEY"],
            vec![],
            "--key-env NO_SUCH_AUDIT_KEY: the environment variable is not set",
        ),
        (
            "a key variable that is not a key",
            vec!["audit", "verify", &log, "--key", &good],
            vec![("MESHGUARD_AUDIT_KEY", "oops")],
            "environment variable MESHGUARD_AUDIT_KEY: the key decodes to 3 bytes; at least 32 are needed",
        ),
        (
            "an unreadable file",
            vec!["audit", "verify", missing, "--key", &good],
            vec![],
            "cannot read",
        ),
        (
            "a missing file argument",
            vec!["audit", "verify", "--key", &good],
            vec![],
            "required arguments were not provided",
        ),
        (
            "--config without the request",
            vec!["audit", "verify-header", "v=1", "--key", &good, "--config", &log],
            vec![],
            "--method <M>",
        ),
        (
            "the request without --config",
            vec!["audit", "verify-header", "v=1", "--key", &good, "--method", "GET"],
            vec![],
            "--config <CONFIG>",
        ),
    ];
    for (name, args, env, stderr) in cases {
        let out = meshguard(args, env, None);
        assert_eq!(out.code, Some(1), "case {name:?}\n{}", out.context());
        assert_eq!(out.stdout, "", "case {name:?}\n{}", out.context());
        assert!(
            out.stderr.contains(stderr),
            "case {name:?}\n{}",
            out.context()
        );
        assert!(
            !out.stderr.contains(&b64(&KEY)),
            "case {name:?} prints the key"
        );
    }
}

/// The fingerprint the filter puts in `cfg` for POLICY.
fn policy_fingerprint() -> String {
    integrity::load(POLICY.as_bytes(), &IntegrityEnv::default())
        .unwrap()
        .fingerprint
}

/// The header the filter sends for a request, signed with `key`.
fn header(method: &str, path: &str, body: &str, key: &[u8]) -> String {
    let policy = AuditPolicy::from_json(POLICY.as_bytes()).unwrap();
    let hash = policy
        .hash_request(method, path, "shop.example.com", body.as_bytes())
        .unwrap();
    AuditStamp {
        key_id: KID.into(),
        id: "0123456789abcdef-15".into(),
        ts_ms: 1_767_225_600_123,
        peer: Some("spiffe://cluster.local/ns/shop/sa/frontend".into()),
        config_fingerprint: Some(policy_fingerprint()),
        command_sha256: hash,
    }
    .sign(key)
    .unwrap()
}

struct HeaderCase {
    name: &'static str,
    /// `HEADER`, `CONFIG` and `BODY` stand for the header, the policy file and
    /// a file holding BODY; `KEY` for `--key 2026-01=<the key>`, `OTHER_KEY`
    /// for another key under that key id, `OTHER_KID` for the key under
    /// another key id.
    args: &'static [&'static str],
    /// Given to the header value.
    tamper: fn(String) -> String,
    stdin: Option<&'static str>,
    code: i32,
    stdout: &'static [&'static str],
}

fn check_headers(cases: &[HeaderCase]) {
    let dir = TempDir::new();
    let config = dir.write("audit.json", POLICY);
    let body = dir.write("body.json", BODY);
    let key = format!("{KID}={}", b64(&KEY));
    let other_key = format!("{KID}={}", b64(&OTHER_KEY));
    let other_kid = format!("2025-12={}", b64(&KEY));
    let fingerprint = policy_fingerprint();
    for case in cases {
        let value = (case.tamper)(header("POST", "/v1/orders/42?dry_run=true", BODY, &KEY));
        let mut args = vec!["audit", "verify-header"];
        for arg in case.args {
            match *arg {
                "HEADER" => args.push(&value),
                "CONFIG" => args.push(&config),
                "BODY" => args.push(&body),
                "KEY" => args.extend(["--key", &key]),
                "OTHER_KEY" => args.extend(["--key", &other_key]),
                "OTHER_KID" => args.extend(["--key", &other_kid]),
                other => args.push(other),
            }
        }
        let stdin = case.stdin.map(|s| s.replace("HEADER", &value));
        let out = meshguard(&args, &[], stdin.as_deref());
        let context = format!("case {:?}\n{}", case.name, out.context());
        assert_eq!(out.code, Some(case.code), "{context}");
        for want in case.stdout {
            let want = want.replace("FINGERPRINT", &fingerprint);
            assert!(
                out.stdout.contains(&want),
                "stdout lacks {want:?}\n{context}"
            );
        }
    }
}

const REQUEST: &[&str] = &[
    "--config",
    "CONFIG",
    "--method",
    "POST",
    "--path",
    "/v1/orders/42?dry_run=true",
    "--host",
    "shop.example.com",
    "--body-file",
    "BODY",
];

#[test]
fn verify_header_checks_the_signature_and_the_command_hash() {
    let same = |v: String| v;
    let request = |extra: &'static [&'static str]| -> &'static [&'static str] {
        let mut args = vec!["HEADER", "KEY"];
        args.extend_from_slice(REQUEST);
        args.extend_from_slice(extra);
        Vec::leak(args)
    };
    check_headers(&[
        HeaderCase {
            name: "a valid header",
            args: &["HEADER", "KEY"],
            tamper: same,
            stdin: None,
            code: 0,
            stdout: &[
                "valid audit header\n",
                "kid: 2026-01\n",
                "id: 0123456789abcdef-15\n",
                "ts: 1767225600123 (2026-01-01T00:00:00.123Z)\n",
                "peer: spiffe://cluster.local/ns/shop/sa/frontend\n",
                "cfg: FINGERPRINT\n",
                "cmd: ",
            ],
        },
        HeaderCase {
            name: "a valid header read from stdin, with its name",
            args: &["-", "KEY"],
            tamper: same,
            stdin: Some("x-meshguard-audit: HEADER\n"),
            code: 0,
            stdout: &["valid audit header\n"],
        },
        HeaderCase {
            name: "a tampered header",
            args: &["HEADER", "KEY"],
            tamper: |v| v.replace("ts=1767225600123", "ts=1767225600999"),
            stdin: None,
            code: 2,
            stdout: &["INVALID audit header: bad signature: the header was altered, or signed with another key\n"],
        },
        HeaderCase {
            name: "a header with a field missing",
            args: &["HEADER", "KEY"],
            tamper: |v| v.replace(";cfg=", ";config="),
            stdin: None,
            code: 2,
            stdout: &["INVALID audit header: malformed audit header: field 6 is \"config\", expected `cfg`"],
        },
        HeaderCase {
            name: "the wrong key",
            args: &["HEADER", "OTHER_KEY"],
            tamper: same,
            stdin: None,
            code: 2,
            stdout: &["INVALID audit header: bad signature"],
        },
        HeaderCase {
            name: "no key for the header's key id",
            args: &["HEADER", "OTHER_KID"],
            tamper: same,
            stdin: None,
            code: 2,
            stdout: &["INVALID audit header: no key is known for key id \"2026-01\""],
        },
        HeaderCase {
            name: "the request that was audited",
            args: request(&[]),
            tamper: same,
            stdin: None,
            code: 0,
            stdout: &[
                "command: refund\n",
                "command hash: matches\n",
                "config fingerprint: matches --config\n",
            ],
        },
        HeaderCase {
            name: "the same command spelled differently",
            args: &[
                "HEADER", "KEY", "--config", "CONFIG", "--method", "post", "--path",
                "/v1/x/../orders//42?dry_run=true", "--host", "SHOP.example.com", "--body-file", "-",
            ],
            tamper: same,
            stdin: Some(r#"{"action":"refund","amount":12.5,"note":"other"}"#),
            code: 0,
            stdout: &["command hash: matches\n"],
        },
        HeaderCase {
            name: "another amount in the body",
            args: &[
                "HEADER", "KEY", "--config", "CONFIG", "--method", "POST", "--path",
                "/v1/orders/42?dry_run=true", "--body-file", "-",
            ],
            tamper: same,
            stdin: Some(r#"{"action":"refund","amount":1250}"#),
            code: 2,
            stdout: &["command: refund\n", "command hash: MISMATCH (header "],
        },
        HeaderCase {
            name: "another query",
            args: &[
                "HEADER", "KEY", "--config", "CONFIG", "--method", "POST", "--path",
                "/v1/orders/42?dry_run=false", "--body-file", "BODY",
            ],
            tamper: same,
            stdin: None,
            code: 2,
            stdout: &["command hash: MISMATCH (header "],
        },
        HeaderCase {
            name: "a body that json_pointer parts cannot read",
            args: &[
                "HEADER", "KEY", "--config", "CONFIG", "--method", "POST", "--path",
                "/v1/orders/42?dry_run=true",
            ],
            tamper: same,
            stdin: None,
            code: 2,
            stdout: &["request cannot be hashed: the body is not JSON"],
        },
        HeaderCase {
            name: "a tampered header is refused before the command is checked",
            args: request(&[]),
            tamper: |v| v.replace("id=0123456789abcdef-15", "id=0123456789abcdef-16"),
            stdin: None,
            code: 2,
            stdout: &["INVALID audit header: bad signature"],
        },
        HeaderCase {
            name: "JSON output",
            args: request(&["--json"]),
            tamper: same,
            stdin: None,
            code: 0,
            stdout: &[
                r#""valid":true"#,
                r#""command_hash":{"command":"refund","matches":true,"#,
                r#""config_fingerprint_matches":true"#,
            ],
        },
    ]);
}

#[test]
fn verify_header_mismatch_names_both_hashes() {
    let dir = TempDir::new();
    let config = dir.write("audit.json", POLICY);
    let value = header("PUT", "/files/a.txt", "one", &KEY);
    let key = format!("{KID}={}", b64(&KEY));
    let policy = AuditPolicy::from_json(POLICY.as_bytes()).unwrap();
    let hex = |h: [u8; 32]| meshguard_core::canonical::hex(&h);
    let sent = hex(policy
        .hash_request("PUT", "/files/a.txt", "", b"one")
        .unwrap());
    let received = hex(policy
        .hash_request("PUT", "/files/a.txt", "", b"two")
        .unwrap());
    for (body, code, want) in [
        ("one", 0, "command hash: matches\n".to_string()),
        (
            "two",
            2,
            format!("command hash: MISMATCH (header {sent}, request {received})\n"),
        ),
    ] {
        let body = dir.write("body", body);
        let out = meshguard(
            &[
                "audit",
                "verify-header",
                &value,
                "--key",
                &key,
                "--config",
                &config,
                "--method",
                "PUT",
                "--path",
                "/files/a.txt",
                "--body-file",
                &body,
            ],
            &[],
            None,
        );
        assert_eq!(out.code, Some(code), "{}", out.context());
        assert!(out.stdout.contains("command: upload\n"), "{}", out.stdout);
        assert!(out.stdout.contains(&want), "{}", out.context());
    }
}

/// Name, configuration, exit status, what stdout and stderr must hold
/// (`CONFIG` is the file's path, `FINGERPRINT` POLICY's fingerprint); an
/// empty list means the stream must be empty.
type ValidateCase = (
    &'static str,
    &'static str,
    i32,
    &'static [&'static str],
    &'static [&'static str],
);

#[test]
fn validate_checks_audit_policies_as_the_filter_does() {
    let cases: &[ValidateCase] = &[
        (
            "a valid policy",
            POLICY,
            0,
            &["CONFIG: valid audit policy (version=v1, 2 commands) fingerprint=FINGERPRINT signature=unsigned\n"],
            &[],
        ),
        (
            "defaults everywhere",
            "{}",
            0,
            &["CONFIG: valid audit policy (version=unset, 0 commands) fingerprint="],
            &[],
        ),
        (
            "a typo",
            r#"{"commands": [{"name": "a", "pahts": ["/a"], "parts": ["path"]}]}"#,
            1,
            &[],
            &["CONFIG: invalid: commands[0].pahts: unknown field `pahts`"],
        ),
        (
            "fail_closed without a collector",
            r#"{"fail_closed": true}"#,
            1,
            &[],
            &["CONFIG: invalid: fail_closed: is true but no collector is configured"],
        ),
        (
            "an identity policy",
            r#"{"rules": []}"#,
            1,
            &[],
            &["CONFIG: invalid: rules: unknown field `rules`"],
        ),
        (
            "legal but records go nowhere",
            r#"{"log_records": false, "commands": [{"name": "a", "parts": ["path"]}]}"#,
            0,
            &["CONFIG: valid audit policy (version=unset, 1 command) fingerprint="],
            &["warning: log_records is false and no collector is configured"],
        ),
    ];
    for (name, config, code, stdout, stderr) in cases {
        let dir = TempDir::new();
        let path = dir.write("audit.json", config);
        let out = meshguard(&["validate", "--filter", "audit", &path], &[], None);
        assert_output(name, &out, *code, stdout, stderr, |s| {
            s.replace("CONFIG", &path)
                .replace("FINGERPRINT", &policy_fingerprint())
        });
    }
}

#[test]
fn sign_and_validate_work_for_audit_policies() {
    let dir = TempDir::new();
    let config = dir.write("audit.json", POLICY);
    let trusted = keygen(&dir, "release");
    let signed = dir.0.join("audit.signed.json");
    let signed = signed.to_str().unwrap();
    let secret = dir.path("keys/release.key");
    let out = meshguard(
        &[
            "sign",
            &config,
            "--filter",
            "audit",
            "--key",
            &secret,
            "--key-id",
            "release",
            "--workload",
            "default/backend",
            "--serial",
            "1",
            "--out",
            signed,
        ],
        &[],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.context());
    let out = meshguard(
        &["validate", "--filter", "audit", signed],
        &[
            ("MESHGUARD_TRUSTED_KEYS", &trusted),
            ("MESHGUARD_REQUIRE_SIGNATURE", "true"),
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.context());
    assert!(
        out.stdout.contains(&format!(
            "valid audit policy (version=v1, 2 commands) fingerprint={} signature=verified by release\n",
            // The signed release scope is part of the fingerprint.
            integrity::fingerprint(&std::fs::read(signed).unwrap()).unwrap()
        )),
        "{}",
        out.context()
    );

    // An invalid audit policy is not signed.
    let bad = dir.write("bad.json", r#"{"fail_closed": true}"#);
    let out = meshguard(
        &[
            "sign",
            &bad,
            "--filter",
            "audit",
            "--key",
            &secret,
            "--key-id",
            "release",
            "--workload",
            "default/backend",
            "--serial",
            "1",
        ],
        &[],
        None,
    );
    assert_eq!(out.code, Some(1), "{}", out.context());
    assert!(out.stderr.contains("fail_closed"), "{}", out.context());
}

#[test]
fn help_explains_the_upstream_recipe_and_the_exit_codes() {
    let out = meshguard(&["audit", "verify-header", "--help"], &[], None);
    assert_eq!(out.code, Some(0));
    for want in [
        "Upstream verification recipe",
        "recompute the command hash",
        "2 when it does not verify or the command hash differs",
    ] {
        assert!(out.stdout.contains(want), "{want:?}\n{}", out.stdout);
    }
    let out = meshguard(&["audit", "verify", "--help"], &[], None);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout
            .contains("2 when a chain is broken or no record is found"),
        "{}",
        out.stdout
    );
    let out = meshguard(&["audit"], &[], None);
    assert_eq!(out.code, Some(1), "{}", out.context());
}
