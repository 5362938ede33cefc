//! Canonical JSON is RFC 8785 (JCS): checked against a JCS library nobody
//! here wrote (`serde_json_canonicalizer`), with the fingerprints of every
//! example config pinned from before the switch (they did not change), and
//! with the filter, the CLI's `fingerprint` and the signer refusing the same
//! configs: integers beyond 2^53 and repeated keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use ed25519_dalek::SigningKey;
use meshguard_core::audit::AuditPolicy;
use meshguard_core::canonical::to_canonical_bytes;
use meshguard_core::integrity::{self, IntegrityEnv, Release};
use meshguard_core::plugin::{section_fingerprints, Shape};
use serde_json::{json, Number, Value};

/// An example config, read at compile time (the wasm32 run has no file
/// system to read it from).
macro_rules! example {
    ($path:literal) => {
        ($path, include_bytes!(concat!("../../../", $path)) as &[u8])
    };
}

/// Fingerprints computed by the canonical form this project used before
/// RFC 8785 (sorted UTF-8 keys, serde_json's numbers): every config a filter
/// accepts kept its fingerprint (docs/masking.md quotes one; the combined
/// examples' were computed by the previous `meshguard fingerprint`).
const PINNED: [((&str, &[u8]), &str); 10] = [
    (
        example!("examples/demo/meshguard.json"),
        "1827df8a22e3bad2ce700438f604b8e4ebbd7ee908b753e68179e665341acb41",
    ),
    (
        example!("examples/identity/strict.json"),
        "21a395b6ba7c6c330f6a3102a324571abc086d094b2f693a3d94fae24ffe08a9",
    ),
    (
        example!("examples/identity/dry-run.json"),
        "f5af14a65a6abd89d10d274c579ab82d31482557c6155ab02a16db14a2251c77",
    ),
    (
        example!("examples/audit/commands.json"),
        "03a56f78ee3b2dde4a26708bd709d55a05dbf2935da6c110d922f3c0fb92cc23",
    ),
    (
        example!("examples/audit/body-commands.json"),
        "6600b886afa54ac63c43eb3300cd4639c14fbca74b023a8f64c8b61c8a6acad1",
    ),
    (
        example!("examples/masking/every-shape.json"),
        "1dd03f02a4aeee4e5f48758c101cc778a4b760ba6ca4dedbe2a582cdc7d96e2e",
    ),
    (
        example!("examples/masking/pii.json"),
        "59316acdd300e1e8648d88782fbdad1f9010462e90cf6ef73155b074571cd9ac",
    ),
    (
        example!("examples/masking/dry-run.json"),
        "c26cb649516de59f96687ff275c15c945d039c48495c5c4bcfdedc03be0341fe",
    ),
    (
        example!("examples/meshguard/body-commands.json"),
        "fd5fc118ebdf3fa7a5c08d5985a5f7b7012ddb6f849fc390d9fdee5143e949d8",
    ),
    (
        example!("examples/meshguard/combined.json"),
        "fcc2f93a9cc754d66f11f4aab3af59457754e5004713b5fed83c285bf53eba63",
    ),
];

fn jcs(value: &Value) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(value).unwrap()
}

