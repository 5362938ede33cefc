//! Keys (HMAC secrets, Ed25519 PKCS#8 private keys and public keys), records
//! sealed with Ed25519 and verified with the public key only, the signature
//! and collector settings, and OTLP log records read back and checked.

use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use super::KEY;
use crate::audit::keys::{private_key_pem, public_key_pem};
use crate::audit::otlp::{attribute_mismatch, exported_records, log_record};
use crate::audit::outbox::{Framing, Outbox};
use crate::audit::KeyLookup;
use crate::audit::{
    audit_id, parse_private_key, parse_public_key, verify_records, Algorithm, BreakKind, Chain,
    KeyError, Keyring, RecordFields, SealKey, VerifyKey,
};
use crate::request::RequestInfo;

const SEED: [u8; 32] = [9; 32];

fn fields(i: u64) -> RecordFields {
    let request = RequestInfo {
        path: "/orders/7?x=1",
        method: "GET",
        host: "shop",
    };
    let mut f = RecordFields::new(
        audit_id("c", i),
        1_718_000_000_000,
        &request,
        "default",
        [7; 32],
    );
    f.peer = Some("spiffe://cluster.local/ns/a/sa/b".into());
    f.status = Some(200);
    f.decisions.insert("identity".into(), json!("allowed"));
    f.config_fingerprint = Some("f".repeat(64));
    f
}

#[test]
fn private_keys_are_pkcs8_and_never_double_as_hmac_secrets() {
    // Broken by hand: with the PKCS#8 check removed from the HMAC branch of
    // SealKey::from_env_text, the PEM is taken as a secret and row 2 fails.
    let key = SigningKey::from_bytes(&SEED);
    let pem = private_key_pem(&key);
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"));
    let der_base64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let hmac_secret = "bWVzaGd1YXJkLXRlc3QtYXVkaXQta2V5LTMyYnl0ZXM=";
    for (text, algorithm, want) in [
        (pem.as_str(), Algorithm::Ed25519, Ok(Algorithm::Ed25519)),
        (
            pem.as_str(),
            Algorithm::HmacSha256,
            Err(KeyError::PrivateKeyAsSecret),
        ),
        (
            der_base64.as_str(),
            Algorithm::Ed25519,
            Ok(Algorithm::Ed25519),
        ),
        (
            der_base64.as_str(),
            Algorithm::HmacSha256,
            Err(KeyError::PrivateKeyAsSecret),
        ),
        (
            hmac_secret,
            Algorithm::HmacSha256,
            Ok(Algorithm::HmacSha256),
        ),
        // A bare 32-byte secret is not self-describing: never an Ed25519 key.
        (hmac_secret, Algorithm::Ed25519, Err(KeyError::NotPkcs8)),
        ("", Algorithm::Ed25519, Err(KeyError::Empty)),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            Algorithm::Ed25519,
            Err(KeyError::NotPkcs8),
        ),
    ] {
        let got = SealKey::from_env_text(text, algorithm).map(|k| k.algorithm());
        assert_eq!(got, want, "{algorithm:?} {text:?}");
    }
    let parsed = parse_private_key(&pem).unwrap();
    assert_eq!(parsed.to_bytes(), SEED);
    // openssl pkey -pubout writes this SPKI for the same key.
    let public = public_key_pem(&key.verifying_key());
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
    let raw = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        key.verifying_key().as_bytes(),
    );
    for text in [public.as_str(), raw.as_str()] {
        assert_eq!(
            parse_public_key(text).unwrap(),
            key.verifying_key(),
            "{text}"
        );
    }
    assert_eq!(parse_public_key(&pem), Err(KeyError::NotPublicKey));
    // A pair OpenSSL made (`openssl genpkey -algorithm ed25519`, then
    // `openssl pkey -pubout`): read as OpenSSL reads it.
    let openssl_private = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEII5ho7/IAZshXxCru+9t24gi1YhCMkf+RSqYMhOGEEQr\n\
        -----END PRIVATE KEY-----\n";
    let openssl_public = "-----BEGIN PUBLIC KEY-----\n\
        MCowBQYDK2VwAyEAJlJz+l6xLLIGwxfWwXJqYchfCm5uCTcuEC9Fysq6eOs=\n\
        -----END PUBLIC KEY-----\n";
    let key = parse_private_key(openssl_private).unwrap();
    assert_eq!(public_key_pem(&key.verifying_key()), openssl_public);
    assert_eq!(private_key_pem(&key), openssl_private);
}

#[test]
fn ed25519_records_verify_with_the_public_key_only() {
    // Broken by hand: with verify_strict replaced by a check that always
    // passes in VerifyKey::verify, the forged record verifies.
    let key = SealKey::Ed25519(Box::new(SigningKey::from_bytes(&SEED)));
    let mut chain = Chain::new("c");
    let mut lines = String::new();
    for i in 0..3 {
        let (record, line) = chain.seal_line(fields(i), &key, "ed").unwrap();
        assert_eq!(record.mac.len(), 86, "a 64-byte signature");
        lines.push_str(&line);
        lines.push('\n');
    }
    let mut public = Keyring::new();
    public
        .add_public("ed", SigningKey::from_bytes(&SEED).verifying_key())
        .unwrap();
    let report = verify_records(&lines, &public);
    assert!(report.is_ok(), "{report}");
    // An edit, and a record sealed with the public key bytes as an HMAC
    // secret (the algorithm comes from the verifier's key, not the record).
    let edited = lines.replacen("/orders/7", "/orders/8", 1);
    let report = verify_records(&edited, &public);
    assert_eq!(
        report.chains[0].first_break.as_ref().unwrap().kind,
        BreakKind::BadMac
    );
    let public_bytes = SigningKey::from_bytes(&SEED).verifying_key().to_bytes();
    let forged = Chain::new("c")
        .seal(fields(0), &public_bytes, "ed")
        .unwrap();
    let report = verify_records(&forged.to_line(), &public);
    assert_eq!(
        report.chains[0].first_break.as_ref().unwrap().kind,
        BreakKind::BadMac
    );
    // The same key id twice with different keys is refused.
    assert!(public.add_secret("ed", KEY.to_vec()).is_err());
    assert!(matches!(public.key("ed"), Some(VerifyKey::Ed25519(_))));
}

