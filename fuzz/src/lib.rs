//! Shared pieces of the fuzz targets: the fixed policies request-level targets
//! run under, and the splitter that turns one fuzz input into request fields.
//!
//! The policies are the repository's own examples, so the targets exercise
//! the configurations users start from. A policy that no longer compiles is a
//! crash on the first input, never a silently useless target.

#![allow(clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use meshguard_core::audit::AuditPolicy;
use meshguard_core::identity::IdentityPolicy;
use meshguard_core::masking::MaskingPolicy;

pub const IDENTITY_POLICY: &[u8] = include_bytes!("../../examples/identity/strict.json");
pub const MASKING_POLICY: &[u8] = include_bytes!("../../examples/masking/pii.json");
pub const AUDIT_POLICY: &[u8] = include_bytes!("../../examples/audit/body-commands.json");
/// The masking hash key the targets use (any bytes: only determinism matters).
pub const HASH_KEY: &[u8] = b"fuzz-hash-key-0123456789abcdef";
/// The audit HMAC key the targets use.
pub const AUDIT_KEY: &[u8] = b"fuzz-audit-key-0123456789abcdef";

pub fn identity_policy() -> &'static IdentityPolicy {
    static P: OnceLock<IdentityPolicy> = OnceLock::new();
    P.get_or_init(|| {
        IdentityPolicy::from_json(IDENTITY_POLICY).expect("examples/identity/strict.json compiles")
    })
}

pub fn masking_policy() -> &'static MaskingPolicy {
    static P: OnceLock<MaskingPolicy> = OnceLock::new();
    P.get_or_init(|| {
        MaskingPolicy::from_json(MASKING_POLICY, Some(HASH_KEY))
            .expect("examples/masking/pii.json compiles")
    })
}

/// The policy the stream, multipart and charset targets run under: every
/// selector kind, binary parts passed (so parsing goes on past them), small
/// records (so the bounds are reached).
pub const STREAM_POLICY: &[u8] = br#"{
  "max_record_bytes": 512, "max_body_bytes": 4096, "on_binary_part": "pass",
  "on_malformed_json": "mask_as_text", "on_not_utf8": "mask_bytes",
  "rules": [
    {"name": "names", "json_keys": ["password"], "json_paths": ["/meta/ssn"]},
    {"name": "found", "detectors": ["email", "card", "us_ssn", "phone", "private_key"]},
    {"name": "dropped", "json_keys": ["drop"], "strategy": "remove"}
  ]
}"#;

pub fn stream_policy() -> &'static MaskingPolicy {
    static P: OnceLock<MaskingPolicy> = OnceLock::new();
    P.get_or_init(|| {
        MaskingPolicy::from_json(STREAM_POLICY, None).expect("the stream policy compiles")
    })
}

/// Drives one message through a masking gate as a host would: the headers
/// (with `content_type`), `chunks` (the last ending the stream), releasing
/// what the gate lets through. Returns what left, or `None` when the gate
/// refused; asserts that nothing stays held once the stream ended.
pub fn drive(policy: &MaskingPolicy, content_type: &str, chunks: &[&[u8]]) -> Option<Vec<u8>> {
    use meshguard_core::masking::{Direction, Gate, Verdict};
    use meshguard_core::request::RequestInfo;
    let request = RequestInfo {
        path: "/upload",
        method: "POST",
        host: "api",
    };
    let selection = policy.select(Direction::Request, None, &request);
    let headers = vec![("content-type".to_owned(), content_type.to_owned())];
    let (mut gate, step) = Gate::headers(
        policy,
        Direction::Request,
        selection,
        &headers,
        false,
        false,
    );
    if matches!(step.verdict, Verdict::Refuse { .. }) {
        return None;
    }
    let mut held: Vec<u8> = Vec::new();
    let mut released = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        held.extend_from_slice(chunk);
        let end = i + 1 == chunks.len();
        let copy = held.clone();
        let (verdict, _) = gate.body(policy, held.len(), end, || copy);
        match verdict {
            Verdict::Hold => assert!(!end, "data held after the end of the stream"),
            Verdict::HoldReplaced(bytes) => {
                assert!(!end, "data held after the end of the stream");
                held = bytes;
            }
            Verdict::Continue => released.append(&mut held),
            Verdict::Replace(bytes) => {
                released.extend_from_slice(&bytes);
                held.clear();
            }
            Verdict::Refuse { .. } => return None,
        }
    }
    assert!(held.is_empty(), "data held after the end of the stream");
    Some(released)
}

/// Cuts `data` into chunks at the offsets its first byte seeds (1 to 8 cuts).
pub fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let Some((&seed, body)) = data.split_first() else {
        return vec![data];
    };
    let cuts = usize::from(seed % 8) + 1;
    let mut out = Vec::new();
    let mut rest = body;
    for k in 0..cuts {
        let at = (usize::from(seed).wrapping_mul(31).wrapping_add(k * 97)) % (rest.len() + 1);
        let (head, tail) = rest.split_at(at);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

pub fn audit_policy() -> &'static AuditPolicy {
    static P: OnceLock<AuditPolicy> = OnceLock::new();
    P.get_or_init(|| {
        AuditPolicy::from_json(AUDIT_POLICY).expect("examples/audit/body-commands.json compiles")
    })
}

/// Splits `data` into `N` text fields separated by `\n` (the host hands
/// attributes over as lossily decoded strings, so this is what filters see).
/// Missing fields are empty; the last field keeps any further `\n`.
pub fn fields<const N: usize>(data: &[u8]) -> [String; N] {
    let text = String::from_utf8_lossy(data);
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    let mut rest = text.as_ref();
    for (i, slot) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *slot = rest.to_string();
            break;
        }
        match rest.split_once('\n') {
            Some((head, tail)) => {
                *slot = head.to_string();
                rest = tail;
            }
            None => {
                *slot = rest.to_string();
                rest = "";
            }
        }
    }
    out
}

/// The first byte as a selector and the rest, for targets with variants.
pub fn selector(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (b, rest),
        None => (0, data),
    }
}
