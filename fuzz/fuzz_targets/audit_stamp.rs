//! The signed audit header (`x-meshguard-audit`): parsing arbitrary header
//! values never panics; a stamp built from arbitrary fields either is refused
//! when signing or verifies back to itself, and a header edited in any byte
//! no longer verifies as that stamp.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::audit::stamp::parse_header;
use meshguard_core::audit::{verify_header, AuditStamp};

fuzz_target!(|data: &[u8]| {
    let key = meshguard_fuzz::AUDIT_KEY;
    let (sel, rest) = meshguard_fuzz::selector(data);
    let text = String::from_utf8_lossy(rest);
    let _ = parse_header(&text);
    let _ = verify_header(&text, key);

    let [kid, id, peer, cfg] = meshguard_fuzz::fields::<4>(rest);
    let stamp = AuditStamp {
        key_id: kid,
        id,
        ts_ms: u64::from(sel) << 40,
        peer: (!peer.is_empty()).then_some(peer),
        config_fingerprint: (!cfg.is_empty()).then_some(cfg),
        command_sha256: [sel; 32],
    };
    let Ok(header) = stamp.sign(key) else {
        return;
    };
    let verified = verify_header(&header, key).expect("a signed header verifies");
    assert_eq!(verified, stamp);
    // Flip one byte (chosen by the selector) to another visible character.
    let mut edited = header.into_bytes();
    let at = usize::from(sel) % edited.len();
    edited[at] = if edited[at] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).expect("ASCII stays UTF-8");
    if let Ok(other) = verify_header(&edited, key) {
        assert_ne!(
            other, stamp,
            "an edited header verified as the original: {edited}"
        );
    }
});
