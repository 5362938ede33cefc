use std::collections::HashMap;

use super::{KEY, OTHER_KEY};
use crate::audit::stamp::{parse_header, MAX_HEADER_LEN};
use crate::audit::{
    audit_id, sanitize_token, verify_header, verify_header_with_keys, AuditStamp, StampError,
    VerifyError,
};

fn stamp() -> AuditStamp {
    AuditStamp {
        key_id: "k1".into(),
        id: audit_id("node-1.0", 42),
        ts_ms: 1_700_000_000_123,
        peer: Some("spiffe://cluster.local/ns/shop/sa/frontend".into()),
        config_fingerprint: Some("9f2c".into()),
        command_sha256: [0xab; 32],
    }
}

#[test]
fn a_signed_header_verifies_and_returns_what_was_signed() {
    let cases = [
        stamp(),
        AuditStamp {
            peer: None,
            config_fingerprint: None,
            ..stamp()
        },
        AuditStamp {
            ts_ms: 0,
            id: "-".into(),
            ..stamp()
        },
        AuditStamp {
            ts_ms: u64::MAX,
            ..stamp()
        },
    ];
    for s in cases {
        let header = s.sign(KEY).unwrap();
        assert_eq!(verify_header(&header, KEY), Ok(s.clone()), "{header}");
        assert_eq!(verify_header(&format!(" {header}\t"), KEY), Ok(s));
    }
}

