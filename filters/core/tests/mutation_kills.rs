//! Rows written to kill `cargo mutants` survivors in the decision code (see
//! docs/testing.md, "Mutation scores"): each states a behaviour the other
//! tests left open.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use meshguard_core::identity::xfcc::{
    identity_from_gateway, GatewayIdentityError, MAX_XFCC_BYTES, MAX_XFCC_ELEMENTS,
};
use meshguard_core::identity::{IdentityPolicy, Mode, Peer, Reason, Transport};
use meshguard_core::masking::Detector;
use meshguard_core::path::{PathNormalization, PathOptions};
use meshguard_core::request::RequestInfo;
use meshguard_core::scope::{compile_scope, namespace_pattern, RequestView, ScopeLists};
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
fn a_scope_compiled_with_the_default_options_restricts_to_its_lists() {
    let paths = Some(vec!["/admin/*".to_string()]);
    let methods = Some(vec!["post".to_string()]);
    let hosts = Some(vec!["*.internal".to_string()]);
    let none = None;
    let lists = |paths| ScopeLists {
        paths,
        not_paths: &none,
        methods: &methods,
        not_methods: &none,
        hosts: &hosts,
        not_hosts: &none,
    };
    let scope = compile_scope("rules[0]", lists(&paths)).unwrap();
    let view = |method, path, host| RequestView::of(&RequestInfo { path, method, host });
    for (method, path, host, within) in [
        ("POST", "/admin/users?x=1", "db.internal:8080", true),
        ("post", "/admin/users", "db.internal", true),
        ("POST", "/public", "db.internal", false),
        ("GET", "/admin/users", "db.internal", false),
        ("POST", "/admin/users", "db.example", false),
    ] {
        assert_eq!(
            scope.matches(&view(method, path, host)),
            within,
            "{method} {path} {host}"
        );
    }
    // A pattern no canonical path can match is refused, not compiled away.
    let dotted = Some(vec!["/a/../admin/*".to_string()]);
    assert!(compile_scope("rules[0]", lists(&dotted)).is_err());
}

