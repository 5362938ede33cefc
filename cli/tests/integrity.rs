//! Config integrity from the command line: keys, signatures, fingerprints and
//! the reference source of truth, each checked against what the filter's own
//! `meshguard_core::integrity` says.

// Test code: clippy.toml allows these inside `#[test]` functions only, and this
// file's helpers are test code too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use meshguard_core::integrity::{fingerprint, read_answer, AnswerContext, IntegrityEnv};

use common::{assert_output, keygen, TempDir};

const POLICY: &str = r#"{
  "config_version": "v1",
  "integrity": {"on_drift": "quarantine", "health_paths": ["/healthz"]},
  "rules": [
    {"name": "frontend-api", "action": "allow",
     "principals": ["cluster.local/ns/default/sa/frontend"], "paths": ["/api/*"]}
  ]
}"#;

/// POLICY with its keys (and nested keys) in another order and other spacing.
const POLICY_REORDERED: &str = r#"{"rules": [{"paths": ["/api/*"], "action": "allow",
  "name": "frontend-api", "principals": ["cluster.local/ns/default/sa/frontend"]}],
  "integrity": {"health_paths": ["/healthz"], "on_drift": "quarantine"}, "config_version": "v1"}"#;

/// [`common::meshguard`] with no environment and no input.
fn meshguard(args: &[&str]) -> common::Output {
    common::meshguard(args, &[], None)
}

/// POLICY without its `integrity` section: what an unsigned config may be
/// while the environment asks for integrity.
const PLAIN: &str = r#"{
  "config_version": "v1",
  "rules": [
    {"name": "frontend-api", "action": "allow",
     "principals": ["cluster.local/ns/default/sa/frontend"], "paths": ["/api/*"]}
  ]
}"#;

/// Signs `config` (a file in `dir`) with key `id` into `out`, for the identity
/// filter of default/backend at serial 1.
fn sign(dir: &TempDir, config: &str, id: &str, out: &str) -> String {
    let key = dir.path(&format!("keys/{id}.key"));
    let out_path = dir.path(out);
    let result = meshguard(&[
        "sign",
        &dir.path(config),
        "--key",
        &key,
        "--key-id",
        id,
        "--workload",
        "default/backend",
        "--serial",
        "1",
        "--out",
        &out_path,
    ]);
    assert_eq!(result.code, Some(0), "{}", result.context());
    dir.read(out)
}

