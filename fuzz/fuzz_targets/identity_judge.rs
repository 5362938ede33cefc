//! Identity policy evaluation over arbitrary request facts: transport, peer
//! URI SAN, XFCC header, this proxy's URI SAN, path, method, host.
//! Properties: never panics; a rewritten path is canonical (canonicalizing
//! it again changes nothing) and judging the rewritten request gives the
//! same decision.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::identity::{RequestInfo, Transport};
use meshguard_core::path::canonicalize;

fuzz_target!(|data: &[u8]| {
    let (sel, rest) = meshguard_fuzz::selector(data);
    let [tls, uri_san, xfcc, local, path, method, host] = meshguard_fuzz::fields::<7>(rest);
    let mtls = match sel % 3 {
        0 => None,
        1 => Some(true),
        _ => Some(false),
    };
    let tls = (sel & 4 != 0).then_some(tls.as_str());
    let uri_san = (sel & 8 != 0).then_some(uri_san.as_str());
    let xfcc = (sel & 16 != 0).then(|| xfcc.clone());
    let local = (sel & 32 != 0).then(|| local.clone());
    let policy = meshguard_fuzz::identity_policy();
    let request = RequestInfo {
        path: &path,
        method: &method,
        host: &host,
    };
    let judge = |request: &RequestInfo<'_>| {
        policy.judge(
            Transport::from_host(mtls, tls, uri_san),
            || (xfcc.clone(), local.clone()),
            request,
        )
    };
    let first = judge(&request);
    if let Some(forwarded) = &first.forwarded_path {
        assert_eq!(
            canonicalize(forwarded, policy.path_options()),
            Ok(None),
            "the forwarded path {forwarded:?} is not canonical"
        );
        let again = judge(&RequestInfo {
            path: forwarded,
            ..request
        });
        assert_eq!(
            again.decision, first.decision,
            "path {path:?} -> {forwarded:?}"
        );
    }
});
