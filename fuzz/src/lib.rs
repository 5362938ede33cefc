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