#[test]
fn validate_checks_signatures_as_the_filter_does() {
    let dir = TempDir::new();
    let release = keygen(&dir, "release");
    keygen(&dir, "intruder");
    dir.write("policy.json", POLICY);
    dir.write("plain.json", PLAIN);
    let signed = sign(&dir, "policy.json", "release", "signed.json");
    sign(&dir, "policy.json", "intruder", "by-intruder.json");
    assert!(signed.contains("\"signature\""), "{signed}");
    // Edit one value after signing (the rule now allows every path).
    let tampered = signed.replace("\"/api/*\"", "\"/*\"");
    assert_ne!(tampered, signed);
    dir.write("tampered.json", &tampered);
    let fp = fingerprint(PLAIN.as_bytes()).unwrap();
    let sfp = fingerprint(signed.as_bytes()).unwrap();

    let required: &[(&str, &str)] = &[
        ("MESHGUARD_TRUSTED_KEYS", &release),
        ("MESHGUARD_REQUIRE_SIGNATURE", "true"),
    ];
    let trusted: &[(&str, &str)] = &[("MESHGUARD_TRUSTED_KEYS", &release)];
    struct Case<'a> {
        name: &'a str,
        file: &'a str,
        env: &'a [(&'a str, &'a str)],
        code: i32,
        stdout: &'a str,
        stderr: &'a str,
    }
    let cases = [
        Case {
            name: "a signed config verifies with the trusted key",
            file: "signed.json",
            env: required,
            code: 0,
            stdout: "valid identity policy (version=v1, mode=enforce, 1 rule) fingerprint=SFP signature=verified by release\n",
            stderr: "",
        },
        Case {
            name: "a value edited after signing is unauthorized",
            file: "tampered.json",
            env: required,
            code: 1,
            stdout: "",
            stderr: "FILE: invalid: unauthorized config: the signature by key \"release\" does not match the config (modified after signing?)\n",
        },
        Case {
            name: "an edit is caught even when signatures are optional",
            file: "tampered.json",
            env: trusted,
            code: 1,
            stdout: "",
            stderr: "unauthorized config: the signature by key \"release\" does not match",
        },
        Case {
            name: "an unsigned config fails when signatures are required",
            file: "plain.json",
            env: required,
            code: 1,
            stdout: "",
            stderr: "FILE: invalid: unauthorized config: the config is not signed and MESHGUARD_REQUIRE_SIGNATURE is true\n",
        },
        Case {
            name: "a key that is not trusted is unauthorized",
            file: "by-intruder.json",
            env: required,
            code: 1,
            stdout: "",
            stderr: "unauthorized config: signed with key \"intruder\", which is not in MESHGUARD_TRUSTED_KEYS",
        },
        Case {
            name: "an unsigned config passes when signatures are optional",
            file: "plain.json",
            env: trusted,
            code: 0,
            stdout: "fingerprint=FP signature=unsigned\n",
            stderr: "",
        },
        Case {
            name: "an unsigned config may not set what judges it once the environment asks for integrity",
            file: "policy.json",
            env: trusted,
            code: 1,
            stdout: "",
            stderr: "FILE: invalid: config refused (unsigned_integrity): a config not signed by a trusted key may not carry an `integrity` section",
        },
        Case {
            name: "without trusted keys a signature is reported but not checked",
            file: "tampered.json",
            env: &[],
            code: 0,
            stdout: "signature=present (release), not checked (no MESHGUARD_TRUSTED_KEYS)\n",
            stderr: "",
        },
        Case {
            name: "a malformed environment refuses the config",
            file: "signed.json",
            env: &[("MESHGUARD_REQUIRE_SIGNATURE", "yes")],
            code: 1,
            stdout: "",
            stderr: "FILE: invalid: env MESHGUARD_REQUIRE_SIGNATURE: \"yes\" is not `true` or `false`\n",
        },
        Case {
            name: "requiring signatures without a trusted key is refused",
            file: "signed.json",
            env: &[("MESHGUARD_REQUIRE_SIGNATURE", "true")],
            code: 1,
            stdout: "",
            stderr: "signatures are required but MESHGUARD_TRUSTED_KEYS names no key",
        },
        Case {
            name: "on_drift reject refuses a config that is not the intended version",
            file: "signed.json",
            env: &[
                ("MESHGUARD_TRUSTED_KEYS", "RELEASE"),
                ("MESHGUARD_INTENDED_VERSION", "v2"),
                ("MESHGUARD_ON_DRIFT", "reject"),
            ],
            code: 1,
            stdout: "",
            stderr: "FILE: invalid: config drift, refused (on_drift: reject): active version=\"v1\"",
        },
        Case {
            name: "a drift that does not reject is a warning, as in the filter's log",
            file: "plain.json",
            env: &[("MESHGUARD_INTENDED_VERSION", "v2")],
            code: 0,
            stdout: "signature=unsigned\n",
            stderr: "warning: config drift detected (env): active version=\"v1\"",
        },
        Case {
            name: "an unsigned version label is not believed",
            file: "plain.json",
            env: &[("MESHGUARD_INTENDED_VERSION", "v1")],
            code: 0,
            stdout: "signature=unsigned\n",
            stderr: "warning: config drift detected (env): active version=\"v1\" fingerprint=",
        },
        Case {
            name: "the intended fingerprint wins over the version",
            file: "plain.json",
            env: &[
                ("MESHGUARD_INTENDED_VERSION", "v2"),
                ("MESHGUARD_INTENDED_FINGERPRINT", "FP"),
                ("MESHGUARD_ON_DRIFT", "reject"),
            ],
            code: 0,
            stdout: "fingerprint=FP",
            stderr: "",
        },
    ];
    for case in cases {
        let file = dir.path(case.file);
        let env: Vec<(&str, String)> = case
            .env
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    v.replace("SFP", &sfp)
                        .replace("FP", &fp)
                        .replace("RELEASE", &release),
                )
            })
            .collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = common::meshguard(&["validate", &file], &env, None);
        assert_output(
            case.name,
            &out,
            case.code,
            &[case.stdout],
            &[case.stderr],
            |want| {
                want.replace("FILE", &file)
                    .replace("SFP", &sfp)
                    .replace("FP", &fp)
            },
        );
    }
}

