//! Policy behaviour, table-driven: each row reads as "this caller, this request,
//! this decision".

use super::*;
use crate::config::ConfigError;

const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";
const BATCH: &str = "spiffe://cluster.local/ns/jobs/sa/batch";
const GATEWAY: &str = "spiffe://cluster.local/ns/istio-system/sa/ingress";
const LOCAL: &str = "spiffe://cluster.local/ns/default/sa/backend";

const POLICY: &str = r#"{
  "config_version": "v1",
  "default_action": "deny",
  "transport": {
    "require_mtls": true,
    "min_tls_version": "TLSv1.2",
    "overrides": [
      {"name": "probes", "paths": ["/healthz"], "methods": ["GET"], "require_mtls": false},
      {"name": "admin-tls13", "paths": ["/admin/*"], "min_tls_version": "TLSv1.3"}
    ]
  },
  "identity": {"trusted_gateways": ["cluster.local/ns/istio-system/sa/ingress"]},
  "rules": [
    {"name": "frontend-api", "action": "allow",
     "principals": ["cluster.local/ns/default/sa/frontend"], "paths": ["/api/*"], "methods": ["GET", "POST"]},
    {"name": "jobs-namespace", "action": "allow", "namespaces": ["jobs"], "paths": ["/batch/**"]},
    {"name": "no-deletes", "action": "deny", "methods": ["DELETE"]},
    {"name": "probes", "action": "allow", "paths": ["/healthz"]},
    {"name": "internal-host", "action": "allow", "principals": ["*"], "hosts": ["*.internal"],
     "not_namespaces": ["jobs"]},
    {"name": "admin", "action": "allow", "principals": ["*/sa/frontend"], "paths": ["/admin/*"]},
    {"name": "other-domains", "action": "deny", "not_trust_domains": ["cluster.local"]}
  ]
}"#;

fn policy() -> IdentityPolicy {
    IdentityPolicy::from_json(POLICY.as_bytes()).unwrap()
}

/// The XFCC this proxy appends about a peer whose certificate has exactly
/// the one URI SAN `id` (Istio's APPEND_FORWARD), and this proxy's own SAN.
fn own(id: &str) -> impl FnOnce() -> (Option<String>, Option<String>) {
    let header = format!("By={LOCAL};URI={id}");
    move || (Some(header), Some(LOCAL.to_string()))
}

fn mtls(id: &str, version: &str) -> Transport {
    Transport::from_host(Some(true), Some(version), Some(id))
}

fn decide(
    policy: &IdentityPolicy,
    transport: Transport,
    method: &str,
    path: &str,
    host: &str,
) -> (Reason, String) {
    let peer = Peer::from_certificate(transport);
    let d = policy.evaluate(&peer, &RequestInfo { path, method, host });
    (d.reason, policy.describe(d.decided_by))
}

