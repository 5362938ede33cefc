//! Streamed bodies (server-sent events, JSON Lines, json-seq, text lines)
//! through the gate, cut into chunks the input chooses: never panics, never
//! leaves data held after the end of the stream, and the released bytes do
//! not depend on where the chunks were cut (for the record framings: text
//! is sniffed on its first bytes, so only the first two invariants hold for
//! it).
#![no_main]
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 4] = [
    "text/event-stream",
    "application/x-ndjson",
    "application/json-seq",
    "text/plain",
];

fuzz_target!(|data: &[u8]| {
    let policy = meshguard_fuzz::stream_policy();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[usize::from(pick) % TYPES.len()];
    let chunked = meshguard_fuzz::drive(policy, content_type, &meshguard_fuzz::chunks(rest));
    let body = rest.get(1..).unwrap_or_default();
    let whole = meshguard_fuzz::drive(policy, content_type, &[body]);
    if content_type != "text/plain" {
        assert_eq!(
            chunked, whole,
            "{content_type}: the result depends on the chunks"
        );
    }
});