#[test]
fn keygen_writes_a_private_seed_and_a_public_key_and_never_overwrites() {
    let dir = TempDir::new();
    let entry = keygen(&dir, "release");
    let public = dir.read("keys/release.pub");
    let secret = dir.read("keys/release.key");
    assert_eq!(entry, format!("release={}", public.trim_end()));
    assert!(public.ends_with('\n') && secret.ends_with('\n'));
    assert_eq!(public.trim_end().len(), 44, "base64 of 32 bytes: {public}");
    assert_eq!(secret.trim_end().len(), 44, "base64 of 32 bytes: {secret}");
    let mode = std::fs::metadata(dir.path("keys/release.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_ne!(keygen(&dir, "other"), entry, "every key is new");

    let cases: &[(&str, &[&str], &str)] = &[
        (
            "an existing key pair is never overwritten",
            &["--key-id", "release"],
            "already exists; not overwriting a key",
        ),
        (
            "a key ID that cannot go into MESHGUARD_TRUSTED_KEYS is refused",
            &["--key-id", "a=b"],
            "key ID \"a=b\" must match",
        ),
        (
            "a key ID that could leave the directory is refused",
            &["--key-id", "../x"],
            "must match",
        ),
    ];
    for (name, args, want) in cases {
        let mut full = vec!["keygen", "--out-dir"];
        let keys = dir.path("keys");
        full.push(&keys);
        full.extend_from_slice(args);
        let out = meshguard(&full);
        assert_eq!(out.code, Some(1), "{name}\n{}", out.context());
        assert!(out.stderr.contains(want), "{name}\n{}", out.context());
    }
    assert_eq!(dir.read("keys/release.pub"), public);
    assert_eq!(dir.read("keys/release.key"), secret);

    // The public key half alone also blocks a new pair.
    std::fs::remove_file(dir.path("keys/other.key")).unwrap();
    let out = meshguard(&[
        "keygen",
        "--key-id",
        "other",
        "--out-dir",
        &dir.path("keys"),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.context());
    assert!(!Path::new(&dir.path("keys/other.key")).exists());
}

#[test]
fn sign_refuses_what_the_filter_would_refuse() {
    let dir = TempDir::new();
    keygen(&dir, "release");
    dir.write(
        "bad.json",
        r#"{"rules": [{"name": "a", "action": "allow", "paths": ["api/*"]}]}"#,
    );
    dir.write(
        "bad-integrity.json",
        r#"{"integrity": {"quarantine_status": 403}}"#,
    );
    dir.write("policy.json", POLICY);
    dir.write("garbage.key", "not a key\n");
    let key = dir.path("keys/release.key");
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "an invalid policy is not signed",
            "bad.json",
            "release",
            "bad.json: invalid: rules[0].paths[0]: \"api/*\" must start with `/`",
        ),
        (
            "an invalid integrity section is not signed",
            "bad-integrity.json",
            "release",
            "bad-integrity.json: invalid: integrity.quarantine_status: 403 is not a 5xx status",
        ),
        (
            "a key ID MESHGUARD_TRUSTED_KEYS cannot hold is refused",
            "policy.json",
            "a,b",
            "key ID \"a,b\" must match",
        ),
    ];
    for (name, file, id, want) in cases {
        let out = meshguard(&[
            "sign",
            &dir.path(file),
            "--key",
            &key,
            "--key-id",
            id,
            "--workload",
            "default/backend",
            "--serial",
            "1",
        ]);
        assert_eq!(out.code, Some(1), "{name}\n{}", out.context());
        assert_eq!(out.stdout, "", "{name}");
        assert!(out.stderr.contains(want), "{name}\n{}", out.context());
    }
    let out = meshguard(&[
        "sign",
        &dir.path("policy.json"),
        "--key",
        &dir.path("garbage.key"),
        "--key-id",
        "release",
        "--workload",
        "default/backend",
        "--serial",
        "1",
    ]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("is not a meshguard private key"),
        "{}",
        out.context()
    );

    // Without --out the signed config goes to stdout, and signing twice
    // replaces the signature rather than adding one.
    let out = meshguard(&[
        "sign",
        &dir.path("policy.json"),
        "--key",
        &key,
        "--key-id",
        "release",
        "--workload",
        "default/backend",
        "--serial",
        "1",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.context());
    dir.write("signed.json", &out.stdout);
    let again = sign(&dir, "signed.json", "release", "signed-again.json");
    let value: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(value["signature"]["key_id"], "release");
    assert_eq!(again, out.stdout, "ed25519 signatures are deterministic");
}

#[test]
fn the_fingerprint_ignores_key_order_and_the_signature_and_matches_validate() {
    let dir = TempDir::new();
    keygen(&dir, "release");
    dir.write("policy.json", POLICY);
    dir.write("reordered.json", POLICY_REORDERED);
    sign(&dir, "policy.json", "release", "signed.json");
    dir.write("edited.json", &POLICY.replace("/api/*", "/api/v2/*"));
    dir.write("no-version.json", r#"{"rules": []}"#);
    let expected = fingerprint(POLICY.as_bytes()).unwrap();

    let cases = [
        ("the same config", "policy.json", true, "v1"),
        (
            "keys reordered, spacing changed",
            "reordered.json",
            true,
            "v1",
        ),
        // The release scope is signed in; the signature itself is not hashed.
        ("signed", "signed.json", false, "v1"),
        ("one value edited", "edited.json", false, "v1"),
        ("no config_version", "no-version.json", false, "unset"),
    ];
    for (name, file, same, version) in cases {
        let path = dir.path(file);
        let out = meshguard(&["fingerprint", &path]);
        assert_eq!(out.code, Some(0), "{name}\n{}", out.context());
        let (hex, rest) = out.stdout.trim_end().split_once(' ').unwrap();
        assert_eq!(hex.len(), 64, "{name}");
        assert_eq!(hex == expected, same, "{name}");
        assert_eq!(rest, format!("config_version={version}"), "{name}");
        assert_eq!(
            hex,
            fingerprint(&std::fs::read(&path).unwrap()).unwrap(),
            "{name}: the core's fingerprint"
        );
        let validate = meshguard(&["validate", &path]);
        assert_eq!(validate.code, Some(0), "{name}\n{}", validate.context());
        assert!(
            validate.stdout.contains(&format!(" fingerprint={hex} ")),
            "{name}: validate prints the same fingerprint\n{}",
            validate.context()
        );
    }

    let bad = dir.write("array.json", "[]");
    let out = meshguard(&["fingerprint", &bad]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("array.json: invalid: config: expected a JSON object"),
        "{}",
        out.context()
    );
}

// ---------------------------------------------------------------------------
// serve-intended

struct Reply {
    status: u16,
    head: String,
    body: String,
}

fn request(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{head}"));
    assert!(head.contains("\r\nconnection: close"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "{head}");
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(
        addr,
        format!(
            "GET {path} HTTP/1.1\r\nhost: meshguard-intended\r\nx-meshguard-filter: identity\r\n\
             x-meshguard-config-version: v1\r\n\r\n"
        )
        .as_bytes(),
    )
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

/// Publishes POLICY for shop/orders into `served` with `meshguard publish`.
fn publish(dir: &TempDir, served: &TempDir, config: &str) -> String {
    let out = meshguard(&[
        "publish",
        &dir.path(config),
        "--workload",
        "shop/orders",
        "--key",
        &dir.path("keys/release.key"),
        "--key-id",
        "release",
        "--out-dir",
        served.0.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.context());
    served.read("shop/orders/identity.json")
}

#[test]
fn publish_writes_signed_documents_the_filter_believes_and_serve_intended_serves_them() {
    let dir = TempDir::new();
    let served = TempDir::new();
    let release = keygen(&dir, "release");
    dir.write("policy.json", POLICY);
    dir.write("secret.json", r#"{"config_version": "outside"}"#);
    let document = publish(&dir, &served, "policy.json");
    served.write("shop/orders/big.json", &"x".repeat(65 * 1024));
    std::fs::create_dir_all(served.0.join("shop/orders/dir.json")).unwrap();

    // What the filter's poller does with the document.
    let env = IntegrityEnv::from_vars(|k| (k == "MESHGUARD_TRUSTED_KEYS").then(|| release.clone()))
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = |filter, workload, now_s, newest_issued| AnswerContext {
        filter,
        workload: Some(workload),
        now_s,
        newest_issued,
    };
    let answer = read_answer(
        document.as_bytes(),
        &env,
        &at("identity", "shop/orders", now, None),
    )
    .unwrap();
    assert_eq!(
        answer.intended.fingerprint.unwrap(),
        fingerprint(POLICY.as_bytes()).unwrap()
    );
    let later = Some(answer.issued + 1);
    for (filter, workload, now_s, newest, want) in [
        ("masking", "shop/orders", now, None, "wrong_filter"),
        ("identity", "shop/payments", now, None, "wrong_workload"),
        ("identity", "shop/orders", now + 86_401, None, "expired"),
        ("identity", "shop/orders", now, later, "stale"),
    ] {
        let err = read_answer(
            document.as_bytes(),
            &env,
            &at(filter, workload, now_s, newest),
        )
        .unwrap_err();
        assert_eq!(err.reason.as_str(), want);
    }

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = meshguard_cli::serve_intended::spawn(listener, served.0.clone());
    let sibling = format!(
        "/v1/intended/../{}/secret",
        dir.0.file_name().unwrap().to_str().unwrap()
    );
    // (name, request, status, the `error` of an error answer)
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "a published document is served as written",
            "GET /v1/intended/shop/orders/identity".into(),
            200,
            "",
        ),
        (
            "a query string is ignored",
            "GET /v1/intended/shop/orders/identity?x=1".into(),
            200,
            "",
        ),
        (
            "a missing workload is 404",
            "GET /v1/intended/shop/payments/identity".into(),
            404,
            "not_found",
        ),
        (
            "a missing filter is 404",
            "GET /v1/intended/shop/orders/masking".into(),
            404,
            "not_found",
        ),
        (
            "another path is 404",
            "GET /healthz".into(),
            404,
            "not_found",
        ),
        (
            "a POST is 405",
            "POST /v1/intended/shop/orders/identity".into(),
            405,
            "method_not_allowed",
        ),
        (
            "a DELETE is 405",
            "DELETE /v1/intended/shop/orders/identity".into(),
            405,
            "method_not_allowed",
        ),
        (
            "`..` leaving the directory is 400",
            format!("GET {sibling}"),
            400,
            "bad_request",
        ),
        (
            "`..` as the workload is 400",
            "GET /v1/intended/shop/../identity".into(),
            400,
            "bad_request",
        ),
        (
            "`..` as the filter is 400",
            "GET /v1/intended/shop/orders/..".into(),
            400,
            "bad_request",
        ),
        (
            "an encoded `..` is 400",
            "GET /v1/intended/%2e%2e/orders/identity".into(),
            400,
            "bad_request",
        ),
        (
            "a character outside [A-Za-z0-9._-] is 400",
            "GET /v1/intended/shop/ord~ers/identity".into(),
            400,
            "bad_request",
        ),
        (
            "an empty filter is 400",
            "GET /v1/intended/shop/orders/".into(),
            400,
            "bad_request",
        ),
        (
            "too many segments is 400",
            "GET /v1/intended/shop/orders/identity/x".into(),
            400,
            "bad_request",
        ),
        (
            "too few segments is 400",
            "GET /v1/intended/orders/identity".into(),
            400,
            "bad_request",
        ),
        (
            "an unreadable file is 500",
            "GET /v1/intended/shop/orders/dir".into(),
            500,
            "intended_config_unusable",
        ),
        (
            "a file over 64 KiB is 500",
            "GET /v1/intended/shop/orders/big".into(),
            500,
            "intended_config_unusable",
        ),
    ];
    for (name, line, status, want) in cases {
        let reply = request(
            addr,
            format!("{line} HTTP/1.1\r\nhost: meshguard-intended\r\n\r\n").as_bytes(),
        );
        assert_eq!(
            reply.status, status,
            "{name}\n{}\n{}",
            reply.head, reply.body
        );
        assert!(
            reply.head.contains("\r\ncontent-type: application/json"),
            "{name}: {}",
            reply.head
        );
        if status == 200 {
            assert_eq!(reply.body, document, "{name}");
        } else {
            let body = json(&reply);
            assert_eq!(body["error"], want, "{name}: {}", reply.body);
            assert!(body["reason"].is_string(), "{name}: {}", reply.body);
        }
        if status == 405 {
            assert!(reply.head.contains("\r\nallow: GET"), "{}", reply.head);
        }
    }

    // Publishing again replaces the document; the next request sees it.
    dir.write("v2.json", &POLICY.replace("\"v1\"", "\"v2\""));
    let v2 = publish(&dir, &served, "v2.json");
    assert_ne!(v2, document);
    assert_eq!(get(addr, "/v1/intended/shop/orders/identity").body, v2);
    // Removing it withdraws it.
    std::fs::remove_file(served.0.join("shop/orders/identity.json")).unwrap();
    assert_eq!(get(addr, "/v1/intended/shop/orders/identity").status, 404);

    // Bad arguments.
    for (args, want) in [
        (
            &["--workload", "orders"][..],
            "must be NAMESPACE/WORKLOAD_NAME",
        ),
        (
            &["--workload", "shop/../x"][..],
            "must match [A-Za-z0-9._-]+",
        ),
    ] {
        let mut full = vec![
            "publish".to_string(),
            dir.path("policy.json"),
            "--key".into(),
            dir.path("keys/release.key"),
            "--key-id".into(),
            "release".into(),
            "--out-dir".into(),
            served.0.to_str().unwrap().into(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = meshguard(&full);
        assert_eq!(out.code, Some(1), "{args:?}\n{}", out.context());
        assert!(out.stderr.contains(want), "{args:?}\n{}", out.context());
    }
}

#[test]
fn validate_with_an_env_file_shows_what_that_sidecar_accepts_or_refuses_and_why() {
    let dir = TempDir::new();
    let release = keygen(&dir, "release");
    let old = keygen(&dir, "old");
    dir.write("policy.json", POLICY);
    dir.write("plain.json", PLAIN);
    sign(&dir, "policy.json", "release", "signed.json");
    sign(&dir, "policy.json", "old", "by-old.json");
    let env_file = dir.write(
        "sidecar.env",
        &format!(
            "# proxy-level env of default/backend\nMESHGUARD_TRUSTED_KEYS={release},{old}\n\
             MESHGUARD_REVOKED_KEYS=old\nexport MESHGUARD_REQUIRE_SIGNATURE=\"true\"\n\
             MESHGUARD_HEALTH_PATHS=/healthz\nMESHGUARD_ON_DRIFT=quarantine\n"
        ),
    );
    /// (name, file, extra args, exit code, stdout, stderr)
    type Case<'a> = (&'a str, &'a str, &'a [&'a str], i32, &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "a signed config in scope is accepted, with where each setting comes from",
            "signed.json",
            &["--workload", "default/backend"],
            0,
            "  settings: on_drift=quarantine (from env), health_paths from env, source_of_truth=none (from default)\n  release: filter=identity workloads=default/backend serial=1: admitted for default/backend\n",
            "",
        ),
        (
            "the environment is shown",
            "signed.json",
            &[],
            0,
            "sidecar.env: trusted keys [release, old], revoked [old], signatures required, integrity asked",
            "",
        ),
        (
            "another workload refuses it",
            "signed.json",
            &["--workload", "default/frontend"],
            1,
            "integrity asked",
            "invalid: config refused (wrong_workload): signed for workloads \"default/backend\", this proxy is \"default/frontend\"",
        ),
        (
            "a newer serial already accepted refuses it",
            "signed.json",
            &["--workload", "default/backend", "--newest-serial", "2"],
            1,
            "integrity asked",
            "invalid: config refused (rollback): serial 1 is older than serial 2",
        ),
        (
            "another filter refuses it",
            "signed.json",
            &["--workload", "default/backend", "--filter", "audit"],
            1,
            "integrity asked",
            "invalid: config refused (wrong_filter)",
        ),
        (
            "a revoked key refuses it",
            "by-old.json",
            &[],
            1,
            "integrity asked",
            "invalid: config refused (revoked): signed with key \"old\", which is in MESHGUARD_REVOKED_KEYS",
        ),
        (
            "an unsigned config is refused",
            "plain.json",
            &[],
            1,
            "integrity asked",
            "invalid: unauthorized config: the config is not signed",
        ),
        (
            "an unsigned config setting its own integrity is refused for that",
            "policy.json",
            &[],
            1,
            "integrity asked",
            "invalid: config refused (unsigned_integrity)",
        ),
    ];
    for (name, file, extra, code, stdout, stderr) in cases {
        let path = dir.path(file);
        let mut args = vec!["validate", path.as_str(), "--env", env_file.as_str()];
        args.extend_from_slice(extra);
        let out = meshguard(&args);
        assert_output(name, &out, *code, &[stdout], &[stderr], |w| w.to_string());
    }
    // Not an env file.
    let bad = dir.write("bad.env", "MESHGUARD_ON_DRIFT\n");
    let out = meshguard(&["validate", &dir.path("signed.json"), "--env", &bad]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("bad.env:1: expected NAME=VALUE"),
        "{}",
        out.context()
    );
}

#[test]
fn sign_names_the_scope_and_refuses_a_bad_one() {
    let dir = TempDir::new();
    keygen(&dir, "release");
    dir.write("policy.json", POLICY);
    let key = dir.path("keys/release.key");
    let out = meshguard(&[
        "sign",
        &dir.path("policy.json"),
        "--key",
        &key,
        "--key-id",
        "release",
        "--workload",
        "default/backend",
        "--workload",
        "jobs/*",
        "--serial",
        "7",
        "--not-before",
        "100",
        "--not-after",
        "200",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.context());
    let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        value["release"],
        serde_json::json!({"filter": "identity", "workloads": ["default/backend", "jobs/*"],
                           "serial": 7, "not_before": 100, "not_after": 200})
    );
    for (args, want) in [
        (
            &["--workload", "backend", "--serial", "1"][..],
            "must be NAMESPACE/WORKLOAD_NAME",
        ),
        (
            &[
                "--workload",
                "a/b",
                "--serial",
                "1",
                "--not-before",
                "5",
                "--not-after",
                "4",
            ][..],
            "is before --not-before",
        ),
        (&["--serial", "1"][..], "--workload"),
        (&["--workload", "a/b"][..], "--serial"),
    ] {
        let policy = dir.path("policy.json");
        let mut full = vec![
            "sign",
            policy.as_str(),
            "--key",
            key.as_str(),
            "--key-id",
            "release",
        ];
        full.extend_from_slice(args);
        let out = meshguard(&full);
        assert_eq!(out.code, Some(1), "{args:?}\n{}", out.context());
        assert!(out.stderr.contains(want), "{args:?}\n{}", out.context());
    }
}

#[test]
fn serve_intended_bounds_what_it_reads() {
    let served = TempDir::new();
    served.write("shop/orders/identity.json", POLICY);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = meshguard_cli::serve_intended::spawn(listener, served.0.clone());

    let huge = format!(
        "GET /v1/intended/shop/orders/identity HTTP/1.1\r\nx-filler: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let post = format!(
        "POST /v1/intended/shop/orders/identity HTTP/1.1\r\ncontent-length: 50000\r\n\r\n{}",
        "x".repeat(50_000)
    );
    let cases: &[(&str, &[u8], u16)] = &[
        ("a head over 16 KiB is 431", huge.as_bytes(), 431),
        (
            "a request line without a version is 400",
            b"GET /\r\n\r\n",
            400,
        ),
        (
            "HTTP/2 is not served",
            b"GET /v1/intended/shop/orders/identity HTTP/2.0\r\n\r\n",
            505,
        ),
        (
            "a header line without a colon is 400",
            b"GET /v1/intended/shop/orders/identity HTTP/1.1\r\nbroken\r\n\r\n",
            400,
        ),
        (
            "a POST with a large body still gets its 405",
            post.as_bytes(),
            405,
        ),
        (
            "HTTP/1.0 is served",
            b"GET /v1/intended/shop/orders/identity HTTP/1.0\r\n\r\n",
            200,
        ),
    ];
    for (name, raw, status) in cases {
        let reply = request(addr, raw);
        assert_eq!(reply.status, *status, "{name}\n{}", reply.body);
    }
}

#[test]
fn serve_intended_binary_announces_its_address() {
    let served = TempDir::new();
    served.write("shop/orders/identity.json", POLICY);
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args([
            "serve-intended",
            served.0.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // The log, line by line, from a thread (a read must not hang the test).
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if log_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let reply = line
        .strip_prefix("meshguard serve-intended: listening on http://")
        .and_then(|rest| rest.strip_suffix(&format!(", serving {}\n", served.0.display())))
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        .map(|addr| get(addr, "/v1/intended/shop/orders/identity"));
    let log = log_rx.recv_timeout(Duration::from_secs(10));
    child.kill().unwrap();
    child.wait().unwrap();
    let reply = reply.unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    // One log line per request, with what the filter said about itself.
    let log = log.unwrap();
    assert!(
        log.starts_with("meshguard serve-intended: 127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains(
            "\"GET /v1/intended/shop/orders/identity\" x-meshguard-filter=\"identity\" \
             x-meshguard-config-version=\"v1\" -> 200 shop/orders/identity.json: "
        ),
        "{log}"
    );

    let out = meshguard(&["serve-intended", &served.path("missing")]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("is not a directory"),
        "{}",
        out.context()
    );
}
