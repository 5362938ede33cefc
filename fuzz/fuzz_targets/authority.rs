//! `:authority` canonicalization (docs/identity.md, hosts), checked against
//! what a canonical authority means:
//! - canonicalizing a canonical authority changes nothing (idempotence), and
//!   `None` means the input already was canonical;
//! - a canonical host is lower case, has no trailing dot, no userinfo and at
//!   most one port, which is a number in 1..=65535 without leading zeros;
//! - the host rules match (`host_without_port`) is the canonical host itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::request::{canonical_authority, RequestInfo};

fn check(input: &str, canonical: &str) {
    assert_eq!(
        canonical_authority(canonical),
        Ok(None),
        "{input:?} -> {canonical:?} is not a fixed point"
    );
    assert!(!canonical.contains('@'), "{input:?} -> {canonical:?}: userinfo");
    let (host, port) = if canonical.starts_with('[') {
        let end = canonical.find(']').expect("a bracketed literal ends");
        let (host, rest) = canonical.split_at(end + 1);
        (host, rest.strip_prefix(':'))
    } else {
        match canonical.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (canonical, None),
        }
    };
    assert!(!host.ends_with('.'), "{input:?} -> {canonical:?}: trailing dot");
    assert_eq!(host, host.to_ascii_lowercase(), "{input:?}: not lower case");
    if let Some(port) = port {
        let n: u16 = port.parse().expect("a canonical port is a number");
        assert!(n > 0, "{input:?}: port 0");
        assert_eq!(port, n.to_string(), "{input:?}: leading zeros kept");
    }
    let info = RequestInfo {
        path: "/",
        method: "GET",
        host: canonical,
    };
    assert_eq!(info.host_without_port(), host, "{input:?}: rules see another host");
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    match canonical_authority(&input) {
        Ok(Some(canonical)) => check(&input, &canonical),
        Ok(None) if !input.is_empty() => check(&input, &input),
        Ok(None) | Err(_) => {}
    }
});
