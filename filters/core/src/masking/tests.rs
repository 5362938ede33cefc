//! Masking behaviour, table-driven: each row reads as "this config, this body,
//! this result". Every masked JSON body is also re-parsed.

use super::*;
use crate::request::RequestInfo;
use crate::spiffe::SpiffeId;

const KEY: &[u8] = b"0123456789abcdef-test-key";
const OTHER_KEY: &[u8] = b"fedcba9876543210-test-key";

fn policy(json: &str) -> MaskingPolicy {
    MaskingPolicy::from_json(json.as_bytes(), Some(KEY)).unwrap_or_else(|e| panic!("{e}\n{json}"))
}

/// A policy with one rule whose body (without `name`) is `rule`.
fn one_rule(rule: &str) -> MaskingPolicy {
    policy(&format!(r#"{{"rules": [{{"name": "r", {rule}}}]}}"#))
}

fn refusal(json: &str) -> String {
    match MaskingPolicy::from_json(json.as_bytes(), Some(KEY)) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

fn request<'a>(path: &'a str, method: &'a str, host: &'a str) -> RequestInfo<'a> {
    RequestInfo { path, method, host }
}

/// Every rule that applies to an anonymous GET / request.
fn everything(p: &MaskingPolicy) -> Selection {
    p.select(Direction::Request, None, &request("/", "GET", "svc"))
}

/// Masks `body` as `kind`; returns the new body as text (`None`: unchanged) and
/// the hits as (rule, count). A changed JSON body must parse.
fn mask(p: &MaskingPolicy, kind: BodyKind, body: &str) -> (Option<String>, Vec<(usize, u32)>) {
    let masked = p
        .mask_body(&everything(p), kind, body.as_bytes())
        .unwrap_or_else(|e| panic!("{e} for {body}"));
    let text = masked.body.map(|b| String::from_utf8(b).unwrap());
    if let (BodyKind::Json, Some(t)) = (kind, &text) {
        serde_json::from_str::<serde_json::Value>(t)
            .unwrap_or_else(|e| panic!("masked JSON does not parse: {e}\n{t}"));
    }
    let hits = masked.hits.iter().map(|h| (h.rule, h.count)).collect();
    (text, hits)
}

fn mask_json(p: &MaskingPolicy, body: &str) -> Option<String> {
    mask(p, BodyKind::Json, body).0
}

fn hash_of(key: &[u8], value: &str) -> String {
    let mut out = String::new();
    strategy::HashKey::new(key).unwrap().write(value, &mut out);
    out
}

// ---------------------------------------------------------------------------
// Configuration.

#[test]
fn configuration_errors_name_the_json_path_and_the_problem() {
    let rule = |body: &str| format!(r#"{{"rules": [{{"name": "r", {body}}}]}}"#);
    let long_regex = format!(
        r#""patterns": [{{"name": "p", "regex": "{}"}}]"#,
        "a".repeat(MAX_REGEX_LEN + 1)
    );
    let many_rules = format!(
        r#"{{"rules": [{}]}}"#,
        (0..=MAX_RULES)
            .map(|i| format!(r#"{{"name": "r{i}", "json_keys": ["k"]}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases: Vec<(String, &str)> = vec![
        ("{}".into(), "config: missing field `rules`"),
        (r#"{"rules": []}"#.into(), "rules: is empty: a masking policy needs at least one rule"),
        (r#"{"rules": [], "rulez": 1}"#.into(), "rulez: unknown field `rulez`"),
        (r#"{"mode": "audit", "rules": []}"#.into(), "mode: unknown variant `audit`"),
        (
            r#"{"config_version": " ", "rules": [{"name": "r", "json_keys": ["a"]}]}"#.into(),
            "config_version: must not be empty",
        ),
        (
            r#"{"max_body_bytes": 0, "rules": [{"name": "r", "json_keys": ["a"]}]}"#.into(),
            "max_body_bytes: 0 is out of range: between 1 and 67108864",
        ),
        (
            r#"{"max_body_bytes": 67108865, "rules": [{"name": "r", "json_keys": ["a"]}]}"#.into(),
            "max_body_bytes: 67108865 is out of range",
        ),
        (
            r#"{"max_body_bytes": 1.5, "rules": []}"#.into(),
            "max_body_bytes: invalid type: floating point",
        ),
        (
            r#"{"max_json_depth": 129, "rules": [{"name": "r", "json_keys": ["a"]}]}"#.into(),
            "max_json_depth: 129 is out of range: between 1 and 128",
        ),
        (
            r#"{"max_json_depth": -1, "rules": []}"#.into(),
            "max_json_depth: invalid value: integer `-1`",
        ),
        (r#"{"on_oversize": "drop", "rules": []}"#.into(), "on_oversize: unknown variant `drop`"),
        (
            r#"{"on_malformed_json": "pass", "rules": []}"#.into(),
            "on_malformed_json: unknown variant `pass`",
        ),
        (
            r#"{"on_compressed_request": "decompress", "rules": []}"#.into(),
            "on_compressed_request: unknown variant `decompress`",
        ),
        (
            r#"{"on_unsupported_content_type": "mask", "rules": []}"#.into(),
            "on_unsupported_content_type: unknown variant `mask`",
        ),
        (
            r#"{"hash_key_env": "1KEY", "rules": [{"name": "r", "json_keys": ["a"]}]}"#.into(),
            "hash_key_env: \"1KEY\" is not an environment variable name",
        ),
        (many_rules, "rules: has 257 entries, over the limit of 256"),
        (r#"{"rules": [{"json_keys": ["a"]}]}"#.into(), "rules[0]: missing field `name`"),
        (rule(r#""json_key": ["a"]"#), "rules[0].json_key: unknown field `json_key`"),
        (
            r#"{"rules": [{"name": "a", "json_keys": ["k"]}, {"name": "a", "json_keys": ["k"]}]}"#
                .into(),
            "rules[1].name: \"a\" is already the name of rules[0]; names must be unique",
        ),
        (rule(r#""strategy": "redact""#), "rules[0]: selects nothing: set at least one of json_paths, json_keys, detectors, patterns or headers"),
        (rule(r#""json_keys": ["a"], "directions": []"#), "rules[0].directions: is an empty list"),
        (
            rule(r#""json_keys": ["a"], "directions": ["both"]"#),
            "rules[0].directions[0]: unknown variant `both`, expected `request` or `response`",
        ),
        (rule(r#""json_keys": ["a"], "paths": []"#), "rules[0].paths: is an empty list"),
        (rule(r#""json_keys": ["a"], "paths": ["api"]"#), "rules[0].paths[0]: \"api\" must start with `/`"),
        (
            rule(r#""json_keys": ["a"], "methods": ["GET"], "not_methods": ["GET"]"#),
            "rules[0].not_methods[0]: contradicts rules[0].methods[0]",
        ),
        (
            rule(r#""json_keys": ["a"], "except_principals": []"#),
            "rules[0].except_principals: is an empty list",
        ),
        (
            rule(r#""json_keys": ["a"], "except_principals": ["http://x/y"]"#),
            "rules[0].except_principals[0]: \"http://x/y\" is not a valid SPIFFE ID",
        ),
        (rule(r#""json_paths": []"#), "rules[0].json_paths: is an empty list, which would select nothing"),
        (rule(r#""json_paths": ["a/b"]"#), "rules[0].json_paths[0]: \"a/b\" must start with `/`"),
        (rule(r#""json_paths": ["/a*"]"#), "rules[0].json_paths[0]: \"/a*\": `*` and `**` must be whole segments"),
        (rule(r#""json_paths": ["/ok", "/a~2"]"#), "rules[0].json_paths[1]: \"/a~2\" has a `~`"),
        (rule(r#""json_paths": ["**"]"#), "rules[0].json_paths[0]: \"**\" would select the whole document"),
        (rule(r#""json_keys": []"#), "rules[0].json_keys: is an empty list"),
        (rule(r#""json_keys": ["a", ""]"#), "rules[0].json_keys[1]: is empty"),
        (rule(r#""detectors": []"#), "rules[0].detectors: is an empty list"),
        (rule(r#""detectors": ["card", "visa"]"#), "rules[0].detectors[1]: unknown variant `visa`"),
        (rule(r#""patterns": []"#), "rules[0].patterns: is an empty list"),
        (
            rule(r#""patterns": [{"name": "p", "regex": "a("}]"#),
            "rules[0].patterns[0].regex: is not a valid regex",
        ),
        (
            rule(r#""patterns": [{"name": "p", "regex": "x*"}]"#),
            "rules[0].patterns[0].regex: matches the empty string",
        ),
        (rule(&long_regex), "rules[0].patterns[0].regex: is longer than 1024 bytes"),
        (
            rule(r#""patterns": [{"name": "p", "regex": "a"}, {"name": "p", "regex": "b"}]"#),
            "rules[0].patterns[1].name: \"p\" is already the name of rules[0].patterns[0]",
        ),
        (rule(r#""patterns": [{"name": "p"}]"#), "rules[0].patterns[0]: missing field `regex`"),
        (
            rule(r#""patterns": [{"name": "p", "regex": "a", "flags": "i"}]"#),
            "rules[0].patterns[0].flags: unknown field `flags`",
        ),
        (rule(r#""headers": []"#), "rules[0].headers: is an empty list"),
        (
            rule(r#""headers": [":authority"]"#),
            "rules[0].headers[0]: \":authority\" is not an HTTP header name",
        ),
        (rule(r#""headers": ["x key"]"#), "rules[0].headers[0]: \"x key\" is not an HTTP header name"),
        (rule(r#""json_keys": ["a"], "strategy": "mask""#), "rules[0].strategy: unknown variant `mask`"),
        (
            rule(r#""json_keys": ["a"], "keep_last": 2"#),
            "rules[0].keep_last: only applies to strategy \"partial\", but this rule's strategy is \"redact\" (the default); set \"strategy\": \"partial\"",
        ),
        (
            rule(r#""json_keys": ["a"], "strategy": "hash", "keep_last": 2"#),
            "rules[0].keep_last: only applies to strategy \"partial\", but this rule's strategy is \"hash\"",
        ),
        (
            rule(r#""json_keys": ["a"], "strategy": "partial", "keep_last": 65"#),
            "rules[0].keep_last: 65 is out of range: between 0 and 64",
        ),
        (
            rule(r#""json_keys": ["a"], "strategy": "partial", "keep_last": -1"#),
            "rules[0].keep_last: invalid value: integer `-1`",
        ),
        (
            rule(r#""json_keys": ["a"], "strategy": "remove", "redact_token": "x""#),
            "rules[0].redact_token: only applies to strategy \"redact\", but this rule's strategy is \"remove\"",
        ),
        (rule(r#""json_keys": ["a"], "redact_token": """#), "rules[0].redact_token: is empty"),
        (
            rule(r#""json_keys": ["a"], "redact_token": "a\r\nb""#),
            "rules[0].redact_token: contains control characters",
        ),
    ];
    for (config, want) in &cases {
        let err = refusal(config);
        assert!(err.starts_with(want), "{err:?}\nshould start with {want:?}");
    }
}

#[test]
fn the_hash_strategy_needs_a_key_of_at_least_16_bytes() {
    let config = r#"{"rules": [
        {"name": "plain", "json_keys": ["a"]},
        {"name": "hashed", "json_keys": ["b"], "strategy": "hash"}]}"#;
    let err = MaskingPolicy::from_json(config.as_bytes(), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "rules[1].strategy: \"hash\" needs a secret key, but the environment variable \
         MESHGUARD_MASK_HASH_KEY (named by hash_key_env) is not set in the plugin's vmConfig"
    );
    let renamed = config.replacen('{', r#"{"hash_key_env": "SHOP_MASK_KEY", "#, 1);
    let err = MaskingPolicy::from_json(renamed.as_bytes(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("SHOP_MASK_KEY"), "{err}");
    let err = MaskingPolicy::from_json(config.as_bytes(), Some(b"short-secret"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "rules[1].strategy: \"hash\" needs a key of at least 16 bytes, but the environment \
         variable MESHGUARD_MASK_HASH_KEY (named by hash_key_env) holds 12 bytes"
    );
    assert!(
        !err.contains("short-secret"),
        "the key never appears in errors"
    );
    // Without a hash rule the key is irrelevant, even when absent or short.
    let plain = r#"{"rules": [{"name": "plain", "json_keys": ["a"]}]}"#;
    assert!(MaskingPolicy::from_json(plain.as_bytes(), None).is_ok());
    assert!(MaskingPolicy::from_json(plain.as_bytes(), Some(b"x")).is_ok());
    // The policy's Debug output never shows the key.
    let p = MaskingPolicy::from_json(config.as_bytes(), Some(KEY)).unwrap();
    assert!(!format!("{p:?}").contains("test-key"));
}

#[test]
fn settings_default_as_documented_and_are_exposed() {
    let p = one_rule(r#""json_keys": ["a"]"#);
    assert_eq!(p.mode(), Mode::Enforce);
    assert_eq!(p.config_version(), None);
    assert_eq!(p.max_body_bytes(), 1_048_576);
    assert_eq!(p.max_json_depth(), 64);
    assert_eq!(p.on_oversize(), OversizeAction::Reject);
    assert_eq!(p.on_malformed_json(), MalformedJsonAction::Reject);
    assert_eq!(p.on_compressed_request(), CompressedAction::Reject);
    assert_eq!(p.on_unsupported_content_type(), UnsupportedAction::Reject);
    assert_eq!(p.on_not_utf8(), NotUtf8Action::Reject);
    assert_eq!(p.on_grpc(), GrpcAction::Reject);
    assert!(!p.scan_all_headers());
    assert_eq!(p.hash_key_env(), "MESHGUARD_MASK_HASH_KEY");
    assert_eq!(p.rule_count(), 1);
    assert_eq!(p.rule_name(0), Some("r"));
    assert_eq!(p.rule_name(1), None);

    let p = policy(
        r#"{"config_version": "v7", "mode": "dry-run", "max_body_bytes": 4096,
            "max_json_depth": 8, "on_oversize": "pass_unmasked",
            "on_malformed_json": "mask_as_text", "on_compressed_request": "pass_unmasked",
            "on_unsupported_content_type": "reject", "hash_key_env": "K",
            "on_not_utf8": "mask_bytes", "on_grpc": "pass_unmasked", "scan_all_headers": true,
            "rules": [{"name": "r", "json_keys": ["a"]}]}"#,
    );
    assert_eq!(p.on_not_utf8(), NotUtf8Action::MaskBytes);
    assert_eq!(p.on_grpc(), GrpcAction::PassUnmasked);
    assert!(p.scan_all_headers());
    assert_eq!(p.mode(), Mode::DryRun);
    assert_eq!(p.mode().as_str(), "dry-run");
    assert_eq!(p.config_version(), Some("v7"));
    assert_eq!(p.max_body_bytes(), 4096);
    assert_eq!(p.max_json_depth(), 8);
    assert_eq!(p.on_oversize(), OversizeAction::PassUnmasked);
    assert_eq!(p.on_malformed_json(), MalformedJsonAction::MaskAsText);
    assert_eq!(p.on_compressed_request(), CompressedAction::PassUnmasked);
    assert_eq!(p.on_unsupported_content_type(), UnsupportedAction::Reject);
    assert_eq!(p.hash_key_env(), "K");
}

#[test]
fn content_types_decide_the_body_kind() {
    let cases = [
        (Some("application/json"), BodyKind::Json),
        (Some("Application/JSON; charset=utf-8"), BodyKind::Json),
        (Some("application/problem+json"), BodyKind::Json),
        (Some("application/vnd.api+JSON ; x=y"), BodyKind::Json),
        (Some("text/plain"), BodyKind::Text),
        (Some("TEXT/html;charset=UTF-8"), BodyKind::Text),
        (Some("text/csv"), BodyKind::Text),
        (Some("application/x-www-form-urlencoded"), BodyKind::Form),
        (
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            BodyKind::Form,
        ),
        (Some("multipart/form-data; boundary=x"), BodyKind::Multipart),
        (
            Some("Multipart/Mixed; boundary=\"a b\""),
            BodyKind::Multipart,
        ),
        (Some("text/event-stream"), BodyKind::EventStream),
        (Some("application/x-ndjson"), BodyKind::JsonLines),
        (
            Some("application/jsonl; charset=utf-8"),
            BodyKind::JsonLines,
        ),
        (Some("application/json-seq"), BodyKind::JsonSeq),
        (Some("application/octet-stream"), BodyKind::Other),
        (Some("application/jsonx"), BodyKind::Other),
        (Some("application/grpc"), BodyKind::Grpc),
        (Some("application/grpc+proto"), BodyKind::Grpc),
        (Some("Application/GRPC+json"), BodyKind::Grpc),
        (Some("application/grpc-web-text"), BodyKind::Grpc),
        (Some("application/grpcx"), BodyKind::Other),
        (Some("json"), BodyKind::Other),
        (Some(""), BodyKind::Other),
        (None, BodyKind::Other),
    ];
    for (content_type, want) in cases {
        assert_eq!(body_kind(content_type), want, "{content_type:?}");
    }
}

// ---------------------------------------------------------------------------
// Selection.

#[test]
fn rules_are_selected_by_direction_route_and_caller() {
    let p = policy(
        r#"{"rules": [
        {"name": "requests", "directions": ["request"], "json_keys": ["a"]},
        {"name": "api-reads", "directions": ["response"], "paths": ["/api/*"], "methods": ["GET"], "json_keys": ["b"]},
        {"name": "not-auditors", "except_principals": ["cluster.local/ns/audit/*"], "detectors": ["email"]},
        {"name": "auth-header", "headers": ["Authorization"]},
        {"name": "internal", "hosts": ["*.internal"], "not_paths": ["/health"], "json_keys": ["c"]}
    ]}"#,
    );
    let auditor = SpiffeId::parse_uri("spiffe://cluster.local/ns/audit/sa/reader").unwrap();
    let shop = SpiffeId::parse_uri("spiffe://cluster.local/ns/shop/sa/web").unwrap();
    /// A message, and the rules that must apply to it.
    struct Row<'a> {
        direction: Direction,
        caller: Option<&'a SpiffeId>,
        request: RequestInfo<'a>,
        rules: &'a [&'a str],
        body: bool,
        headers: bool,
    }
    let row = |direction, caller, path, method, host, rules, body| Row {
        direction,
        caller,
        request: request(path, method, host),
        rules,
        body,
        headers: true,
    };
    use Direction::{Request as Req, Response as Resp};
    let cases = [
        row(
            Req,
            None,
            "/",
            "GET",
            "svc",
            &["requests", "not-auditors", "auth-header"],
            true,
        ),
        row(
            Resp,
            None,
            "/api/x?q=1",
            "GET",
            "svc",
            &["api-reads", "not-auditors", "auth-header"],
            true,
        ),
        row(
            Resp,
            None,
            "/api/x",
            "POST",
            "svc",
            &["not-auditors", "auth-header"],
            true,
        ),
        row(
            Resp,
            Some(&shop),
            "/other",
            "GET",
            "svc",
            &["not-auditors", "auth-header"],
            true,
        ),
        row(
            Resp,
            Some(&auditor),
            "/other",
            "GET",
            "svc",
            &["auth-header"],
            false,
        ),
        row(
            Req,
            Some(&auditor),
            "/x",
            "GET",
            "db.internal:8080",
            &["requests", "auth-header", "internal"],
            true,
        ),
        row(
            Req,
            Some(&auditor),
            "/health",
            "GET",
            "db.internal",
            &["requests", "auth-header"],
            true,
        ),
    ];
    for c in &cases {
        let s = p.select(c.direction, c.caller, &c.request);
        let names: Vec<&str> = s.rules().map(|r| p.rule_name(r).unwrap()).collect();
        assert_eq!(
            names,
            c.rules,
            "{} {} {} {} by {:?}",
            c.direction.as_str(),
            c.request.method,
            c.request.path,
            c.request.host,
            c.caller
        );
        assert_eq!(s.needs_body(), c.body, "needs_body for {names:?}");
        assert_eq!(s.needs_headers(), c.headers, "needs_headers for {names:?}");
        assert!(!s.is_empty());
    }
    let only =
        policy(r#"{"rules": [{"name": "r", "directions": ["response"], "json_keys": ["a"]}]}"#);
    let s = only.select(Direction::Request, None, &request("/", "GET", "h"));
    assert!(s.is_empty() && !s.needs_body() && !s.needs_headers());
    // Nothing selected: bodies and headers come back untouched.
    let m = only.mask_body(&s, BodyKind::Json, br#"{"a": 1}"#).unwrap();
    assert_eq!(m, Masked::default());
}

// ---------------------------------------------------------------------------
// JSON selection.

#[test]
fn json_paths_with_wildcards_select_values_in_nested_arrays() {
    let body = r#"{"users":[{"name":"a","ssn":"1","cards":[{"pan":"p1","exp":"x"},{"pan":"p2"}]},{"name":"b","ssn":"2"}],"data":{"token":"t0","deep":[{"token":"t1"},{"x":{"token":"t2"}}]},"token":"top"}"#;
    let cases = [
        (
            r#"["/users/*/ssn"]"#,
            r#"{"users":[{"name":"a","ssn":"[REDACTED]","cards":[{"pan":"p1","exp":"x"},{"pan":"p2"}]},{"name":"b","ssn":"[REDACTED]"}],"data":{"token":"t0","deep":[{"token":"t1"},{"x":{"token":"t2"}}]},"token":"top"}"#,
            2,
        ),
        (
            r#"["/users/0/cards/*/pan"]"#,
            r#"{"users":[{"name":"a","ssn":"1","cards":[{"pan":"[REDACTED]","exp":"x"},{"pan":"[REDACTED]"}]},{"name":"b","ssn":"2"}],"data":{"token":"t0","deep":[{"token":"t1"},{"x":{"token":"t2"}}]},"token":"top"}"#,
            2,
        ),
        (
            r#"["/data/**/token"]"#,
            r#"{"users":[{"name":"a","ssn":"1","cards":[{"pan":"p1","exp":"x"},{"pan":"p2"}]},{"name":"b","ssn":"2"}],"data":{"token":"[REDACTED]","deep":[{"token":"[REDACTED]"},{"x":{"token":"[REDACTED]"}}]},"token":"top"}"#,
            3,
        ),
        (
            r#"["**/token"]"#,
            r#"{"users":[{"name":"a","ssn":"1","cards":[{"pan":"p1","exp":"x"},{"pan":"p2"}]},{"name":"b","ssn":"2"}],"data":{"token":"[REDACTED]","deep":[{"token":"[REDACTED]"},{"x":{"token":"[REDACTED]"}}]},"token":"[REDACTED]"}"#,
            4,
        ),
        (
            r#"["/users/1"]"#,
            r#"{"users":[{"name":"a","ssn":"1","cards":[{"pan":"p1","exp":"x"},{"pan":"p2"}]},"[REDACTED]"],"data":{"token":"t0","deep":[{"token":"t1"},{"x":{"token":"t2"}}]},"token":"top"}"#,
            1,
        ),
        (
            r#"["/users/*/cards", "/data/deep/1/x"]"#,
            r#"{"users":[{"name":"a","ssn":"1","cards":"[REDACTED]"},{"name":"b","ssn":"2"}],"data":{"token":"t0","deep":[{"token":"t1"},{"x":"[REDACTED]"}]},"token":"top"}"#,
            2,
        ),
        (r#"["/nope", "/users/9/ssn", "/users/ssn"]"#, body, 0),
    ];
    for (paths, want, count) in cases {
        let p = one_rule(&format!(r#""json_paths": {paths}"#));
        let (got, hits) = mask(&p, BodyKind::Json, body);
        assert_eq!(got.as_deref().unwrap_or(body), want, "{paths}");
        let want_hits = if count == 0 { vec![] } else { vec![(0, count)] };
        assert_eq!(hits, want_hits, "{paths}");
    }
    // A root array and escaped pointer segments.
    let p = one_rule(r#""json_paths": ["/*/a~1b", "/1/c~0d"]"#);
    assert_eq!(
        mask_json(&p, r#"[{"a/b":1,"c~d":2},{"c~d":3}]"#).unwrap(),
        r#"[{"a/b":"[REDACTED]","c~d":2},{"c~d":"[REDACTED]"}]"#
    );
}

#[test]
fn json_keys_match_case_insensitively_at_any_depth() {
    let p = one_rule(r#""json_keys": ["Password", "api_key", "ÉCHO"]"#);
    let cases = [
        (r#"{"password":"a"}"#, r#"{"password":"[REDACTED]"}"#),
        (
            r#"{"PASSWORD":"a","x":{"PassWord":{"nested":true}}}"#,
            r#"{"PASSWORD":"[REDACTED]","x":{"PassWord":"[REDACTED]"}}"#,
        ),
        (
            r#"[[{"Api_Key":42}],{"k":[{"API_KEY":null}]}]"#,
            r#"[[{"Api_Key":"[REDACTED]"}],{"k":[{"API_KEY":"[REDACTED]"}]}]"#,
        ),
        (r#"{"écho":[1,2]}"#, r#"{"écho":"[REDACTED]"}"#),
        // Escaped keys are compared decoded.
        (
            r#"{"pass\u0057ord":"a"}"#,
            r#"{"pass\u0057ord":"[REDACTED]"}"#,
        ),
        // Values equal to a key name are not keys.
        (
            r#"{"x":"password","passwords":"a"}"#,
            r#"{"x":"password","passwords":"a"}"#,
        ),
    ];
    for (body, want) in cases {
        assert_eq!(
            mask_json(&p, body).as_deref().unwrap_or(body),
            want,
            "{body}"
        );
    }
}

#[test]
fn paths_win_over_keys_and_earlier_rules_win_over_later_ones() {
    let p = policy(
        r#"{"rules": [
        {"name": "keys", "json_keys": ["secret"]},
        {"name": "path", "json_paths": ["/secret", "/a/token"], "strategy": "remove"},
        {"name": "any-token", "json_paths": ["**/token"], "strategy": "partial", "keep_last": 1},
        {"name": "emails-1", "detectors": ["email"]},
        {"name": "emails-2", "detectors": ["email"], "strategy": "hash"}
    ]}"#,
    );
    let (got, hits) = mask(
        &p,
        BodyKind::Json,
        r#"{"secret":1,"x":{"secret":2},"a":{"token":"abc"},"b":{"token":"xyz"},"m":"a@b.io"}"#,
    );
    assert_eq!(
        got.unwrap(),
        r#"{"x":{"secret":"[REDACTED]"},"a":{},"b":{"token":"**z"},"m":"[REDACTED]"}"#
    );
    assert_eq!(hits, [(0, 1), (1, 2), (2, 1), (3, 1)]);
}

// ---------------------------------------------------------------------------
// Strategies.

#[test]
fn each_strategy_masks_selected_json_values() {
    let ssn_hash = hash_of(KEY, "123-45-6789");
    let number_hash = hash_of(KEY, "123456789");
    let object_hash = hash_of(KEY, r#"{"a":[1,"x y"]}"#);
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "",
            r#"{"ssn":"123-45-6789","n":1}"#,
            r#"{"ssn":"[REDACTED]","n":1}"#.into(),
        ),
        (
            r#", "redact_token": "<\"hidden\">""#,
            r#"{"ssn":"123-45-6789"}"#,
            r#"{"ssn":"<\"hidden\">"}"#.into(),
        ),
        (
            r#", "strategy": "partial""#,
            r#"{"ssn":"123-45-6789","n":1}"#,
            r#"{"ssn":"***-**-6789","n":1}"#.into(),
        ),
        (
            r#", "strategy": "partial", "keep_last": 2"#,
            r#"{"ssn":"123-45-6789"}"#,
            r#"{"ssn":"***-**-**89"}"#.into(),
        ),
        (
            r#", "strategy": "partial", "keep_last": 0"#,
            r#"{"ssn":"123-45-6789"}"#,
            r#"{"ssn":"***-**-****"}"#.into(),
        ),
        (
            r#", "strategy": "partial""#,
            r#"{"ssn":"6789"}"#,
            r#"{"ssn":"****"}"#.into(),
        ),
        (
            r#", "strategy": "hash""#,
            r#"{"ssn":"123-45-6789","n":1}"#,
            format!(r#"{{"ssn":"{ssn_hash}","n":1}}"#),
        ),
        (
            r#", "strategy": "remove""#,
            r#"{"ssn":"123-45-6789","n":1}"#,
            r#"{"n":1}"#.into(),
        ),
        // Non-string values: replaced by a string; partial and hash work on their compact JSON text.
        (
            "",
            r#"{"ssn":{"a":[1,2]},"n":1}"#,
            r#"{"ssn":"[REDACTED]","n":1}"#.into(),
        ),
        ("", r#"{"ssn":null}"#, r#"{"ssn":"[REDACTED]"}"#.into()),
        (
            r#", "strategy": "partial""#,
            r#"{"ssn":123456789}"#,
            r#"{"ssn":"*****6789"}"#.into(),
        ),
        (
            r#", "strategy": "partial""#,
            r#"{"ssn":true}"#,
            r#"{"ssn":"****"}"#.into(),
        ),
        (
            r#", "strategy": "hash""#,
            r#"{"ssn":123456789}"#,
            format!(r#"{{"ssn":"{number_hash}"}}"#),
        ),
        (
            r#", "strategy": "hash""#,
            r#"{"ssn": { "a" : [ 1, "x y" ] } }"#,
            format!(r#"{{"ssn": "{object_hash}" }}"#),
        ),
        (
            r#", "strategy": "remove""#,
            r#"{"ssn":[1,{"b":2}]}"#,
            r#"{}"#.into(),
        ),
        // Escaped string values are masked decoded.
        (
            r#", "strategy": "partial""#,
            r#"{"ssn":"12\u0033-45-6789"}"#,
            r#"{"ssn":"***-**-6789"}"#.into(),
        ),
    ];
    for (strategy, body, want) in &cases {
        let p = one_rule(&format!(r#""json_keys": ["ssn"]{strategy}"#));
        let (got, hits) = mask(&p, BodyKind::Json, body);
        assert_eq!(got.as_deref(), Some(want.as_str()), "{strategy} on {body}");
        assert_eq!(hits, [(0, 1)], "{strategy} on {body}");
    }
}

#[test]
fn removing_object_members_keeps_the_commas_right() {
    let p = one_rule(r#""json_keys": ["x"], "strategy": "remove""#);
    let cases = [
        (r#"{"x":1}"#, r#"{}"#),
        (r#"{"x":1,"a":2}"#, r#"{"a":2}"#),
        (r#"{"a":1,"x":2}"#, r#"{"a":1}"#),
        (r#"{"a":1,"x":2,"b":3}"#, r#"{"a":1,"b":3}"#),
        (r#"{"x":1,"x":2,"a":3}"#, r#"{"a":3}"#),
        (
            r#"{"x":1,"a":2,"x":3,"x":4,"b":5,"x":6}"#,
            r#"{"a":2,"b":5}"#,
        ),
        (r#"{"x":1,"x":2}"#, r#"{}"#),
        (
            r#"[{"x":1},{"a":{"x":[1,2],"b":[{"x":null}]}}]"#,
            r#"[{},{"a":{"b":[{}]}}]"#,
        ),
        (
            "{ \"a\" : 1 ,\n  \"x\" : { \"y\" : 2 } ,\n  \"b\" : 3 }",
            "{ \"a\" : 1  ,\n  \"b\" : 3 }",
        ),
        ("{\n  \"x\": 1,\n  \"b\": 3\n}", "{\n  \n  \"b\": 3\n}"),
    ];
    for (body, want) in cases {
        assert_eq!(mask_json(&p, body).unwrap(), want, "{body}");
    }
}

#[test]
fn removing_array_elements_nulls_them_so_other_indices_stay_stable() {
    let p = one_rule(r#""json_paths": ["/list/1", "/list/3", "/grid/*/0"], "strategy": "remove""#);
    assert_eq!(
        mask_json(
            &p,
            r#"{"list":["a",{"b":1},"c",[4],"e"],"grid":[[1,2],[3]]}"#
        )
        .unwrap(),
        r#"{"list":["a",null,"c",null,"e"],"grid":[[null,2],[null]]}"#
    );
}

#[test]
fn hashes_are_stable_across_policies_and_depend_on_the_key() {
    let config = r#"{"rules": [{"name": "r", "json_keys": ["email"], "detectors": ["card"], "strategy": "hash"}]}"#;
    let body = r#"{"email":"alice@example.com","note":"card 4111 1111 1111 1111"}"#;
    let run = |key: &[u8]| {
        let p = MaskingPolicy::from_json(config.as_bytes(), Some(key)).unwrap();
        mask_json(&p, body).unwrap()
    };
    let first = run(KEY);
    assert_eq!(
        first,
        run(KEY),
        "same key, same output (another VM, another request)"
    );
    assert_ne!(first, run(OTHER_KEY), "another key, another output");
    let want = format!(
        r#"{{"email":"{}","note":"card {}"}}"#,
        hash_of(KEY, "alice@example.com"),
        hash_of(KEY, "4111 1111 1111 1111")
    );
    assert_eq!(first, want);
    assert!(!first.contains("alice") && !first.contains("4111"));
}

#[test]
fn each_strategy_masks_detector_matches_in_text() {
    let hashed = hash_of(KEY, "john@example.com");
    let cases = [
        (
            "",
            "mail john@example.com now",
            "mail [REDACTED] now".to_string(),
        ),
        (
            r#", "redact_token": "<email>""#,
            "john@example.com",
            "<email>".to_string(),
        ),
        (
            r#", "strategy": "partial""#,
            "mail john@example.com now",
            "mail ****@*******.com now".to_string(),
        ),
        (
            r#", "strategy": "hash""#,
            "mail john@example.com now",
            format!("mail {hashed} now"),
        ),
        (
            r#", "strategy": "remove""#,
            "mail john@example.com now",
            "mail  now".to_string(),
        ),
    ];
    for (strategy, body, want) in &cases {
        let p = one_rule(&format!(r#""detectors": ["email"]{strategy}"#));
        let (got, hits) = mask(&p, BodyKind::Text, body);
        assert_eq!(got.as_deref(), Some(want.as_str()), "{strategy}");
        assert_eq!(hits, [(0, 1)]);
    }
}

#[test]
fn every_detector_masks_text_and_json_strings() {
    let jwt =
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----";
    let p = one_rule(
        r#""detectors": ["card", "email", "us_ssn", "iban", "jwt", "bearer_token", "aws_access_key", "private_key"]"#,
    );
    let text = format!(
        "card 4111-1111-1111-1111, mail a.b@example.org, ssn 078-05-1120, iban GB82 WEST 1234 5698 7654 32, \
         jwt {jwt}, auth: Bearer abcdefghijklmnopqrstuvwxyz, aws AKIAIOSFODNN7EXAMPLE, key {pem} end; \
         not: 4111111111111112, 000-12-3456, GB83WEST12345698765432, Bearer short"
    );
    let want = "card [REDACTED], mail [REDACTED], ssn [REDACTED], iban [REDACTED], \
         jwt [REDACTED], auth: Bearer [REDACTED], aws [REDACTED], key [REDACTED] end; \
         not: 4111111111111112, 000-12-3456, GB83WEST12345698765432, Bearer short";
    let (got, hits) = mask(&p, BodyKind::Text, &text);
    assert_eq!(got.as_deref(), Some(want));
    assert_eq!(hits, [(0, 8)]);

    // The same inside a JSON string (the PEM's newlines are `\n` escapes there).
    let mut json = Vec::new();
    json::write_json_string(&mut json, &text);
    let body = format!(
        r#"{{"notes":{},"n":4111111111111111}}"#,
        String::from_utf8(json).unwrap()
    );
    let mut want_json = Vec::new();
    json::write_json_string(&mut want_json, want);
    let (got, hits) = mask(&p, BodyKind::Json, &body);
    assert_eq!(
        got.unwrap(),
        format!(
            r#"{{"notes":{},"n":"[REDACTED]"}}"#,
            String::from_utf8(want_json).unwrap()
        ),
        "a card stored as a number is found too"
    );
    assert_eq!(hits, [(0, 9)]);
}

#[test]
fn overlapping_matches_merge_earliest_first_then_longest() {
    let p = policy(
        r#"{"rules": [
        {"name": "names", "patterns": [{"name": "john", "regex": "john"}, {"name": "domain", "regex": "example\\.com"}], "strategy": "partial", "keep_last": 0},
        {"name": "emails", "detectors": ["email", "bearer_token", "jwt"]}
    ]}"#,
    );
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig";
    let cases = [
        // Same start: the longer email wins over `john`.
        (
            "to john@example.com",
            "to [REDACTED]".to_string(),
            vec![(1, 1)],
        ),
        // `john` alone, and `example.com` inside a later email loses to it (earlier start).
        (
            "john: x.john@example.com",
            "****: [REDACTED]".to_string(),
            vec![(0, 1), (1, 1)],
        ),
        // Bearer token and JWT on the same span: counted once.
        (
            &*format!("Bearer {jwt}"),
            "Bearer [REDACTED]".to_string(),
            vec![(1, 1)],
        ),
    ];
    for (body, want, want_hits) in cases {
        let (got, hits) = mask(&p, BodyKind::Text, body);
        assert_eq!(got.as_deref(), Some(want.as_str()), "{body}");
        assert_eq!(hits, want_hits, "{body}");
    }
}

#[test]
fn a_replacement_never_uncovers_a_match_next_to_it() {
    let p = policy(
        r#"{"rules": [
        {"name": "tickets", "patterns": [{"name": "ticket", "regex": "tkt_[A-Za-z0-9]{24}"}]},
        {"name": "pii", "detectors": ["email", "us_ssn", "aws_access_key"]},
        {"name": "tokens", "patterns": [{"name": "redacted", "regex": "REDACTED"}], "strategy": "partial", "keep_last": 0}
    ]}"#,
    );
    let ticket = "tkt_AAAAAAAAAAAAAAAAAAAAAAAA";
    let long_local = "john.doe.with.a.rather.long.local.part.indeed";
    let cases = [
        // The run before the number touched a letter; the replacement does not.
        (
            format!("{ticket}123-45-6789 x"),
            "[REDACTED][REDACTED] x",
            vec![(0, 1), (1, 1)],
        ),
        // The run before `@` was longer than an address's 64 characters.
        (
            format!("{ticket}{long_local}@example.com x"),
            "[REDACTED][REDACTED] x",
            vec![(0, 1), (1, 1)],
        ),
        // The domain ran into the key, whose last label is not a top-level domain.
        (
            "john@example.com.AKIAIOSFODNN7EXAMPLE x".to_string(),
            "[REDACTED].[REDACTED] x",
            vec![(1, 2)],
        ),
        // A replacement is never masked again, even when a pattern matches it.
        (
            "REDACTED john@example.com".to_string(),
            "******** [REDACTED]",
            vec![(1, 1), (2, 1)],
        ),
        // Nothing next to the replacement: one pass.
        (
            format!("{ticket} 123-45-6789"),
            "[REDACTED] [REDACTED]",
            vec![(0, 1), (1, 1)],
        ),
    ];
    for (body, want, want_hits) in cases {
        let (got, hits) = mask(&p, BodyKind::Text, &body);
        assert_eq!(got.as_deref(), Some(want), "{body}");
        assert_eq!(hits, want_hits, "{body}");
    }
}

#[test]
fn user_patterns_mask_their_matches() {
    let p = one_rule(
        r#""patterns": [{"name": "order", "regex": "ORD-[0-9]{6}"}, {"name": "phone", "regex": "\\+1-[0-9]{3}-[0-9]{4}"}], "strategy": "partial", "keep_last": 2"#,
    );
    let (got, hits) = mask(
        &p,
        BodyKind::Json,
        r#"{"a":"ORD-123456 and +1-555-0199","b":"ORD-12"}"#,
    );
    assert_eq!(
        got.unwrap(),
        r#"{"a":"***-****56 and +*-***-**99","b":"ORD-12"}"#
    );
    assert_eq!(hits, [(0, 2)]);
}

// ---------------------------------------------------------------------------
// Bodies.

#[test]
fn form_bodies_mask_fields_by_name_and_values_by_detectors() {
    let p = policy(
        r#"{"rules": [
        {"name": "secrets", "json_keys": ["password"], "json_paths": ["/pin"]},
        {"name": "emails", "detectors": ["email"], "strategy": "partial", "keep_last": 3},
        {"name": "drop", "json_keys": ["token"], "strategy": "remove"}
    ]}"#,
    );
    let cases = [
        (
            "user=bob&Password=hunter2&note=mail+bob%40example.com&x=%zz&pin=1234",
            Some("user=bob&Password=%5BREDACTED%5D&note=mail+***%40*******.com&x=%zz&pin=%5BREDACTED%5D"),
            vec![(0, 2), (1, 1)],
        ),
        ("token=abc&a=1", Some("a=1"), vec![(2, 1)]),
        ("a=1&token=abc", Some("a=1"), vec![(2, 1)]),
        ("a=1&token=abc&b=2&token=d", Some("a=1&b=2"), vec![(2, 2)]),
        ("token", Some(""), vec![(2, 1)]),
        // Untouched pairs keep their exact bytes, empty pairs included.
        ("a=%41%42&&b=c+d&password", Some("a=%41%42&&b=c+d&password=%5BREDACTED%5D"), vec![(0, 1)]),
        ("", None, vec![]),
    ];
    for (body, want, want_hits) in cases {
        let (got, hits) = mask(&p, BodyKind::Form, body);
        assert_eq!(got.as_deref(), want, "{body}");
        assert_eq!(hits, want_hits, "{body}");
    }
    // A value that is not UTF-8 is refused by default (it could hide a match).
    let err = p
        .mask_body(&everything(&p), BodyKind::Form, b"a=1&b=%FF%FE&c")
        .unwrap_err();
    assert_eq!(err, MaskError::NotUtf8);
}

#[test]
fn unchanged_bodies_are_not_copied() {
    let p = one_rule(r#""json_keys": ["password"], "detectors": ["email", "card"]"#);
    let cases = [
        (
            BodyKind::Json,
            r#"{"a":"nothing to see","n":[1,2,{"b":null}]}"#,
        ),
        (BodyKind::Json, ""),
        (BodyKind::Json, "  \n "),
        (BodyKind::Text, "plain text, no secrets: 4111111111111112"),
        (BodyKind::Text, ""),
        (BodyKind::Form, "a=1&b=2"),
        (BodyKind::Other, r#"{"password":"x"} john@example.com"#),
    ];
    for (kind, body) in cases {
        let (got, hits) = mask(&p, kind, body);
        assert_eq!(got, None, "{kind:?} {body:?}");
        assert!(hits.is_empty());
    }
}

#[test]
fn untouched_json_keeps_its_exact_bytes() {
    // Key order, duplicate keys, big and odd numbers, whitespace, escapes and a
    // BOM all survive: only the masked string changes.
    let p = one_rule(r#""detectors": ["email"]"#);
    let body = "\u{feff}{ \"z\" : 12345678901234567890123 , \"a\" : [ 1.0E+2 , -0.0 , 1e400 ],\n\t\"dup\": 1, \"dup\": \"to a@example.com\", \"esc\": \"\\u00e9\\/\" }";
    let want = "\u{feff}{ \"z\" : 12345678901234567890123 , \"a\" : [ 1.0E+2 , -0.0 , 1e400 ],\n\t\"dup\": 1, \"dup\": \"to [REDACTED]\", \"esc\": \"\\u00e9\\/\" }";
    let m = p
        .mask_body(&everything(&p), BodyKind::Json, body.as_bytes())
        .unwrap();
    assert_eq!(String::from_utf8(m.body.unwrap()).unwrap(), want);
}

#[test]
fn malformed_json_is_reported_without_its_content() {
    let p = one_rule(r#""json_keys": ["a"], "detectors": ["card"]"#);
    let cases: &[&[u8]] = &[
        br#"{"a":}"#,
        br#"{"a" 1}"#,
        br#"{"a":1,}"#,
        br#"[1,]"#,
        br#"[1 2]"#,
        br#"{1:2}"#,
        br#"{"a":1"#,
        br#"01"#,
        br#"1."#,
        br#"-"#,
        br#"1e"#,
        br#"NaN"#,
        br#"tru"#,
        br#"{} {}"#,
        br#""4111111111111111"#,
        br#""\x""#,
        br#""\u12""#,
        br#""\ud800""#,
        br#""\udc00""#,
        b"\"tab\tinside\"",
        b"\"\xff\xfe\"",
        b"[\"4111111111111111\" 1]",
    ];
    for body in cases {
        let err = p
            .mask_body(&everything(&p), BodyKind::Json, body)
            .unwrap_err();
        assert!(
            matches!(err, MaskError::MalformedJson { .. }),
            "{body:?}: {err}"
        );
        assert_eq!(err.as_code(), "malformed_json");
        assert!(!err.to_string().contains("4111"), "{err}");
        // serde_json agrees that these are not JSON.
        assert!(
            serde_json::from_slice::<serde_json::Value>(body).is_err(),
            "{body:?}"
        );
    }
}

#[test]
fn malformed_json_can_still_be_masked_as_text_by_the_adapter() {
    let p = one_rule(r#""json_keys": ["email"], "detectors": ["email"]"#);
    let body = br#"{"email": "john@example.com", "#;
    let sel = everything(&p);
    assert!(p.mask_body(&sel, BodyKind::Json, body).is_err());
    let m = p.mask_body(&sel, BodyKind::Text, body).unwrap();
    assert_eq!(m.body.unwrap(), br#"{"email": "[REDACTED]", "#);
}

#[test]
fn deep_documents_fail_with_too_deep_and_never_overflow_the_stack() {
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let p64 = one_rule(r#""json_keys": ["a"], "detectors": ["email"]"#);
    let p128 =
        policy(r#"{"max_json_depth": 128, "rules": [{"name": "r", "detectors": ["email"]}]}"#);
    let check = move || {
        let run = |p: &MaskingPolicy, body: &str| {
            p.mask_body(&everything(p), BodyKind::Json, body.as_bytes())
        };
        assert_eq!(run(&p64, &nested(200)), Err(MaskError::TooDeep { max: 64 }));
        assert_eq!(run(&p64, &nested(65)), Err(MaskError::TooDeep { max: 64 }));
        assert!(run(&p64, &nested(64)).is_ok());
        // Inside a value selected as a whole, the limit still holds.
        assert_eq!(
            run(&p64, &objects(200)),
            Err(MaskError::TooDeep { max: 64 })
        );
        assert_eq!(
            run(&p128, &nested(200)),
            Err(MaskError::TooDeep { max: 128 })
        );
        assert!(run(&p128, &nested(128)).is_ok());
        assert_eq!(
            run(&p128, &nested(100_000)),
            Err(MaskError::TooDeep { max: 128 })
        );
    };
    // A small stack: the depth check must come first. On wasm32 (no threads)
    // the check runs on the module's own stack, the one the filters have.
    #[cfg(not(target_family = "wasm"))]
    let result = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(check)
        .unwrap()
        .join();
    #[cfg(target_family = "wasm")]
    let result: std::thread::Result<()> = {
        check();
        Ok(())
    };
    assert!(result.is_ok());
    assert_eq!(MaskError::TooDeep { max: 64 }.as_code(), "too_deep");
}

#[test]
fn text_that_is_not_utf8_is_skipped_with_a_reason() {
    let p = one_rule(r#""detectors": ["email"]"#);
    let err = p
        .mask_body(&everything(&p), BodyKind::Text, b"john@example.com \xff")
        .unwrap_err();
    assert_eq!(err, MaskError::NotUtf8);
    assert_eq!(err.as_code(), "not_utf8");
}

#[test]
fn large_masked_documents_stay_valid_json() {
    let p = policy(
        r#"{"rules": [
        {"name": "keys", "json_keys": ["ssn", "password"], "strategy": "remove"},
        {"name": "cards", "json_paths": ["/records/*/card"], "strategy": "partial"},
        {"name": "free-text", "detectors": ["email", "card", "us_ssn"], "strategy": "hash"},
        {"name": "quoted", "patterns": [{"name": "q", "regex": "\"[a-z]+\""}], "redact_token": "<q>"}
    ]}"#,
    );
    let mut records = Vec::new();
    for i in 0..300 {
        records.push(format!(
            r#"{{"id":{i},"ssn":"078-05-1120","password":"p{i}","card":"4111 1111 1111 1111","note":"write to user{i}@example.com about \"quoted\" 4111111111111111 or 078-05-1120\n","tags":["a","b{i}"],"nested":{{"password":[1,2],"x":[{{"ssn":null}}]}}}}"#
        ));
    }
    let body = format!(r#"{{"records":[{}],"total":300}}"#, records.join(","));
    let (got, hits) = mask(&p, BodyKind::Json, &body);
    let got = got.unwrap();
    let value: serde_json::Value = serde_json::from_str(&got).unwrap();
    let first = &value["records"][0];
    assert!(first.get("ssn").is_none() && first.get("password").is_none());
    assert_eq!(first["card"], "**** **** **** 1111");
    assert_eq!(first["nested"], serde_json::json!({"x": [{}]}));
    let note = first["note"].as_str().unwrap();
    assert!(
        note.contains("about <q> hash:") && !note.contains("example.com") && !note.contains("4111")
    );
    assert_eq!(hits, [(0, 300 * 4), (1, 300), (2, 300 * 3), (3, 300)]);
}

// ---------------------------------------------------------------------------
// Headers.

#[test]
fn headers_are_replaced_or_removed_once_per_name() {
    let p = policy(
        r#"{"rules": [
        {"name": "auth", "headers": ["authorization", "X-Api-Key"]},
        {"name": "card", "headers": ["x-card"], "strategy": "partial"},
        {"name": "user", "headers": ["x-user"], "strategy": "hash"},
        {"name": "cookies", "headers": ["cookie"], "strategy": "partial", "keep_last": 1},
        {"name": "drop", "headers": ["x-debug"], "strategy": "remove"},
        {"name": "body-only", "json_keys": ["authorization"]}
    ]}"#,
    );
    let headers: Vec<(String, String)> = [
        ("authorization", "Bearer abc"),
        ("x-api-key", "k1"),
        ("x-card", "4111 1111 1111 1111"),
        ("X-User", "alice"),
        ("cookie", "a=1"),
        ("x-debug", "1"),
        ("cookie", "b=2"),
        ("X-API-KEY", "k2"),
        ("x-card", "5555 5555 5555 4444"),
        ("accept", "*/*"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let edits = p.mask_headers(&everything(&p), &headers);
    let replace = |name: &str, value: &str| HeaderEdit::Replace {
        name: name.into(),
        value: value.into(),
    };
    assert_eq!(
        edits.edits,
        [
            replace("authorization", "[REDACTED]"),
            replace("x-api-key", "[REDACTED]"),
            replace("x-card", "**** **** **** 1111, **** **** **** 4444"),
            replace("x-user", &hash_of(KEY, "alice")),
            replace("cookie", "*=1; *=2"),
            HeaderEdit::Remove {
                name: "x-debug".into()
            },
        ]
    );
    let hits: Vec<(usize, u32)> = edits.hits.iter().map(|h| (h.rule, h.count)).collect();
    assert_eq!(hits, [(0, 3), (1, 2), (2, 1), (3, 2), (4, 1)]);
    // Debug output shows names, never values.
    let debug = format!("{:?}", edits.edits);
    assert!(debug.contains("x-card") && !debug.contains("1111") && !debug.contains("REDACTED"));
    assert_eq!(edits.edits[5].name(), "x-debug");

    // A selection without header rules edits only the cookie pairs its
    // name rules select.
    let s = policy(r#"{"rules": [{"name": "b", "json_keys": ["a"]}]}"#);
    assert_eq!(
        s.mask_headers(&everything(&s), &headers).edits,
        [replace("cookie", "a=[REDACTED]; b=2")]
    );
    let s = policy(r#"{"rules": [{"name": "b", "json_keys": ["zz"]}]}"#);
    assert_eq!(
        s.mask_headers(&everything(&s), &headers),
        HeaderEdits::default()
    );
}

// ---------------------------------------------------------------------------
// Shapes that used to hide data: JSON in strings, Unicode variants, queries,
// bracketed names, every header.

#[test]
fn json_held_in_json_strings_is_masked_and_stays_valid() {
    let p = policy(
        r#"{"rules": [{"name": "k", "json_keys": ["password"]},
                      {"name": "p", "json_paths": ["/payload/user/ssn"]},
                      {"name": "d", "detectors": ["email"]}]}"#,
    );
    let cases = [
        (
            r#"{"payload": "{\"user\": {\"ssn\": \"078-05-1120\", \"password\": \"x\"}}"}"#,
            Some(
                r#"{"payload": "{\"user\": {\"ssn\": \"[REDACTED]\", \"password\": \"[REDACTED]\"}}"}"#,
            ),
        ),
        (
            r#"{"list": "[\"ann@example.com\", 1]"}"#,
            Some(r#"{"list": "[\"[REDACTED]\", 1]"}"#),
        ),
        (
            r#"{"twice": "{\"in\": \"{\\\"password\\\": 1}\"}"}"#,
            Some(r#"{"twice": "{\"in\": \"{\\\"password\\\": \\\"[REDACTED]\\\"}\"}"}"#),
        ),
        // Starts like JSON but is not: scanned as text.
        (
            r#"{"note": "{ann@example.com"}"#,
            Some(r#"{"note": "{[REDACTED]"}"#),
        ),
        (r#"{"note": "{\"plain\": 1}"}"#, None),
    ];
    for (body, want) in cases {
        assert_eq!(mask_json(&p, body).as_deref(), want, "{body}");
    }
    // Nesting JSON in strings past the limit is refused, not scanned as text.
    let mut deep = String::from(r#"{"password": 1}"#);
    for _ in 0..json::MAX_EMBEDDED_LEVELS + 1 {
        let mut quoted = Vec::new();
        json::write_json_string(&mut quoted, &deep);
        deep = format!(r#"{{"a": {}}}"#, String::from_utf8(quoted).unwrap());
    }
    let err = p
        .mask_body(&everything(&p), BodyKind::Json, deep.as_bytes())
        .unwrap_err();
    assert_eq!(err.as_code(), "too_deep");
    // Text that only opens brackets is text, however many: no false refusal.
    let shallow =
        policy(r#"{"max_json_depth": 3, "rules": [{"name": "d", "detectors": ["email"]}]}"#);
    assert_eq!(
        mask_json(&shallow, r#"{"a": "[[[[[[ hi ann@example.com"}"#).as_deref(),
        Some(r#"{"a": "[[[[[[ hi [REDACTED]"}"#)
    );
    assert_eq!(
        mask(&shallow, BodyKind::Text, "[[[[[[ hi ann@example.com")
            .0
            .as_deref(),
        Some("[[[[[[ hi [REDACTED]")
    );
}

#[test]
fn unicode_digit_space_and_dash_variants_cannot_hide_a_match() {
    let p = one_rule(r#""detectors": ["card", "us_ssn", "iban"]"#);
    let cases = [
        (
            "card ４１１１ １１１１ １１１１ １１１１",
            "card [REDACTED]",
        ),
        ("card 4111\u{a0}1111\u{a0}1111\u{a0}1111", "card [REDACTED]"),
        ("card 4111\\t1111\\t1111\\t1111", "card [REDACTED]"),
        ("ssn 078\u{2010}05\u{2011}1120", "ssn [REDACTED]"),
        ("card 4111\u{200b}111111111111", "card [REDACTED]"),
        ("iban ＧＢ82 WEST 1234 5698 7654 32", "iban [REDACTED]"),
        ("card ٤١١١١١١١١١١١١١١١", "card [REDACTED]"),
    ];
    for (value, want) in cases {
        let body = format!(r#"{{"v": "{value}"}}"#);
        let got = mask_json(&p, &body).unwrap_or(body.clone());
        let got: serde_json::Value = serde_json::from_str(&got).unwrap();
        let want: serde_json::Value =
            serde_json::from_str(&format!(r#"{{"v": "{want}"}}"#)).unwrap();
        assert_eq!(got, want, "{value}");
    }
    // Partial masking keeps the original characters' shape.
    let p = one_rule(r#""detectors": ["card"], "strategy": "partial", "keep_last": 4"#);
    assert_eq!(
        mask(&p, BodyKind::Text, "４１１１ １１１１ １１１１ １１１１")
            .0
            .as_deref(),
        Some("**** **** **** １１１１")
    );
}

#[test]
fn query_strings_and_bracketed_names_are_matched_like_json_keys() {
    let p = policy(
        r#"{"rules": [{"name": "k", "json_keys": ["password"]},
                      {"name": "p", "json_paths": ["/card/number"]},
                      {"name": "d", "detectors": ["email"]}]}"#,
    );
    let sel = everything(&p);
    let cases = [
        (
            "/login?password=x&keep=1",
            Some("/login?password=%5BREDACTED%5D&keep=1"),
        ),
        (
            "/login?user[password]=x",
            Some("/login?user[password]=%5BREDACTED%5D"),
        ),
        (
            "/login?user%5Bpassword%5D=x",
            Some("/login?user%5Bpassword%5D=%5BREDACTED%5D"),
        ),
        (
            "/login?user.password=x",
            Some("/login?user.password=%5BREDACTED%5D"),
        ),
        (
            "/pay?card[number]=4111&card[cvc]=1",
            Some("/pay?card[number]=%5BREDACTED%5D&card[cvc]=1"),
        ),
        (
            "/u/ann@example.com?to=ann%40example.com",
            Some("/u/ann@example.com?to=%5BREDACTED%5D"),
        ),
        ("/plain?q=1&r", None),
        ("/no-query", None),
    ];
    for (path, want) in cases {
        let got = p.mask_query(&sel, path).unwrap();
        let got = got.body.map(|b| String::from_utf8(b).unwrap());
        assert_eq!(got.as_deref(), want, "{path}");
    }
    assert_eq!(
        mask(&p, BodyKind::Form, "user[password]=x&a=1")
            .0
            .as_deref(),
        Some("user[password]=%5BREDACTED%5D&a=1")
    );
    // A query parameter that is not UTF-8 is refused by default, scanned on request.
    assert_eq!(
        p.mask_query(&sel, "/x?q=%FF").unwrap_err().as_code(),
        "not_utf8"
    );
    let bytes = policy(
        r#"{"on_not_utf8": "mask_bytes", "rules": [{"name": "d", "detectors": ["email"]}]}"#,
    );
    let got = bytes
        .mask_query(&everything(&bytes), "/x?q=%FFann%40example.com")
        .unwrap();
    assert_eq!(got.body.as_deref(), Some(&b"/x?q=%FF%5BREDACTED%5D"[..]));
}

#[test]
fn scan_all_headers_runs_detectors_over_every_header_value() {
    let headers: Vec<(String, String)> = [
        ("x-user", "ann@example.com"),
        ("x-note", "nothing"),
        (":path", "/ann@example.com"),
        ("authorization", "Bearer abcdefghijklmnop1234"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect();
    let off = one_rule(r#""detectors": ["email", "bearer_token"]"#);
    assert!(off
        .mask_headers(&everything(&off), &headers)
        .edits
        .is_empty());
    let on = policy(
        r#"{"scan_all_headers": true, "rules": [{"name": "r", "detectors": ["email", "bearer_token"]}]}"#,
    );
    let edits = on.mask_headers(&everything(&on), &headers);
    assert_eq!(
        edits.edits,
        vec![
            HeaderEdit::Replace {
                name: "x-user".into(),
                value: "[REDACTED]".into()
            },
            HeaderEdit::Replace {
                name: "authorization".into(),
                value: "Bearer [REDACTED]".into()
            },
        ]
    );
    assert_eq!(edits.hits, vec![RuleHits { rule: 0, count: 2 }]);
}

#[test]
fn json_sent_as_text_or_in_a_form_value_still_gets_its_keys_and_paths_masked() {
    let p = policy(
        r#"{"rules": [{"name": "k", "json_keys": ["password"]},
                      {"name": "p", "json_paths": ["/filter/user/ssn"]},
                      {"name": "d", "detectors": ["email"]}]}"#,
    );
    let cases = [
        (
            BodyKind::Text,
            r#"{"password": "x", "m": "ann@example.com"}"#,
            Some(r#"{"password": "[REDACTED]", "m": "[REDACTED]"}"#),
        ),
        (
            BodyKind::Text,
            "{ not json ann@example.com",
            Some("{ not json [REDACTED]"),
        ),
        (
            BodyKind::Form,
            r#"data={"password":"x"}&a=1"#,
            Some("data=%7B%22password%22%3A%22%5BREDACTED%5D%22%7D&a=1"),
        ),
        (
            BodyKind::Form,
            "filter=%7B%22user%22%3A%7B%22ssn%22%3A1%7D%7D",
            Some("filter=%7B%22user%22%3A%7B%22ssn%22%3A%22%5BREDACTED%5D%22%7D%7D"),
        ),
        (BodyKind::Form, r#"data={"ok":1}"#, None),
    ];
    for (kind, body, want) in cases {
        assert_eq!(mask(&p, kind, body).0.as_deref(), want, "{body}");
    }
}

#[test]
fn card_numbers_stored_as_json_numbers_are_found() {
    let p = one_rule(r#""detectors": ["card"]"#);
    assert_eq!(
        mask_json(
            &p,
            r#"{"card": 4111111111111111, "n": 4111111111111112, "f": 1.5}"#
        )
        .as_deref(),
        Some(r#"{"card": "[REDACTED]", "n": 4111111111111112, "f": 1.5}"#)
    );
    let p = one_rule(r#""detectors": ["card"], "strategy": "partial""#);
    assert_eq!(
        mask_json(&p, "[4111111111111111]").as_deref(),
        Some(r#"["************1111"]"#)
    );
}