#[test]
fn signature_and_collector_settings_are_checked() {
    // Broken by hand: without the ed25519/v1 contradiction in
    // check_signature, the first two rows compile.
    let err = |json: &str| {
        crate::audit::AuditPolicy::from_json(json.as_bytes())
            .unwrap_err()
            .to_string()
    };
    for (json, want) in [
        (
            r#"{"algorithm": "ed25519"}"#,
            "upstream_signature: contradicts algorithm",
        ),
        (
            r#"{"algorithm": "ed25519", "upstream_signature": "both"}"#,
            "v1 header, which is HMAC only",
        ),
        (r#"{"algorithm": "rsa"}"#, "unknown algorithm"),
        (
            r#"{"upstream_signature": "v2"}"#,
            "unknown upstream_signature",
        ),
        (r#"{"signature_label": "Meshguard"}"#, "signature_label"),
        (r#"{"signature_tag": "a\"b"}"#, "signature_tag"),
        (
            r#"{"signature_expires_seconds": 0}"#,
            "signature_expires_seconds: 0 is out of range",
        ),
        (r#"{"signature_expires_seconds": 86401}"#, "out of range"),
        (r#"{"command_header": "signature"}"#, "command_header"),
        (
            r#"{"collector": {"cluster": "c", "format": "otlp"}}"#,
            "unknown format",
        ),
    ] {
        assert!(err(json).contains(want), "{json}: {}", err(json));
    }
    let p = super::policy(
        r#"{"algorithm": "ed25519", "upstream_signature": "rfc9421", "signature_expires_seconds": 60,
            "collector": {"cluster": "c", "format": "otlp_json"}}"#,
    );
    assert_eq!(p.algorithm(), Algorithm::Ed25519);
    assert_eq!(p.signature_label(), "meshguard");
    assert_eq!(p.signature_tag(), "meshguard-audit");
    assert_eq!(p.signature_expires_seconds(), Some(60));
    assert_eq!(p.collector().unwrap().path, "/v1/logs");
    // An exported log record is larger than its record: the outbox reserves for it.
    assert!(p.outbox_limits().unwrap().record_bound > 3 * p.record_bound());
    assert_eq!(super::policy("{}").collector(), None);
    assert_eq!(
        super::policy(r#"{"collector": {"cluster": "c"}}"#)
            .collector()
            .unwrap()
            .path,
        "/v1/audit-records"
    );
}

#[test]
fn otlp_log_records_carry_the_sealed_record_and_attributes_checked_against_it() {
    // Broken by hand: with attribute_mismatch returning None, the edited
    // attribute row is not reported.
    let key = SealKey::Hmac(crate::audit::MacKey::new(KEY).unwrap());
    let (record, line) = Chain::new("c").seal_line(fields(0), &key, "k1").unwrap();
    let json = line.strip_prefix(crate::audit::RECORD_PREFIX).unwrap();
    let exported = log_record(&record, json, 1_718_000_000_500);
    let value: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(value["timeUnixNano"], "1718000000000000000");
    assert_eq!(value["observedTimeUnixNano"], "1718000000500000000");
    assert_eq!(value["severityNumber"], 9);
    assert_eq!(value["eventName"], "meshguard.audit.request");
    assert_eq!(value["body"]["stringValue"], json);
    // Two records framed as one export request, as the outbox sends them.
    let (head, tail) = crate::audit::otlp::export_framing();
    let limits = crate::audit::OutboxLimits {
        max_records: 10,
        max_bytes: 1 << 20,
        batch_size: 10,
        max_in_flight: 1,
        max_retries: 0,
        record_bound: 1 << 16,
        fail_closed: false,
    };
    let mut outbox = Outbox::with_framing(limits, Framing::Json { head, tail });
    let _ = outbox.push(exported.clone(), None);
    let _ = outbox.push(exported.clone(), None);
    let mut body = Vec::new();
    outbox.flush(0, true, |b| {
        body = b.to_vec();
        Some(1)
    });
    let batch: Value = serde_json::from_slice(&body).unwrap();
    let found = exported_records(&batch).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].body, json);
    assert_eq!(attribute_mismatch(&record, &found[0].attributes), None);
    for (key, value, mismatch) in [
        ("meshguard.audit.seq", json!({"intValue": 0}), false),
        ("meshguard.audit.seq", json!({"intValue": "1"}), true),
        (
            "meshguard.audit.command",
            json!({"stringValue": "other"}),
            true,
        ),
        ("meshguard.audit.extra", json!({"stringValue": "x"}), true),
        (
            "k8s.pod.name",
            json!({"stringValue": "added by a pipeline"}),
            false,
        ),
        ("url.path", json!({"intValue": "3"}), true),
    ] {
        let attributes = vec![(key.to_owned(), value.clone())];
        assert_eq!(
            attribute_mismatch(&record, &attributes).is_some(),
            mismatch,
            "{key} {value}"
        );
    }
}