#[test]
fn every_example_config_keeps_its_fingerprint() {
    for ((file, bytes), want) in PINNED {
        assert_eq!(integrity::fingerprint(bytes).unwrap(), want, "{file}");
        // ...and is what any JCS library writes for it.
        let value: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(to_canonical_bytes(&value).unwrap(), jcs(&value), "{file}");
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Bits(u64);

impl Bits {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn doubles_are_written_as_a_jcs_library_writes_them() {
    // Broken by hand: with `-6 < point` changed to `-7 < point` in
    // write_double (1e-7 written 0.0000001), this fails.
    let mut bits = Bits(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    while checked < 50_000 {
        let raw = bits.next();
        // Random bit patterns, and random values of every decimal magnitude.
        let candidates = [
            f64::from_bits(raw),
            (raw % 1_000_000_007) as f64 / 10f64.powi((raw >> 40) as i32 % 20),
        ];
        for f in candidates {
            if !f.is_finite() || f.abs() > 9_007_199_254_740_991.0 {
                continue;
            }
            let value = Value::Number(Number::from_f64(f).unwrap());
            assert_eq!(
                String::from_utf8(to_canonical_bytes(&value).unwrap()).unwrap(),
                String::from_utf8(jcs(&value)).unwrap(),
                "{f:e} ({:#x})",
                f.to_bits()
            );
            checked += 1;
        }
    }
}

#[test]
fn strings_and_keys_are_written_and_ordered_as_a_jcs_library_does() {
    // Every control character, quote and backslash, DEL, U+2028, non-BMP
    // characters, and keys whose UTF-8 and UTF-16 orders differ.
    let mut text = String::new();
    for c in (0u32..0x80).chain([0x7f, 0xe9, 0x2028, 0xfb01, 0xffff, 0x1f600]) {
        text.push(char::from_u32(c).unwrap());
    }
    let value = json!({
        "text": text,
        "\u{1F600}": [1, -2, 0.5, true, null, {"\u{FB01}": "x", "\u{E000}": "y", "\u{10000}": "z"}],
        "\u{FB01}": {},
        "Z": "upper",
        "a": "lower",
        "": "empty key",
        "\u{e9}": [],
    });
    assert_eq!(to_canonical_bytes(&value).unwrap(), jcs(&value));
}

const KEY_SEED: [u8; 32] = [7; 32];

/// What each path that computes a fingerprint says about `config`: the
/// filter's load, `meshguard fingerprint`, `meshguard sign`, the per-section
/// fingerprints, and the audit policy's own fingerprint.
fn verdicts(config: &str) -> [Result<String, String>; 4] {
    let bytes = config.as_bytes();
    let loaded = integrity::load(bytes, &IntegrityEnv::default())
        .map(|l| l.fingerprint)
        .map_err(|e| e.to_string());
    let fingerprint = integrity::fingerprint(bytes).map_err(|e| e.to_string());
    let release = Release {
        filter: "meshguard".into(),
        workloads: vec!["*".into()],
        serial: 1,
        not_before: None,
        not_after: None,
        services: None,
    };
    let signed = integrity::sign_release(bytes, &release, "k", &SigningKey::from_bytes(&KEY_SEED))
        .map(|_| "signed".to_owned())
        .map_err(|e| e.to_string());
    let sections = section_fingerprints(bytes, Shape::Combined)
        .map(|s| format!("{s:?}"))
        .map_err(|e| e.to_string());
    [loaded, fingerprint, signed, sections]
}

#[test]
fn big_integers_and_repeated_keys_are_refused_by_the_filter_the_cli_and_the_signer_alike() {
    // Broken by hand: without the 2^53 check in write_number, the first two
    // rows are accepted, and with equal fingerprints (serde_json reads both
    // literals as the same double).
    for config in [
        r#"{"audit": {"key_id": "k", "max_body_bytes": 18446744073709551617}}"#,
        r#"{"audit": {"key_id": "k", "max_body_bytes": 18446744073709551618}}"#,
        r#"{"audit": {"key_id": "k", "max_body_bytes": 9007199254740993}}"#,
        r#"{"audit": {"key_id": "k", "max_body_bytes": -9007199254740993}}"#,
        r#"{"audit": {"key_id": "k", "max_body_bytes": 1e300}}"#,
    ] {
        for (i, verdict) in verdicts(config).into_iter().enumerate() {
            let error = verdict.expect_err(config);
            assert!(error.contains("out of range"), "{config} [{i}]: {error}");
        }
    }
    for config in [
        r#"{"audit": {"key_id": "k", "key_id": "k"}}"#,
        r#"{"audit": {"key_id": "a"}, "audit": {"key_id": "b"}}"#,
    ] {
        for (i, verdict) in verdicts(config).into_iter().enumerate() {
            let error = verdict.expect_err(config);
            assert!(error.contains("duplicate key"), "{config} [{i}]: {error}");
        }
    }
    // The audit policy's own fingerprint reads the config the same way.
    assert!(AuditPolicy::from_json(br#"{"key_id": "k", "key_id": "k"}"#).is_err());
    let single = r#"{"key_id": "k", "max_body_bytes": 4096}"#;
    assert_eq!(
        AuditPolicy::from_json(single.as_bytes())
            .unwrap()
            .config_fingerprint(),
        integrity::fingerprint(single.as_bytes()).ok().as_deref()
    );
    // Within range, every path agrees and distinct values stay distinct.
    let a = verdicts(r#"{"audit": {"key_id": "k", "max_body_bytes": 9007199254740991}}"#);
    let b = verdicts(r#"{"audit": {"key_id": "k", "max_body_bytes": 9007199254740990}}"#);
    assert!(a.iter().all(Result::is_ok), "{a:?}");
    assert_ne!(a[0], b[0]);
    assert_eq!(a[0], a[1]);
}
