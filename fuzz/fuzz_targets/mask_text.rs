//! Text body masking (detectors and regex patterns of
//! examples/masking/pii.json), both directions: never panics; masked text is
//! UTF-8 and no e-mail address survives in the response direction (where
//! the `pii-in-responses` rule masks them) unless it was already there in the
//! replacement text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::identity::RequestInfo;
use meshguard_core::masking::{BodyKind, Detector, Direction};

fuzz_target!(|data: &[u8]| {
    let policy = meshguard_fuzz::masking_policy();
    for (direction, path) in [
        (Direction::Request, "/api/notes"),
        (Direction::Response, "/users/1"),
    ] {
        let request = RequestInfo {
            path,
            method: "POST",
            host: "api",
        };
        let selection = policy.select(direction, None, &request);
        match policy.mask_body(&selection, BodyKind::Text, data) {
            Ok(masked) => {
                if let Some(body) = masked.body {
                    let text = std::str::from_utf8(&body).expect("masked text is UTF-8");
                    if direction == Direction::Response {
                        let left = Detector::Email.find_all(text);
                        assert!(
                            left.is_empty(),
                            "e-mail addresses left at {left:?}: {text:?}"
                        );
                    }
                }
            }
            // Bytes that are not UTF-8, or that read as another charset
            // meshguard cannot write back (docs/masking.md, Charsets).
            Err(e) => assert!(matches!(e.as_code(), "not_utf8" | "charset"), "{e}"),
        }
    }
});