#[test]
fn the_header_and_mac_input_have_the_documented_layout() {
    let s = stamp();
    let cmd = "ab".repeat(32);
    assert_eq!(
        s.mac_input(),
        format!(
            "meshguard-audit-v1\n1\nk1\nnode-1.0-42\n1700000000123\nspiffe://cluster.local/ns/shop/sa/frontend\n9f2c\n{cmd}"
        )
    );
    let header = s.sign(KEY).unwrap();
    let (head, sig) = header.rsplit_once(";sig=").unwrap();
    assert_eq!(
        head,
        format!("v=1;kid=k1;id=node-1.0-42;ts=1700000000123;peer=spiffe://cluster.local/ns/shop/sa/frontend;cfg=9f2c;cmd={cmd}")
    );
    assert_eq!(sig.len(), 43);
    assert!(sig
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let absent = AuditStamp {
        peer: None,
        config_fingerprint: None,
        ..s
    };
    assert!(absent.sign(KEY).unwrap().contains(";peer=-;cfg=-;"));
}

#[test]
fn any_tampered_field_breaks_the_signature() {
    let header = stamp().sign(KEY).unwrap();
    let cmd = "ab".repeat(32);
    let edits = [
        ("kid=k1", "kid=k2"),
        ("id=node-1.0-42", "id=node-1.0-43"),
        ("ts=1700000000123", "ts=1700000000124"),
        (
            "peer=spiffe://cluster.local/ns/shop/sa/frontend",
            "peer=spiffe://cluster.local/ns/shop/sa/admin",
        ),
        ("peer=spiffe://cluster.local/ns/shop/sa/frontend", "peer=-"),
        ("cfg=9f2c", "cfg=-"),
        ("cfg=9f2c", "cfg=9f2d"),
    ];
    for (from, to) in edits {
        let tampered = header.replacen(from, to, 1);
        assert_ne!(tampered, header);
        assert_eq!(
            verify_header(&tampered, KEY),
            Err(VerifyError::BadSignature),
            "{from} -> {to}"
        );
    }
    let tampered = header.replacen(&cmd, &"ac".repeat(32), 1);
    assert_eq!(
        verify_header(&tampered, KEY),
        Err(VerifyError::BadSignature)
    );
    let (head, sig) = header.rsplit_once(";sig=").unwrap();
    let other_sig = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{head};sig={other_sig}{}", &sig[1..]);
    assert_eq!(
        verify_header(&tampered, KEY),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn the_wrong_key_gives_a_bad_signature() {
    let header = stamp().sign(KEY).unwrap();
    assert_eq!(
        verify_header(&header, OTHER_KEY),
        Err(VerifyError::BadSignature)
    );
    let mut keys: HashMap<String, Vec<u8>> = HashMap::new();
    keys.insert("k0".into(), KEY.to_vec());
    assert_eq!(
        verify_header_with_keys(&header, &keys),
        Err(VerifyError::UnknownKeyId("k1".into()))
    );
    keys.insert("k1".into(), OTHER_KEY.to_vec());
    assert_eq!(
        verify_header_with_keys(&header, &keys),
        Err(VerifyError::BadSignature)
    );
    keys.insert("k1".into(), KEY.to_vec());
    assert_eq!(verify_header_with_keys(&header, &keys), Ok(stamp()));
}

#[test]
fn malformed_headers_get_precise_errors() {
    let header = stamp().sign(KEY).unwrap();
    let sig = header.rsplit_once(";sig=").unwrap().1.to_string();
    let cmd = "ab".repeat(32);
    let with = |field: &str, value: &str| {
        let mut parts: Vec<String> = header.split(';').map(String::from).collect();
        for p in &mut parts {
            if p.starts_with(&format!("{field}=")) {
                *p = format!("{field}={value}");
            }
        }
        parts.join(";")
    };
    let malformed = |m: &str| Err(VerifyError::Malformed(m.into()));
    let cases: Vec<(String, Result<(), VerifyError>)> = vec![
        ("".into(), malformed("the header is empty")),
        ("kid=k1;v=1".into(), malformed("it must start with `v=`, not \"kid=k1\"")),
        (header.replacen("v=1", "v=2", 1), Err(VerifyError::UnknownVersion("2".into()))),
        ("v=".into(), Err(VerifyError::UnknownVersion(String::new()))),
        ("v=1;kid=k1".into(), malformed("the field `id` is missing")),
        (
            header.replacen(";ts=", ";time=", 1),
            malformed("field 4 is \"time\", expected `ts` (fields: v;kid;id;ts;peer;cfg;cmd;sig)"),
        ),
        (
            header.replacen(";id=node-1.0-42;ts=1700000000123", ";ts=1700000000123;id=node-1.0-42", 1),
            malformed("field 3 is \"ts\", expected `id` (fields: v;kid;id;ts;peer;cfg;cmd;sig)"),
        ),
        (header.replacen(";cfg=9f2c", ";cfg", 1), malformed("field 6 (\"cfg\") has no `=`")),
        (format!("{header};x=1"), malformed("unexpected \"x=1\" after `sig`")),
        (with("ts", "01"), malformed("ts \"01\" is not a decimal number of milliseconds")),
        (with("ts", "-1"), malformed("ts \"-1\" is not a decimal number of milliseconds")),
        (
            with("ts", "18446744073709551616"),
            malformed("ts \"18446744073709551616\" is not a decimal number of milliseconds"),
        ),
        (
            with("cmd", &cmd.to_uppercase()),
            malformed(&format!("cmd \"{}\" is not 64 lower-case hex digits", cmd.to_uppercase())),
        ),
        (with("cmd", "abc"), malformed("cmd \"abc\" is not 64 lower-case hex digits")),
        (with("kid", ""), malformed("audit header field `kid`: \"\" is not a key id (letters, digits, `.`, `_`, `-`; 1 to 64 bytes)")),
        (with("id", ""), malformed("audit header field `id`: is empty")),
        (
            with("peer", "a,b"),
            malformed("audit header field `peer`: \"a,b\" contains a character other than visible ASCII, or one of `;` `=` `,`"),
        ),
        (
            with("sig", &format!("{sig}=")),
            malformed(&format!("sig \"{sig}=\" is not 43 characters of unpadded base64url (a 32-byte HMAC-SHA256)")),
        ),
        (
            with("sig", &sig[..40]),
            malformed(&format!("sig \"{}\" is not 43 characters of unpadded base64url (a 32-byte HMAC-SHA256)", &sig[..40])),
        ),
        (
            "v=1;".repeat(MAX_HEADER_LEN / 4 + 1),
            malformed(&format!("{} bytes, over the limit of {MAX_HEADER_LEN}", (MAX_HEADER_LEN / 4 + 1) * 4)),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse_header(&input).map(|_| ()), want, "{input:?}");
        if want.is_err() {
            assert_eq!(verify_header(&input, KEY).map(|_| ()), want);
        }
    }
}

#[test]
fn values_that_would_make_the_header_ambiguous_are_refused_when_signing() {
    let bad = |field: &'static str, problem: &str| {
        Err(StampError::BadField {
            field,
            problem: problem.into(),
        })
    };
    let cases = [
        (
            AuditStamp { id: "a;b".into(), ..stamp() },
            bad("id", "\"a;b\" contains a character other than visible ASCII, or one of `;` `=` `,`"),
        ),
        (AuditStamp { id: String::new(), ..stamp() }, bad("id", "is empty")),
        (
            AuditStamp { id: "x".repeat(257), ..stamp() },
            bad("id", "is longer than 256 bytes"),
        ),
        (
            AuditStamp { peer: Some("spiffe://a/b\nv=2".into()), ..stamp() },
            bad("peer", "\"spiffe://a/b\\nv=2\" contains a character other than visible ASCII, or one of `;` `=` `,`"),
        ),
        (
            AuditStamp { peer: Some("-".into()), ..stamp() },
            bad("peer", "\"-\" is reserved for \"none\" in peer; use None"),
        ),
        (
            AuditStamp { config_fingerprint: Some("a=b".into()), ..stamp() },
            bad("cfg", "\"a=b\" contains a character other than visible ASCII, or one of `;` `=` `,`"),
        ),
        (
            AuditStamp { key_id: "k 1".into(), ..stamp() },
            bad("kid", "\"k 1\" is not a key id (letters, digits, `.`, `_`, `-`; 1 to 64 bytes)"),
        ),
    ];
    for (s, want) in cases {
        assert_eq!(s.sign(KEY).map(|_| ()), want, "{s:?}");
    }
}

#[test]
fn audit_ids_and_tokens_are_header_safe() {
    assert_eq!(audit_id("node-1.0", 7), "node-1.0-7");
    for (input, want) in [
        (
            "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local",
            "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local",
        ),
        ("a b;c=d,e\n", "a_b_c_d_e_"),
        ("é", "__"),
        ("", "_"),
    ] {
        assert_eq!(sanitize_token(input, 64), want);
    }
    assert_eq!(sanitize_token(&"x".repeat(100), 10), "x".repeat(10));
}
