//! Audit request canonicalization and command hashing under
//! examples/audit/body-commands.json. Differential properties:
//! - the hash does not depend on how the body is chunked;
//! - canonical forms are fixed points: re-sending the request with its
//!   method, path and query in canonical form (a decode–encode round trip)
//!   gives the same hash;
//! - for commands that hash JSON values (not raw body bytes), re-encoding
//!   the JSON body gives the same hash.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::audit::canon::{canonical_method, canonical_path, canonical_query};
use meshguard_core::audit::hash::parse_strict_json;
use meshguard_core::audit::Part;
use meshguard_core::identity::RequestInfo;

fuzz_target!(|data: &[u8]| {
    let (sel, rest) = meshguard_fuzz::selector(data);
    let [method, target, host, body] = meshguard_fuzz::fields::<4>(rest);
    let body = body.as_bytes();
    let policy = meshguard_fuzz::audit_policy();
    let request = RequestInfo {
        path: &target,
        method: &method,
        host: &host,
    };
    let command = policy.command_for(&request);
    let whole = policy.command_hash(command, &request, body);

    // Any two chunks.
    let split = usize::from(sel).min(body.len());
    let mut hasher = policy.hasher(command, &request);
    let chunked = if policy.needs_body(command) {
        let (a, b) = body.split_at(split);
        hasher
            .update_body(a)
            .and_then(|()| hasher.update_body(b))
            .and_then(|()| hasher.finish())
    } else {
        hasher.finish()
    };
    assert_eq!(whole, chunked, "chunking at {split} changed the hash");

    // Canonical method, path and query hash as the original did.
    let query = canonical_query(&target);
    let mut canonical_target = canonical_path(&target);
    if !query.is_empty() {
        canonical_target.push('?');
        canonical_target.push_str(&query);
    }
    let canonical_method = canonical_method(&method);
    let canonical = RequestInfo {
        path: &canonical_target,
        method: &canonical_method,
        host: &host,
    };
    assert_eq!(
        policy.command_hash(command, &canonical, body),
        whole,
        "{method:?} {target:?} hashed differently from {canonical_method:?} {canonical_target:?}"
    );

    // JSON values hash by value, not by spelling.
    let hashes_raw_body = policy.command_parts(command).contains(&Part::Body);
    if !hashes_raw_body && policy.needs_body(command) {
        if let Ok(value) = parse_strict_json(body) {
            let reencoded = value.canonical();
            assert_eq!(
                policy.command_hash(command, &request, &reencoded),
                whole,
                "re-encoding the JSON body changed the hash"
            );
        }
    }
});