#[test]
fn xfcc_bounds_hold_exactly_at_their_limits() {
    let gateway = SpiffeId::parse_uri(GATEWAY).unwrap();
    let element = format!("By={GATEWAY};URI={FRONTEND}");
    // One byte over the limit is not read, however well formed.
    let over = format!(
        "{element}{}",
        ";".repeat(MAX_XFCC_BYTES + 1 - element.len())
    );
    assert_eq!(over.len(), MAX_XFCC_BYTES + 1);
    assert_eq!(resolve(&over, &gateway, None), None);
    // Exactly MAX_XFCC_ELEMENTS elements are read; one more is not.
    let other = "By=spiffe://cluster.local/ns/a/sa/b;URI=spiffe://cluster.local/ns/a/sa/c";
    let with_elements = |n: usize| {
        let mut parts = vec![other; n - 1];
        parts.push(&element);
        parts.join(",")
    };
    let at_limit = with_elements(MAX_XFCC_ELEMENTS);
    let got = resolve(&at_limit, &gateway, None);
    assert_eq!(got.as_ref().map(SpiffeId::as_str), Some(FRONTEND));
    assert_eq!(
        resolve(&with_elements(MAX_XFCC_ELEMENTS + 1), &gateway, None),
        None
    );
    // URIs per element: any count above one names no usable identity, up to
    // the kept maximum and past it.
    for uris in [2, 4, 5, 6] {
        let header = format!(
            "By={GATEWAY}{}",
            (0..uris)
                .map(|i| format!(";URI=spiffe://cluster.local/ns/default/sa/u{i}"))
                .collect::<String>()
        );
        assert_eq!(
            identity_from_gateway(Some(&header), &gateway, None).err(),
            Some(GatewayIdentityError::SeveralUris),
            "{uris} URIs"
        );
    }
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

/// The identity warnings about deny rules a caller without identity escapes.
fn identity_warnings(policy: &str) -> Vec<String> {
    IdentityPolicy::from_json(policy.as_bytes())
        .unwrap()
        .warnings()
        .iter()
        .filter(|w| w.contains("denies by peer identity"))
        .cloned()
        .collect()
}

#[test]
fn only_deny_rules_on_a_positive_identity_condition_warn_about_anonymous_callers() {
    let plaintext = r#"{"transport": {"require_mtls": false}, "rules": [RULE]}"#;
    let anonymous =
        r#"{"identity": {"on_unusable_identity": "treat_as_anonymous"}, "rules": [RULE]}"#;
    let rows = [
        (
            "a deny rule on principals warns",
            r#"{"name": "r", "action": "deny", "principals": ["cluster.local/ns/a/sa/b"]}"#,
            1,
        ),
        (
            "an allow rule on principals does not",
            r#"{"name": "r", "action": "allow", "principals": ["cluster.local/ns/a/sa/b"]}"#,
            0,
        ),
        (
            "a deny rule without an identity condition does not",
            r#"{"name": "r", "action": "deny", "methods": ["DELETE"]}"#,
            0,
        ),
        (
            "a deny rule on not_namespaces only does not",
            r#"{"name": "r", "action": "deny", "not_namespaces": ["a"]}"#,
            0,
        ),
    ];
    for (what, rule, want) in rows {
        for base in [plaintext, anonymous] {
            let got = identity_warnings(&base.replace("RULE", rule));
            assert_eq!(got.len(), want, "{what} ({base}): {got:?}");
        }
    }
}

#[test]
fn a_glob_whose_first_segment_has_a_wildcard_is_checked_for_every_path() {
    let policy = IdentityPolicy::from_json(
        br#"{"transport": {"require_mtls": false}, "default_action": "allow",
             "rules": [{"name": "versioned-admin", "action": "deny", "paths": ["/v*/admin/**"]},
                       {"name": "literal", "action": "deny", "paths": ["/internal/*/secret"]}]}"#,
    )
    .unwrap();
    let peer = Peer::from_certificate(Transport::from_host(Some(false), None, None));
    let rows = [
        ("/v1/admin/users", Reason::DeniedByRule),
        ("/v2/admin", Reason::DeniedByRule),
        ("/internal/x/secret", Reason::DeniedByRule),
        ("/v1/public", Reason::DefaultAllow),
        ("/admin/v1", Reason::DefaultAllow),
    ];
    for (path, want) in rows {
        let request = RequestInfo {
            path,
            method: "GET",
            host: "svc",
        };
        assert_eq!(policy.evaluate(&peer, &request).reason, want, "{path}");
    }
}

#[test]
fn a_compiled_identity_policy_reports_what_it_was_configured_with() {
    let configured = IdentityPolicy::from_json(
        br#"{"config_version": "v7", "mode": "dry-run",
             "path_normalization": "BASE", "path_case_insensitive": true,
             "deny_response": {"status": 451},
             "identity": {"trusted_gateways": ["cluster.local/ns/istio-system/sa/ingress"]},
             "rules": [{"name": "a", "action": "allow", "paths": ["/a"]},
                       {"name": "b", "action": "allow", "paths": ["/b"]}]}"#,
    )
    .unwrap();
    assert_eq!(configured.config_version(), Some("v7"));
    assert_eq!(configured.mode(), Mode::DryRun);
    assert_eq!(
        *configured.path_options(),
        PathOptions {
            normalization: PathNormalization::Base,
            case_insensitive: true
        }
    );
    assert_eq!(configured.deny_status(), 451);
    assert_eq!(configured.rule_count(), 2);
    assert!(configured.has_trusted_gateways());

    let defaults = IdentityPolicy::from_json(b"{}").unwrap();
    assert_eq!(defaults.config_version(), None);
    assert_eq!(defaults.mode(), Mode::Enforce);
    assert_eq!(defaults.deny_status(), 403);
    assert_eq!(defaults.rule_count(), 0);
    assert!(!defaults.has_trusted_gateways());
}

#[test]
fn a_detector_names_itself_as_the_configuration_spells_it() {
    for detector in Detector::ALL {
        let parsed: Detector =
            serde_json::from_value(serde_json::json!(detector.as_str())).unwrap();
        assert_eq!(parsed, detector, "{}", detector.as_str());
    }
}

