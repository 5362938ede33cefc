//! The built-in text detectors over arbitrary text: never panic; the spans
//! they report are in order of start, non-empty, inside the text and on
//! character boundaries (the masker slices the text with them). Spans may
//! overlap (`a@b.c@d.e`); the masker masks their union.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::masking::Detector;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for detector in Detector::ALL {
        let mut previous_start = 0;
        for (start, end) in detector.find_all(&text) {
            assert!(
                previous_start <= start && start < end && end <= text.len(),
                "{detector:?}: span {start}..{end} after one at {previous_start} in {} bytes",
                text.len()
            );
            assert!(
                text.is_char_boundary(start) && text.is_char_boundary(end),
                "{detector:?}: span {start}..{end} splits a character"
            );
            previous_start = start;
        }
    }
});
