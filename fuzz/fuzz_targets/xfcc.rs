//! `x-forwarded-client-cert` parsing. Line 1 is this proxy's URI SAN, the rest
//! the header. Properties: never panics; a caller it names is a SPIFFE ID that
//! parses again to itself.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshguard_core::identity::xfcc::{identity_from_gateway, peer_certificate_uris};
use meshguard_core::spiffe::SpiffeId;

fn gateway() -> &'static SpiffeId {
    static G: OnceLock<SpiffeId> = OnceLock::new();
    G.get_or_init(|| {
        SpiffeId::parse_uri("spiffe://cluster.local/ns/istio-system/sa/gateway")
            .expect("a valid SPIFFE ID")
    })
}

fuzz_target!(|data: &[u8]| {
    let [local, header] = meshguard_fuzz::fields::<2>(data);
    let local = (!local.is_empty()).then_some(local.as_str());
    if let Ok(id) = identity_from_gateway(Some(&header), gateway(), local) {
        assert_eq!(SpiffeId::parse_uri(id.as_str()).as_ref(), Ok(&id));
    }
    let _ = peer_certificate_uris(Some(&header), gateway().as_str(), local);
});