#[test]
fn requests_are_decided_by_transport_then_deny_then_allow_then_default() {
    let p = policy();
    let plaintext = || Transport::from_host(Some(false), None, None);
    let tls_only = || Transport::from_host(Some(false), Some("TLSv1.3"), None);
    let cases = [
        (
            mtls(FRONTEND, "TLSv1.3"),
            "GET",
            "/api/users?x=1",
            "svc",
            Reason::AllowedByRule,
            "rules[0] \"frontend-api\"",
        ),
        (
            mtls(FRONTEND, "TLSv1.3"),
            "PUT",
            "/api/users",
            "svc",
            Reason::NoMatchingRule,
            "default_action",
        ),
        (
            mtls(FRONTEND, "TLSv1.3"),
            "delete",
            "/api/users",
            "svc",
            Reason::DeniedByRule,
            "rules[2] \"no-deletes\"",
        ),
        (
            mtls(BATCH, "TLSv1.3"),
            "POST",
            "/batch/a/b",
            "svc",
            Reason::AllowedByRule,
            "rules[1] \"jobs-namespace\"",
        ),
        (
            mtls(BATCH, "TLSv1.3"),
            "POST",
            "/api/users",
            "svc",
            Reason::NoMatchingRule,
            "default_action",
        ),
        (
            plaintext(),
            "GET",
            "/api/users",
            "svc",
            Reason::MtlsRequired,
            "transport",
        ),
        (
            tls_only(),
            "GET",
            "/api/users",
            "svc",
            Reason::MtlsRequired,
            "transport",
        ),
        // The probe override lifts require_mtls (the TLS floor does not apply to
        // plaintext), but the anonymous caller is caught by the negative deny rule.
        (
            plaintext(),
            "GET",
            "/healthz",
            "svc",
            Reason::DeniedByRule,
            "rules[6] \"other-domains\"",
        ),
        (
            plaintext(),
            "POST",
            "/healthz",
            "svc",
            Reason::MtlsRequired,
            "transport",
        ),
        (
            mtls(FRONTEND, "TLSv1.1"),
            "GET",
            "/api/users",
            "svc",
            Reason::TlsVersionTooLow,
            "transport",
        ),
        (
            mtls(FRONTEND, "TLSv1.2"),
            "GET",
            "/admin/x",
            "svc",
            Reason::TlsVersionTooLow,
            "transport.overrides[1] \"admin-tls13\"",
        ),
        (
            mtls(FRONTEND, "TLSv1.3"),
            "GET",
            "/admin/x",
            "svc",
            Reason::AllowedByRule,
            "rules[5] \"admin\"",
        ),
        (
            mtls(FRONTEND, "SSLv3"),
            "GET",
            "/api/users",
            "svc",
            Reason::TlsVersionTooLow,
            "transport",
        ),
        (
            mtls(FRONTEND, "TLSv1.3"),
            "GET",
            "/other",
            "API.Internal:8080",
            Reason::AllowedByRule,
            "rules[4] \"internal-host\"",
        ),
        (
            mtls(BATCH, "TLSv1.3"),
            "GET",
            "/other",
            "api.internal",
            Reason::NoMatchingRule,
            "default_action",
        ),
        (
            mtls("spiffe://evil.example/ns/default/sa/frontend", "TLSv1.3"),
            "GET",
            "/admin/x",
            "svc",
            Reason::DeniedByRule,
            "rules[6] \"other-domains\"",
        ),
        // A client certificate without a SPIFFE URI presents an identity that
        // cannot be used: refused before any rule (never anonymous by accident).
        (
            Transport::from_host(Some(true), Some("TLSv1.3"), Some("https://x")),
            "GET",
            "/api/users",
            "svc",
            Reason::PeerIdentityUnusable,
            "identity.on_unusable_identity",
        ),
        (
            Transport::from_host(Some(true), Some("TLSv1.3"), None),
            "GET",
            "/api/users",
            "svc",
            Reason::PeerIdentityUnusable,
            "identity.on_unusable_identity",
        ),
    ];
    for (transport, method, path, host, want, by) in cases {
        let got = decide(&p, transport.clone(), method, path, host);
        assert_eq!(
            got,
            (want, by.to_string()),
            "{transport:?} {method} {host}{path}"
        );
    }
}

#[test]
fn the_plaintext_probe_override_lets_probes_through_without_mtls() {
    let p = IdentityPolicy::from_json(
        br#"{"transport": {"overrides": [{"name": "probes", "paths": ["/healthz"], "require_mtls": false}]},
             "rules": [{"name": "probes", "action": "allow", "paths": ["/healthz"]}]}"#,
    )
    .unwrap();
    let plaintext = Transport::from_host(None, None, None);
    assert_eq!(
        decide(&p, plaintext.clone(), "GET", "/healthz", "x").0,
        Reason::AllowedByRule
    );
    assert_eq!(
        decide(&p, plaintext, "GET", "/other", "x").0,
        Reason::MtlsRequired
    );
}