/// The texts `detector` finds in `text`, in order.
fn found(detector: Detector, text: &str) -> Vec<&str> {
    detector
        .find_all(text)
        .into_iter()
        .map(|(start, end)| &text[start..end])
        .collect()
}

#[test]
fn a_separated_card_is_made_of_groups_of_at_least_three_digits() {
    let rows: [(&str, &str, &[&str]); 3] = [
        (
            "groups of exactly three digits are groups",
            "378 282 246 310 005",
            &["378 282 246 310 005"],
        ),
        (
            "two-digit groups after the first are not",
            "4111 11 11 11 11 11 11",
            &[],
        ),
        (
            "nor is a two-digit first group, wherever the run starts",
            "card 41 1111 1111 111 111",
            &[],
        ),
    ];
    for (what, text, want) in rows {
        assert_eq!(found(Detector::Card, text), want, "{what}");
    }
}

#[test]
fn an_email_domain_is_at_most_253_characters_in_labels_of_at_most_63() {
    let label = |c: &str, n: usize| c.repeat(n);
    let domain_253 = format!(
        "{}.{}.{}.{}",
        label("a", 63),
        label("b", 63),
        label("c", 63),
        label("d", 61)
    );
    let domain_254 = format!("{domain_253}d");
    assert_eq!(domain_253.len(), 253);
    let exact = format!("x@{domain_253}");
    let rows: [(&str, String, bool); 4] = [
        (
            "a 253-character domain of 63-character labels",
            exact.clone(),
            true,
        ),
        ("a 254-character domain", format!("x@{domain_254}"), false),
        (
            "a 64-character label",
            format!("x@{}.com", label("a", 64)),
            false,
        ),
        (
            "a 63-character label",
            format!("x@{}.com", label("a", 63)),
            true,
        ),
    ];
    for (what, text, matched) in rows {
        let want: Vec<&str> = if matched { vec![&text] } else { vec![] };
        assert_eq!(found(Detector::Email, &text), want, "{what}");
    }
}

#[test]
fn an_ssn_is_exactly_three_two_four_digits_with_no_dash_digit_around_it() {
    let rows: [(&str, &str, &[&str]); 7] = [
        (
            "three digits first, not two and a letter",
            "12a-45-6789",
            &[],
        ),
        ("not six digits then four", "123456-7890", &[]),
        ("not eleven digits", "12345678901", &[]),
        (
            "a digit two places before is not a continuation",
            "1 078-05-1120",
            &["078-05-1120"],
        ),
        (
            "a dash before without a digit is not either",
            "x-078-05-1120",
            &["078-05-1120"],
        ),
        (
            "a digit after a space is not a continuation",
            "078-05-1120 5",
            &["078-05-1120"],
        ),
        (
            "a dash after without a digit is not either",
            "078-05-1120-x",
            &["078-05-1120"],
        ),
    ];
    for (what, text, want) in rows {
        assert_eq!(found(Detector::UsSsn, text), want, "{what}");
    }
}

#[test]
fn an_iban_has_its_shape_length_and_boundaries_in_either_form() {
    let rows: [(&str, &str, &[&str]); 7] = [
        (
            "34 characters in groups is the longest IBAN (a country outside the registry)",
            "ZZ44 WEST 1234 5678 9012 3456 7890 1234 56",
            &["ZZ44 WEST 1234 5678 9012 3456 7890 1234 56"],
        ),
        (
            "a registry country's IBAN has its length (GB: 22), checksum or not",
            "GB93 WEST 1234 5678 9012 3456 7890 1234 56",
            &[],
        ),
        (
            "groups of any size, but the country's length (GB: 22)",
            "GB60 WEST 12 3456 7890",
            &[],
        ),
        (
            "two letters then two digits, not four letters (checksum valid)",
            "GBAA1000000000030000",
            &[],
        ),
        ("not preceded by a digit", "1GB82WEST12345698765432", &[]),
        (
            "a grouped IBAN touching a letter is none",
            "GB82 WEST 1234 5698 7654 32\u{e9}",
            &[],
        ),
        (
            "a valid checksum in fewer than 15 characters is none",
            "GB34 1234 5678",
            &[],
        ),
    ];
    for (what, text, want) in rows {
        assert_eq!(found(Detector::Iban, text), want, "{what}");
    }
}

