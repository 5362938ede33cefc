//! Text in a declared or sniffed charset (a BOM, `charset=`, NUL-interleaved
//! UTF-16): never panics; a text in which nothing is masked is forwarded as
//! it is (decoding and encoding back round-trip); a masked one is written
//! back in the same encoding (UTF-16 stays NUL-interleaved, even-length).
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::masking::{BodyKind, Direction};
use meshguard_core::request::RequestInfo;

const CHARSETS: [Option<&str>; 7] = [
    None,
    Some("utf-8"),
    Some("utf-16"),
    Some("utf-16le"),
    Some("iso-8859-1"),
    Some("windows-1252"),
    Some("shift_jis"),
];

fuzz_target!(|data: &[u8]| {
    let policy = meshguard_fuzz::stream_policy();
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let charset = CHARSETS[usize::from(pick) % CHARSETS.len()];
    let request = RequestInfo {
        path: "/",
        method: "POST",
        host: "api",
    };
    let selection = policy.select(Direction::Request, None, &request);
    for kind in [BodyKind::Text, BodyKind::Json] {
        if let Ok(masked) = policy.mask_body_in(&selection, kind, charset, body) {
            match masked.body {
                None => {}
                Some(out) => {
                    assert!(
                        !masked.hits.is_empty() || masked.scanned_bytes || out != body,
                        "changed without a hit"
                    );
                    if matches!(charset, Some("utf-16" | "utf-16le")) {
                        assert_eq!(out.len() % 2, 0, "UTF-16 written back with an odd length");
                    }
                }
            }
        }
    }
});