#[test]
fn default_allow_applies_when_no_rule_matches() {
    let p = IdentityPolicy::from_json(br#"{"default_action": "allow"}"#).unwrap();
    let got = decide(&p, mtls(FRONTEND, "TLSv1.3"), "GET", "/", "x");
    assert_eq!(got, (Reason::DefaultAllow, "default_action".into()));
}

#[test]
fn a_trusted_gateway_vouches_for_the_caller_through_xfcc() {
    let p = policy();
    let xfcc = format!("By={GATEWAY};URI={FRONTEND},By={LOCAL};URI={GATEWAY}");
    let peer = p.resolve_peer(mtls(GATEWAY, "TLSv1.3"), || {
        (Some(xfcc.clone()), Some(LOCAL.into()))
    });
    assert_eq!(peer.identity.as_ref().map(|i| i.as_str()), Some(FRONTEND));
    assert!(matches!(peer.source, IdentitySource::Gateway(_)));
    let d = p.evaluate(
        &peer,
        &RequestInfo {
            path: "/api/x",
            method: "GET",
            host: "svc",
        },
    );
    assert_eq!(d.reason, Reason::AllowedByRule);

    // A gateway request without a caller element is not anonymous and not the
    // gateway: it is refused, with its own reason.
    let peer = p.resolve_peer(mtls(GATEWAY, "TLSv1.3"), own(GATEWAY));
    assert_eq!(peer.identity, None);
    assert_eq!(
        p.evaluate(&peer, &request("/api/x")).reason,
        Reason::GatewayIdentityUnusable
    );
}

fn request(path: &str) -> RequestInfo<'_> {
    RequestInfo {
        path,
        method: "GET",
        host: "svc",
    }
}

#[test]
fn xfcc_never_names_the_caller_of_a_peer_that_is_not_a_trusted_gateway() {
    let p = policy();
    let forged = || {
        (
            Some(format!(
                "By={GATEWAY};URI={FRONTEND},By={LOCAL};URI={BATCH}"
            )),
            Some(LOCAL.to_string()),
        )
    };
    for transport in [
        mtls(BATCH, "TLSv1.3"),
        Transport::from_host(None, None, None),
        Transport::from_host(Some(false), Some("TLSv1.3"), None),
    ] {
        let peer = p.resolve_peer(transport.clone(), forged);
        assert_eq!(peer.identity.as_ref(), transport.certificate_identity());
        assert_eq!(peer.unusable, None, "{transport:?}");
    }
}

#[test]
fn unusable_identities_are_refused_unless_the_policy_treats_them_as_anonymous() {
    let several = || {
        (
            Some(format!("By={LOCAL};URI={BATCH};URI={FRONTEND}")),
            Some(LOCAL.to_string()),
        )
    };
    let no_element = || {
        (
            Some(format!("By={LOCAL};URI={GATEWAY}")),
            Some(LOCAL.to_string()),
        )
    };
    // A caller can make the header unreadable (an unterminated quote): then
    // nothing establishes that its certificate has a single URI SAN.
    let unreadable = || {
        (
            Some(format!("By=\"x,By={LOCAL};URI={BATCH}")),
            Some(LOCAL.to_string()),
        )
    };
    type Xfcc<'a> = &'a dyn Fn() -> (Option<String>, Option<String>);
    let cases: [(&str, Transport, Xfcc<'_>, Reason, Reason); 4] = [
        (
            "the proxy's own element cannot be read",
            mtls(BATCH, "TLSv1.3"),
            &unreadable,
            Reason::PeerIdentityUnusable,
            Reason::AllowedByRule,
        ),
        (
            "several URI SANs",
            mtls(BATCH, "TLSv1.3"),
            &several,
            Reason::PeerIdentityUnusable,
            Reason::AllowedByRule,
        ),
        (
            "gateway without element",
            mtls(GATEWAY, "TLSv1.3"),
            &no_element,
            Reason::GatewayIdentityUnusable,
            Reason::AllowedByRule,
        ),
        (
            "not a SPIFFE ID",
            Transport::from_host(Some(true), Some("TLSv1.3"), Some("https://x")),
            &several,
            Reason::PeerIdentityUnusable,
            Reason::AllowedByRule,
        ),
    ];
    let base = r#"{"identity": {"trusted_gateways": ["cluster.local/ns/istio-system/sa/ingress"] ACTION},
        "rules": [{"name": "all", "action": "allow", "not_principals": ["cluster.local/ns/x/sa/y"]},
                  {"name": "evil", "action": "deny", "principals": ["cluster.local/ns/jobs/sa/batch"]}]}"#;
    let deny = IdentityPolicy::from_json(base.replace("ACTION", "").as_bytes()).unwrap();
    let anonymous = IdentityPolicy::from_json(
        base.replace(
            "ACTION",
            r#", "on_unusable_identity": "treat_as_anonymous""#,
        )
        .as_bytes(),
    )
    .unwrap();
    for (what, transport, xfcc, refused, anonymously) in cases {
        let peer = deny.resolve_peer(transport.clone(), xfcc);
        assert_eq!(peer.identity, None, "{what}");
        assert_eq!(
            deny.evaluate(&peer, &request("/x")).reason,
            refused,
            "{what}"
        );
        let peer = anonymous.resolve_peer(transport, xfcc);
        // Anonymous, by explicit choice: the caller escapes the deny rule on its
        // principal and, as in Istio, `not_principals` does not exclude it.
        assert_eq!(
            anonymous.evaluate(&peer, &request("/x")).reason,
            anonymously,
            "{what}"
        );
    }
    assert!(
        anonymous
            .warnings()
            .iter()
            .any(|w| w.contains("treat_as_anonymous")),
        "{:?}",
        anonymous.warnings()
    );
}

