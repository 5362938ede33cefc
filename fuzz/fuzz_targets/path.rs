//! Request path canonicalization, differentially checked against what a
//! canonical path means (docs/identity.md, "Canonical request paths"): for
//! every mode that normalizes,
//! - canonicalizing a canonical path changes nothing (idempotence);
//! - no segment is a dot segment (`.`/`..`, also before a `;` parameter), so
//!   no upstream resolves it above or beside what rules matched;
//! - in the slash-merging modes there is no empty segment (`//`);
//! - no `%XX` escapes an unreserved character, every `%` starts an
//!   upper-case escape, and there is no `\`;
//! - the query is forwarded byte for byte;
//! - the path rules match ([`match_path`]) carries no `;` parameter and no
//!   dot segment, and is a fixed point.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::path::{canonicalize, match_path, PathNormalization, PathOptions};

const MODES: [PathNormalization; 4] = [
    PathNormalization::None,
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_canonical(target: &str, canonical: &str, mode: PathNormalization) {
    let (path, query) = match canonical.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (canonical, None),
    };
    assert_eq!(
        query,
        target.split_once('?').map(|(_, q)| q),
        "query changed"
    );
    assert!(
        path.starts_with('/'),
        "{target:?} -> {canonical:?}: not origin form"
    );
    assert!(
        !path.contains('\\'),
        "{target:?} -> {canonical:?}: backslash"
    );
    let merges = matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    );
    for segment in path.split('/').skip(1) {
        let base = segment.split(';').next().unwrap_or("");
        assert!(
            base != "." && base != "..",
            "{target:?} -> {canonical:?}: dot segment {segment:?} ({mode:?})"
        );
    }
    if merges {
        assert!(
            !path.contains("//"),
            "{target:?} -> {canonical:?}: `//` ({mode:?})"
        );
    }
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                panic!("{target:?} -> {canonical:?}: `%` without upper-case escape ({mode:?})");
            };
            assert!(
                !is_unreserved(hi << 4 | lo),
                "{target:?} -> {canonical:?}: escaped unreserved character ({mode:?})"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let target = String::from_utf8_lossy(data);
    for mode in MODES {
        for case_insensitive in [false, true] {
            let options = PathOptions {
                normalization: mode,
                case_insensitive,
            };
            let Ok(rewritten) = canonicalize(&target, &options) else {
                continue;
            };
            if target == "*" {
                continue;
            }
            let canonical = rewritten.as_deref().unwrap_or(&target);
            assert_eq!(
                canonicalize(canonical, &options),
                Ok(None),
                "{target:?} -> {canonical:?} is not a fixed point ({mode:?})"
            );
            if mode == PathNormalization::None {
                continue;
            }
            check_canonical(&target, canonical, mode);
            let matched = match_path(canonical, mode);
            assert!(
                !matched.contains(';'),
                "{canonical:?} matched as {matched:?}"
            );
            assert_eq!(
                match_path(&matched, mode),
                matched,
                "match_path not idempotent"
            );
            for segment in matched.split('/').skip(1) {
                assert!(
                    segment != "." && segment != "..",
                    "{canonical:?} matched as {matched:?}"
                );
            }
        }
    }
    // The raw-path view never panics either.
    for mode in MODES {
        let _ = match_path(&target, mode);
    }
});
