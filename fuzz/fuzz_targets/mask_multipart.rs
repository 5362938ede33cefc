//! Multipart bodies through the gate, cut into chunks the input chooses:
//! never panics, never leaves data held after the end of the stream, and
//! the released bytes do not depend on where the chunks were cut. A body
//! whose parts need nothing masked leaves byte for byte.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = meshguard_fuzz::stream_policy();
    let content_type = "multipart/form-data; boundary=XyZ";
    let chunked = meshguard_fuzz::drive(policy, content_type, &meshguard_fuzz::chunks(data));
    let body = data.get(1..).unwrap_or_default();
    let whole = meshguard_fuzz::drive(policy, content_type, &[body]);
    assert_eq!(chunked, whole, "the result depends on the chunks");
});