#[test]
fn identity_conditions_on_an_anonymous_caller() {
    // An absent identity never satisfies a positive condition and is never excluded.
    let p = IdentityPolicy::from_json(
        br#"{"transport": {"require_mtls": false},
             "rules": [
               {"name": "not-batch", "action": "allow", "not_principals": ["cluster.local/ns/jobs/sa/batch"]},
               {"name": "frontend", "action": "deny", "principals": ["cluster.local/ns/default/sa/frontend"]}
             ]}"#,
    )
    .unwrap();
    let plaintext = Transport::from_host(None, None, None);
    assert_eq!(
        decide(&p, plaintext, "GET", "/", "x").0,
        Reason::AllowedByRule
    );
    assert_eq!(
        decide(&p, mtls(BATCH, "TLSv1.3"), "GET", "/", "x").0,
        Reason::NoMatchingRule
    );
    assert_eq!(p.warnings().len(), 1, "{:?}", p.warnings());
    assert!(p.warnings()[0].contains("while plaintext is accepted"));

    // A plaintext override opens the same hole for the requests it covers.
    let p = IdentityPolicy::from_json(
        br#"{"transport": {"overrides": [{"name": "probes", "paths": ["/healthz"], "require_mtls": false}]},
             "rules": [{"name": "no-batch", "action": "deny", "namespaces": ["jobs"]}]}"#,
    )
    .unwrap();
    assert_eq!(p.warnings().len(), 1, "{:?}", p.warnings());
}

#[test]
fn deny_wins_regardless_of_rule_order() {
    let p = IdentityPolicy::from_json(
        br#"{"rules": [
               {"name": "allow-all", "action": "allow", "principals": ["*"]},
               {"name": "deny-frontend-writes", "action": "deny", "principals": ["*/sa/frontend"], "methods": ["POST"]}
             ]}"#,
    )
    .unwrap();
    assert_eq!(
        decide(&p, mtls(FRONTEND, "TLSv1.3"), "POST", "/", "x").0,
        Reason::DeniedByRule
    );
    assert_eq!(
        decide(&p, mtls(FRONTEND, "TLSv1.3"), "GET", "/", "x").0,
        Reason::AllowedByRule
    );
}

