//! SPIFFE ID parsing (URI SANs and config principals). Properties: never
//! panics; a parsed ID round-trips through its text form, and its parts
//! are consistent with it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::spiffe::{
    check_prefix, normalize_principal_text, parse_trust_domain, SpiffeId,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = SpiffeId::parse_uri(&text) {
        assert_eq!(SpiffeId::parse_uri(id.as_str()).as_ref(), Ok(&id));
        assert!(id.as_str().contains(id.trust_domain()));
        let _ = (id.namespace(), id.service_account(), id.path());
    }
    if let Ok(id) = SpiffeId::parse_config(&text) {
        assert_eq!(SpiffeId::parse_uri(id.as_str()).as_ref(), Ok(&id));
    }
    let normalized = normalize_principal_text(&text);
    assert_eq!(
        normalize_principal_text(&normalized),
        normalized,
        "not idempotent"
    );
    let _ = check_prefix(&text);
    let _ = parse_trust_domain(&text);
});