#[test]
fn a_jwt_after_a_lone_eyj_is_found() {
    let text = "tokens: eyJ, eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
    assert_eq!(
        found(Detector::Jwt, text),
        ["eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."]
    );
}

#[test]
fn a_bearer_word_inside_what_was_skipped_still_introduces_a_token() {
    let rows: [(&str, &str, &[&str]); 2] = [
        (
            "a doubled Bearer word",
            "Authorization: Bearer Bearer abcdefghijklmnop1234",
            &["abcdefghijklmnop1234"],
        ),
        (
            "a token ending in a Bearer word",
            "Bearer abcdefghijklmnop/Bearer qrstuvwxyz0123456789",
            &["abcdefghijklmnop/Bearer", "qrstuvwxyz0123456789"],
        ),
    ];
    for (what, text, want) in rows {
        assert_eq!(found(Detector::BearerToken, text), want, "{what}");
    }
}

#[test]
fn a_private_key_label_is_at_most_64_characters_ending_in_private_key() {
    let block = |label: &str| format!("-----BEGIN {label}-----\nMIIE\n-----END {label}-----");
    let label_64 = format!("{}PRIVATE KEY", "A".repeat(53));
    assert_eq!(label_64.len(), 64);
    let exact = block(&label_64);
    assert_eq!(found(Detector::PrivateKey, &exact), [exact.as_str()]);
    let over = block(&format!("A{label_64}"));
    assert_eq!(found(Detector::PrivateKey, &over), Vec::<&str>::new());

    let key = block("PRIVATE KEY");
    let both = format!("{}\n{key}", block("CERTIFICATE"));
    assert_eq!(found(Detector::PrivateKey, &both), [key.as_str()]);
}

#[test]
fn at_most_eight_distinct_private_key_labels_are_open_at_once() {
    // A bound against adversarial input: a ninth BEGIN is not tracked, so its
    // END closes nothing; the first BEGIN, never closed, then masks to the
    // end: the bound never lets a key through.
    let begins: String = (1..=9)
        .map(|k| format!("-----BEGIN K{k} PRIVATE KEY-----\n"))
        .collect();
    let text = format!("x {begins}MIIE\n-----END K9 PRIVATE KEY-----");
    assert_eq!(found(Detector::PrivateKey, &text), [&text[2..]]);
    // With one label fewer, K9 is tracked and closes: its block is inside the
    // unterminated K2 block, which still runs to the end.
    let eight = text.replacen("-----BEGIN K1 PRIVATE KEY-----\n", "", 1);
    assert_eq!(found(Detector::PrivateKey, &eight), [&eight[2..]]);
    // Closed blocks alone are matched exactly.
    let closed = "-----BEGIN K1 PRIVATE KEY-----\nMIIE\n-----END K1 PRIVATE KEY----- tail";
    assert_eq!(
        found(Detector::PrivateKey, closed),
        ["-----BEGIN K1 PRIVATE KEY-----\nMIIE\n-----END K1 PRIVATE KEY-----"]
    );
}

#[test]
fn canonical_json_nested_exactly_to_the_depth_limit_is_written() {
    use meshguard_core::canonical::{to_canonical_bytes, CanonicalError, MAX_DEPTH};
    // `[[…[1]…]]`: the scalar sits at depth `levels`.
    let nested = |levels: usize| {
        let mut v = serde_json::json!(1);
        for _ in 0..levels {
            v = serde_json::json!([v]);
        }
        v
    };
    let at_limit = to_canonical_bytes(&nested(MAX_DEPTH)).unwrap();
    assert_eq!(at_limit.len(), 2 * MAX_DEPTH + 1);
    assert_eq!(
        to_canonical_bytes(&nested(MAX_DEPTH + 1)),
        Err(CanonicalError::TooDeep)
    );
}
