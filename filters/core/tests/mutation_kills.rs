//! Rows written to kill `cargo mutants` survivors in the decision code (see
//! docs/testing.md, "Mutation scores"): each states a behaviour the other
//! tests left open.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use meshguard_core::identity::xfcc::{identity_from_gateway, MAX_XFCC_BYTES};
use meshguard_core::scope::namespace_pattern;
use meshguard_core::spiffe::{SpiffeId, MAX_SPIFFE_ID_LEN};

/// The caller the gateway vouches for, if any (why not is beside the point here).
fn resolve(header: &str, gateway: &SpiffeId, local: Option<&str>) -> Option<SpiffeId> {
    identity_from_gateway(Some(header), gateway, local).ok()
}

const GATEWAY: &str = "spiffe://cluster.local/ns/istio-system/sa/ingress";
const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";
const LOCAL: &str = "spiffe://cluster.local/ns/default/sa/backend";

#[test]
fn only_the_element_this_proxy_appended_for_the_gateway_is_skipped() {
    let gateway = SpiffeId::parse_uri(GATEWAY).unwrap();
    let rows: [(&str, String, Option<&str>, Option<&str>); 4] = [
        (
            "the local element is skipped, the gateway's names the caller",
            format!("By={GATEWAY};URI={FRONTEND},By={LOCAL};URI={GATEWAY}"),
            Some(LOCAL),
            Some(FRONTEND),
        ),
        (
            "a last element by another proxy is not skipped, even if it names the gateway",
            format!(
                "By={GATEWAY};URI={FRONTEND},By=spiffe://cluster.local/ns/x/sa/y;URI={GATEWAY}"
            ),
            Some(LOCAL),
            None,
        ),
        (
            "without the local identity nothing is skipped",
            format!("By={GATEWAY};URI={FRONTEND},By={LOCAL};URI={GATEWAY}"),
            None,
            None,
        ),
        (
            "the local element must name the gateway as its peer",
            format!("By={GATEWAY};URI={FRONTEND},By={LOCAL};URI={FRONTEND}"),
            Some(LOCAL),
            None,
        ),
    ];
    for (what, header, local, want) in rows {
        let got = resolve(&header, &gateway, local);
        assert_eq!(got.as_ref().map(SpiffeId::as_str), want, "{what}");
    }
}

#[test]
fn quoted_values_parse_and_a_stray_quote_is_part_of_the_value() {
    let gateway = SpiffeId::parse_uri(GATEWAY).unwrap();
    let escaped = FRONTEND.replace("frontend", r"front\end");
    let rows: [(&str, String, Option<&str>); 9] = [
        (
            "a backslash escapes the next character inside quotes",
            format!(r#"By={GATEWAY};URI="{escaped}""#),
            Some(FRONTEND),
        ),
        (
            "outside quotes a backslash is a plain character, so the URI is invalid",
            format!("By={GATEWAY};URI={escaped}"),
            None,
        ),
        (
            "only a `URI` key names the caller, never another key's value",
            format!("By={GATEWAY};DNS={FRONTEND}"),
            None,
        ),
        (
            "a pair without `=` makes the header unreadable: trust nothing",
            format!("By={GATEWAY};URI={FRONTEND};junk"),
            None,
        ),
        (
            "a quote inside another pair's value breaks nothing",
            format!(r#"By={GATEWAY};URI={FRONTEND};Subject=a"b"#),
            Some(FRONTEND),
        ),
        (
            "an `=` inside a value is part of the value, so the URI is invalid",
            format!("By={GATEWAY};URI={FRONTEND}="),
            None,
        ),
        (
            "quoted values",
            format!(r#"By="{GATEWAY}";URI="{FRONTEND}""#),
            Some(FRONTEND),
        ),
        (
            "a quote inside an unquoted value is kept, so the URI is invalid",
            format!(r#"By={GATEWAY};URI={FRONTEND}"x"#),
            None,
        ),
        (
            "an unterminated quote trusts nothing",
            format!(r#"By={GATEWAY};URI="{FRONTEND}"#),
            None,
        ),
    ];
    for (what, header, want) in rows {
        let got = resolve(&header, &gateway, None);
        assert_eq!(got.as_ref().map(SpiffeId::as_str), want, "{what}");
    }
}

#[test]
fn a_header_of_exactly_the_byte_limit_is_read() {
    let gateway = SpiffeId::parse_uri(GATEWAY).unwrap();
    let element = format!("By={GATEWAY};URI={FRONTEND}");
    // Padding pairs with empty keys are tolerated (`;;;`).
    let exact = format!("{element}{}", ";".repeat(MAX_XFCC_BYTES - element.len()));
    assert_eq!(exact.len(), MAX_XFCC_BYTES);
    let got = resolve(&exact, &gateway, None);
    assert_eq!(got.as_ref().map(SpiffeId::as_str), Some(FRONTEND));
    let over = format!("{exact};");
    assert_eq!(resolve(&over, &gateway, None), None);
}

#[test]
fn namespace_patterns_accept_dashes_and_wildcards() {
    for ok in ["kube-system", "team-*", "*", "a1-b2"] {
        assert!(namespace_pattern("at", ok).is_ok(), "{ok}");
    }
    for bad in ["Kube", "a_b", "a.b", "a b"] {
        assert!(namespace_pattern("at", bad).is_err(), "{bad}");
    }
}

#[test]
fn a_spiffe_id_of_exactly_the_length_limit_is_valid() {
    let prefix = "spiffe://cluster.local/ns/default/sa/";
    let exact = format!("{prefix}{}", "a".repeat(MAX_SPIFFE_ID_LEN - prefix.len()));
    assert_eq!(exact.len(), MAX_SPIFFE_ID_LEN);
    assert!(SpiffeId::parse_uri(&exact).is_ok());
    assert!(SpiffeId::parse_uri(&format!("{exact}a")).is_err());
}

#[test]
fn a_trust_domain_of_255_characters_is_valid_and_256_is_not() {
    for (len, ok) in [(255, true), (256, false)] {
        let id = format!("spiffe://{}/ns/a/sa/b", "t".repeat(len));
        assert_eq!(SpiffeId::parse_uri(&id).is_ok(), ok, "{len}");
    }
}

#[test]
fn a_spiffe_id_debugs_as_its_uri() {
    let id = SpiffeId::parse_uri(FRONTEND).unwrap();
    assert_eq!(format!("{id:?}"), format!("SpiffeId({FRONTEND})"));
}

#[test]
fn patterns_of_exactly_the_length_limit_are_valid() {
    use meshguard_core::pattern::{PathPattern, StringPattern, MAX_PATTERN_LEN};
    let text = "a".repeat(MAX_PATTERN_LEN);
    assert!(StringPattern::parse(&text).is_ok());
    assert!(StringPattern::parse(&format!("{text}a")).is_err());
    let path = format!("/{}", "a".repeat(MAX_PATTERN_LEN - 1));
    assert!(PathPattern::parse(&path).is_ok());
    assert!(PathPattern::parse(&format!("{path}a")).is_err());
}