#[test]
fn many_rules_are_looked_up_not_scanned() {
    // 10,000 principal rules: only the caller's own rule is a candidate.
    let rules: Vec<String> = (0..10_000)
        .map(|i| {
            format!(r#"{{"name": "r{i}", "action": "allow", "principals": ["cluster.local/ns/n{i}/sa/s"], "paths": ["/p{i}"]}}"#)
        })
        .collect();
    let config = format!(r#"{{"rules": [{}]}}"#, rules.join(","));
    let p = IdentityPolicy::from_json(config.as_bytes()).unwrap();
    let caller = SpiffeIdForTest::new("spiffe://cluster.local/ns/n7777/sa/s");
    assert_eq!(p.candidates_for_test(Some(&caller.0), "/p7777"), vec![7777]);
    let got = decide(&p, mtls(caller.0.as_str(), "TLSv1.3"), "GET", "/p7777", "x");
    assert_eq!(got, (Reason::AllowedByRule, "rules[7777] \"r7777\"".into()));
    assert_eq!(
        decide(&p, mtls(caller.0.as_str(), "TLSv1.3"), "GET", "/p1", "x").0,
        Reason::NoMatchingRule
    );
}

struct SpiffeIdForTest(crate::spiffe::SpiffeId);

impl SpiffeIdForTest {
    fn new(s: &str) -> Self {
        Self(crate::spiffe::SpiffeId::parse_uri(s).unwrap())
    }
}

#[test]
fn bad_configs_are_refused_with_a_precise_message() {
    let cases: &[(&str, &str)] = &[
        (r#"{"rules": [{"name": "a", "action": "allow", "principles": ["x"]}]}"#, "rules[0].principles: unknown field `principles`"),
        (r#"{"mode": "audit"}"#, "mode: unknown variant `audit`, expected `enforce` or `dry-run`"),
        (r#"{"default_action": 1}"#, "default_action: expected value at line 1 column 20"),
        (r#"{"transport": {"min_tls_version": "TLSv1.4"}}"#, "transport.min_tls_version: unknown variant `TLSv1.4`"),
        (r#"{"rules": [{"name": "a", "action": "allow", "principals": [""]}]}"#, "rules[0].principals[0]: \"\" is empty"),
        (
            r#"{"rules": [{"name": "a", "action": "allow", "principals": ["spiffe://Cluster.local/ns/a/sa/b"]}]}"#,
            "rules[0].principals[0]: \"spiffe://Cluster.local/ns/a/sa/b\" is not a valid SPIFFE ID: it has the character 'C' in its trust domain",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "allow", "principals": ["cluster.local/ns//sa/b"]}]}"#,
            "rules[0].principals[0]: \"cluster.local/ns//sa/b\" is not a valid SPIFFE ID: it has an empty path segment",
        ),
        (r#"{"rules": [{"name": "a", "action": "allow", "paths": []}]}"#, "rules[0].paths: is an empty list"),
        (r#"{"rules": [{"name": "a", "action": "allow", "paths": ["api/*"]}]}"#, "rules[0].paths[0]: \"api/*\" must start with `/`"),
        (r#"{"rules": [{"name": "a", "action": "allow", "methods": ["GE T"]}]}"#, "rules[0].methods[0]: \"GE T\" is not an HTTP method name"),
        (
            r#"{"rules": [{"name": "a", "action": "allow", "paths": ["/x"], "not_paths": ["/y", "/x"]}]}"#,
            "rules[0].not_paths[1]: contradicts rules[0].paths[0]: the same entry is both required and excluded",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "allow", "paths": ["/x"]}, {"name": "b", "action": "deny", "paths": ["/x"]}]}"#,
            "rules[1]: contradicts rules[0]: the same conditions with the opposite action",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "allow"}, {"name": "a", "action": "deny", "paths": ["/x"]}]}"#,
            "rules[1].name: \"a\" is already the name of rules[0]",
        ),
        (r#"{"rules": [{"name": " ", "action": "allow"}]}"#, "rules[0].name: must not be empty"),
        (r#"{"identity": {"trusted_gateways": ["*"]}}"#, "identity.trusted_gateways[0]: \"*\" would let every mTLS peer"),
        (
            r#"{"identity": {"trusted_gateways": ["spiffe:*"]}}"#,
            "identity.trusted_gateways[0]: \"spiffe:*\" is not a valid SPIFFE ID: it has the character ':' in its trust domain",
        ),
        (
            r#"{"identity": {"trusted_gateways": ["spiffe://*"]}}"#,
            "identity.trusted_gateways[0]: \"spiffe://*\" is not a valid SPIFFE ID: it has an empty trust domain",
        ),
        (r#"{"deny_response": {"status": 200}}"#, "deny_response.status: 200 is not an HTTP error status"),
        (r#"{"deny_response": {"status": 70000}}"#, "deny_response.status: invalid value: integer `70000`"),
        (r#"{"transport": {"overrides": [{"name": "x", "paths": ["/x"]}]}}"#, "transport.overrides[0]: sets neither require_mtls nor min_tls_version"),
        (r#"{"rules": [{"name": "a", "action": "allow", "trust_domains": ["Bad"]}]}"#, "rules[0].trust_domains[0]: \"Bad\" is not a valid SPIFFE ID"),
        (r#"{"config_version": ""}"#, "config_version: must not be empty"),
        (
            r#"{"rules": [{"name": "a", "action": "allow", "hosts": ["api:8080"]}]}"#,
            "rules[0].hosts[0]: \"api:8080\": hosts are matched without their port",
        ),
        (
            r#"{"rules": [{"name": "a", "action": "allow", "namespaces": ["a/b"]}]}"#,
            "rules[0].namespaces[0]: \"a/b\" is not a namespace pattern",
        ),
        ("[1, 2]", "config: expected a JSON object"),
        ("", "the configuration is empty"),
    ];
    for (config, want) in cases {
        let err = IdentityPolicy::from_json(config.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(want),
            "config {config}\n  got:  {err}\n  want: {want}…"
        );
    }
}

#[test]
fn the_istio_and_uri_principal_forms_are_the_same_principal() {
    let a = IdentityPolicy::from_json(
        br#"{"rules": [{"name": "a", "action": "allow", "principals": ["cluster.local/ns/default/sa/frontend"]}]}"#,
    )
    .unwrap();
    let b = IdentityPolicy::from_json(
        br#"{"rules": [{"name": "a", "action": "allow", "principals": ["spiffe://cluster.local/ns/default/sa/frontend"]}]}"#,
    )
    .unwrap();
    for p in [a, b] {
        assert_eq!(
            decide(&p, mtls(FRONTEND, "TLSv1.3"), "GET", "/", "x").0,
            Reason::AllowedByRule
        );
    }
}

#[test]
fn every_reason_code_is_distinct_and_snake_case() {
    let codes: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), Reason::ALL.len());
    assert!(codes
        .iter()
        .all(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')));
}

#[test]
fn config_errors_are_typed() {
    let err = IdentityPolicy::from_json(
        br#"{"rules": [{"name": "a", "action": "allow", "paths": ["x"]}]}"#,
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::BadPattern { .. }));
}

fn judge(p: &IdentityPolicy, path: &str) -> Reason {
    p.judge(mtls(FRONTEND, "TLSv1.3"), own(FRONTEND), &request(path))
        .decision
        .reason
}

/// Every way an upstream framework could spell `/admin/users`.
const ADMIN_SPELLINGS: &[&str] = &[
    "/admin/users",
    "//admin/users",
    "/admin//users",
    "/x/../admin/users",
    "/x/..;/admin/users",
    "/x/%2e%2e/admin/users",
    "/x/%2E%2e;p=1/admin/users",
    "/./admin/users",
    "/%61dmin/users",
    "/%61%64%6d%69%6e/%75sers",
    "/x\\..\\admin\\users",
    "/admin;jsessionid=1/users",
    "/admin/users;x=1",
    "/admin/users?x=1",
    "/admin%2Fusers",
    "/x%2F..%2Fadmin/users",
    "/x%5C..%5Cadmin/users",
    "/x/%252e%252e/admin/users",
    "/admin/users%00",
    "/admin/users%",
    "/admin/users#frag",
];

#[test]
fn a_deny_rule_catches_every_spelling_of_its_path() {
    let p = IdentityPolicy::from_json(
        br#"{"default_action": "allow",
             "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]}]}"#,
    )
    .unwrap();
    for spelling in ADMIN_SPELLINGS {
        let reason = judge(&p, spelling);
        assert!(
            reason.verdict() == Verdict::Deny,
            "{spelling:?} was {reason:?}"
        );
    }
    assert_eq!(judge(&p, "/public/admin/users"), Reason::DefaultAllow);
    assert_eq!(judge(&p, "/administrator"), Reason::DefaultAllow);
}

#[test]
fn non_ascii_paths_have_one_reading_whatever_their_spelling() {
    let p = IdentityPolicy::from_json(
        "{\"default_action\": \"allow\",
          \"rules\": [{\"name\": \"no-reports\", \"action\": \"deny\", \"paths\": [\"/reports/\u{e9}t\u{e9}/*\"]}]}"
            .as_bytes(),
    )
    .unwrap();
    for spelling in [
        "/reports/\u{e9}t\u{e9}/q3",
        "/reports/%C3%A9t%C3%A9/q3",
        "/reports/%c3%a9t%c3%a9/q3",
        "/reports/\u{e9}t%C3%A9/q3",
    ] {
        assert_eq!(judge(&p, spelling), Reason::DeniedByRule, "{spelling:?}");
    }
    // An overlong escape of `.` is no spelling of anything: refused.
    assert_eq!(
        judge(&p, "/x/%C0%AE%C0%AE/reports/q3").verdict(),
        Verdict::Deny
    );
    assert_eq!(judge(&p, "/reports/other/q3"), Reason::DefaultAllow);
}

#[test]
fn an_allow_rule_is_widened_by_no_spelling() {
    let p = IdentityPolicy::from_json(
        br#"{"rules": [{"name": "public", "action": "allow", "paths": ["/public/*"]}]}"#,
    )
    .unwrap();
    // Climbing out of /public/ in every spelling, and reaching /admin/users.
    let escapes = ADMIN_SPELLINGS
        .iter()
        .map(|s| format!("/public/../{}", s.trim_start_matches(['/', '\\'])))
        .chain(
            [
                "/public/..;/admin",
                "/public/%2e%2e/admin",
                "/public/.%2E/admin",
                "/public\\..\\admin",
                "/public%2F..%2Fadmin",
                "/public%5C..%5Cadmin",
                "/public/%252e%252e/admin",
                "/public/x/../../admin",
                "/public#/../admin",
            ]
            .map(String::from),
        );
    for spelling in escapes {
        let reason = judge(&p, &spelling);
        assert_ne!(reason, Reason::AllowedByRule, "{spelling:?}");
    }
    for legit in [
        "/public/a",
        "/public//a",
        "/public/a/./b",
        "/public/a;v=1",
        "/public/%7Ea",
    ] {
        assert_eq!(judge(&p, legit), Reason::AllowedByRule, "{legit:?}");
    }
}

#[test]
fn paths_can_be_matched_case_insensitively() {
    let config = r#"{"default_action": "allow", PATHS
        "rules": [{"name": "no-admin", "action": "deny", "paths": ["/Admin/*"]}]}"#;
    let sensitive = IdentityPolicy::from_json(config.replace("PATHS", "").as_bytes()).unwrap();
    let insensitive = IdentityPolicy::from_json(
        config
            .replace("PATHS", r#""path_case_insensitive": true,"#)
            .as_bytes(),
    )
    .unwrap();
    for (path, sensitive_reason, insensitive_reason) in [
        ("/Admin/x", Reason::DeniedByRule, Reason::DeniedByRule),
        ("/admin/x", Reason::DefaultAllow, Reason::DeniedByRule),
        ("/ADMIN/x", Reason::DefaultAllow, Reason::DeniedByRule),
        ("/%41DMIN/x", Reason::DefaultAllow, Reason::DeniedByRule),
    ] {
        assert_eq!(judge(&sensitive, path), sensitive_reason, "{path}");
        assert_eq!(judge(&insensitive, path), insensitive_reason, "{path}");
    }
}

#[test]
fn the_canonical_path_is_what_gets_forwarded() {
    let p = IdentityPolicy::from_json(br#"{"default_action": "allow"}"#).unwrap();
    let forwarded = |path| {
        p.judge(mtls(FRONTEND, "TLSv1.3"), own(FRONTEND), &request(path))
            .forwarded_path
    };
    assert_eq!(
        forwarded("/a/./b/../c?q=/../x").as_deref(),
        Some("/a/c?q=/../x")
    );
    assert_eq!(forwarded("/a/c?q=1"), None);
}

#[test]
fn non_canonical_path_patterns_are_refused_with_the_spelling_to_use() {
    let err = IdentityPolicy::from_json(
        br#"{"rules": [{"name": "r", "action": "deny", "paths": ["/api//admin"]}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("rules[0].paths[0]") && err.contains("write /api/admin"),
        "{err}"
    );
    let base = IdentityPolicy::from_json(
        br#"{"path_normalization": "BASE",
             "rules": [{"name": "r", "action": "deny", "paths": ["/api//admin"]}]}"#,
    );
    assert!(base.is_ok());
}

#[test]
fn a_shadow_policy_is_compiled_beside_the_enforced_one_and_never_nested() {
    let p = IdentityPolicy::from_json(
        br#"{"default_action": "allow",
             "shadow": {"rules": [{"name": "frontend-only", "action": "allow",
                                   "principals": ["cluster.local/ns/default/sa/frontend"]}]}}"#,
    )
    .unwrap();
    let shadow = p.shadow().expect("a shadow policy");
    assert_eq!(shadow.rule_names().collect::<Vec<_>>(), ["frontend-only"]);
    let batch = shadow.judge(mtls(BATCH, "TLSv1.3"), own(BATCH), &request("/x"));
    assert_eq!(batch.decision.reason, Reason::NoMatchingRule);
    let enforced = p.judge(mtls(BATCH, "TLSv1.3"), own(BATCH), &request("/x"));
    assert_eq!(enforced.decision.reason, Reason::DefaultAllow);

    for (config, at) in [
        (r#"{"shadow": {"shadow": {}}}"#, "shadow.shadow"),
        (
            r#"{"shadow": {"rules": [{"name": "r", "action": "allow", "paths": ["//x"]}]}}"#,
            "shadow.rules[0].paths[0]",
        ),
        (
            r#"{"shadow": {"rules": [{"name": "r", "action": "maybe"}]}}"#,
            "shadow.rules[0].action",
        ),
    ] {
        let err = IdentityPolicy::from_json(config.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(at), "{config}: {err}");
    }
}

#[test]
fn globs_are_indexed_by_their_first_literal_segment() {
    let rules: Vec<String> = (0..200)
        .map(|i| {
            format!(
                r#"{{"name": "g{i}", "action": "deny", "paths": ["/internal{i}/*/secret/**"]}}"#
            )
        })
        .chain([
            r#"{"name": "anywhere", "action": "deny", "paths": ["/**/admin"]}"#.to_string(),
            r#"{"name": "mixed", "action": "deny", "paths": ["/api/*", "/v1/*/x"]}"#.to_string(),
        ])
        .collect();
    let p = IdentityPolicy::from_json(
        format!(
            r#"{{"default_action": "allow", "rules": [{}]}}"#,
            rules.join(",")
        )
        .as_bytes(),
    )
    .unwrap();
    // Only the glob under `internal7`, the mixed rule's `/api/*` and the rule
    // with a leading `**` can match; the 199 other globs are never looked at.
    assert_eq!(
        p.candidates_for_test(None, "/internal7/a/secret/b"),
        vec![7, 200]
    );
    assert_eq!(p.candidates_for_test(None, "/api/x"), vec![200, 201]);
    assert_eq!(p.candidates_for_test(None, "/v1/q/x"), vec![200, 201]);
    assert_eq!(judge(&p, "/internal7/a/secret/b"), Reason::DeniedByRule);
    assert_eq!(judge(&p, "/internal7/a/public"), Reason::DefaultAllow);
    assert_eq!(judge(&p, "/x/admin"), Reason::DeniedByRule);
}
