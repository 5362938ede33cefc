use crate::audit::policy::{MAX_COMMANDS, RESERVED_HEADERS};
use crate::audit::{AuditPolicy, Collector, Part};
use crate::config::ConfigError;

fn error(json: &str) -> String {
    AuditPolicy::from_json(json.as_bytes())
        .unwrap_err()
        .to_string()
}

#[test]
fn an_empty_object_gives_every_default() {
    let p = AuditPolicy::from_json(b"{}").unwrap();
    assert_eq!(p.config_version(), None);
    assert_eq!(p.key_env(), "MESHGUARD_AUDIT_KEY");
    assert_eq!(p.key_id(), "default");
    assert_eq!(p.command_header(), "x-meshguard-command-sha256");
    assert_eq!(p.audit_header(), "x-meshguard-audit");
    assert_eq!(p.id_header(), "x-meshguard-audit-id");
    assert_eq!(p.max_body_bytes(), 1_048_576);
    assert!(p.log_records());
    assert_eq!(p.collector(), None);
    assert!(!p.fail_closed());
    assert_eq!(p.command_count(), 0);
    assert!(p.warnings().is_empty());
    assert_eq!(p.config_fingerprint().map(str::len), Some(64));
}

#[test]
fn every_key_is_read() {
    let p = AuditPolicy::from_json(
        br#"{
      "config_version": "2024-06-01.1",
      "key_env": "AUDIT_KEY_2",
      "key_id": "k-2024.06",
      "command_header": "x-cmd",
      "audit_header": "x-audit",
      "id_header": "x-audit-id",
      "max_body_bytes": 4096,
      "commands": [{"name": "run", "paths": ["/run"], "not_paths": ["/run/x"], "methods": ["post"],
                    "not_methods": ["GET"], "hosts": ["*.example.com"], "not_hosts": ["a.example.com"],
                    "parts": ["method", "body", {"json_pointer": ""}]}],
      "log_records": false,
      "collector": {"cluster": "outbound|443||audit.example.com", "path": "/ingest", "authority": "audit.example.com",
                    "timeout_ms": 500, "max_queue": 10, "max_retries": 0, "batch_size": 10,
                    "max_queue_bytes": 65536, "max_in_flight": 1},
      "fail_closed": true
    }"#,
    )
    .unwrap();
    assert_eq!(p.config_version(), Some("2024-06-01.1"));
    assert_eq!(p.key_env(), "AUDIT_KEY_2");
    assert_eq!(p.key_id(), "k-2024.06");
    assert_eq!(
        (p.command_header(), p.audit_header(), p.id_header()),
        ("x-cmd", "x-audit", "x-audit-id")
    );
    assert_eq!(p.max_body_bytes(), 4096);
    assert!(!p.log_records());
    assert!(p.fail_closed());
    assert_eq!(
        p.collector(),
        Some(&Collector {
            format: crate::audit::CollectorFormat::Ndjson,
            cluster: "outbound|443||audit.example.com".into(),
            path: "/ingest".into(),
            authority: "audit.example.com".into(),
            timeout_ms: 500,
            max_queue: 10,
            max_retries: 0,
            batch_size: 10,
            max_queue_bytes: 65536,
            max_in_flight: 1,
        })
    );
    let r = crate::request::RequestInfo {
        path: "/run",
        method: "POST",
        host: "b.example.com",
    };
    let c = p.command_for(&r);
    assert_eq!(p.command_name(c), "run");
    assert_eq!(
        p.command_parts(c),
        &[Part::Method, Part::Body, Part::JsonPointer("".into())]
    );
}

#[test]
fn collector_defaults_apply() {
    let p = AuditPolicy::from_json(br#"{"collector": {"cluster": "audit"}}"#).unwrap();
    assert_eq!(
        p.collector(),
        Some(&Collector {
            format: crate::audit::CollectorFormat::Ndjson,
            cluster: "audit".into(),
            path: "/v1/audit-records".into(),
            authority: "audit-collector".into(),
            timeout_ms: 2000,
            max_queue: 1000,
            max_retries: 3,
            batch_size: 50,
            max_queue_bytes: 16 * 1024 * 1024,
            max_in_flight: 4,
        })
    );
    assert_eq!(p.max_record_path_bytes(), 1024);
    let limits = p.outbox_limits().unwrap();
    assert_eq!(limits.record_bound, p.record_bound());
    assert!(!limits.fail_closed);
}

#[test]
fn the_fingerprint_ignores_spacing_and_key_order_only() {
    let a = AuditPolicy::from_json(br#"{"key_id": "a", "log_records": true}"#).unwrap();
    let b = AuditPolicy::from_json(b"{ \"log_records\" : true,\n \"key_id\":\"a\" }").unwrap();
    let c = AuditPolicy::from_json(br#"{"key_id": "b", "log_records": true}"#).unwrap();
    assert_eq!(a.config_fingerprint(), b.config_fingerprint());
    assert_ne!(a.config_fingerprint(), c.config_fingerprint());
}

#[test]
fn config_errors_name_the_json_path_of_the_problem() {
    let cmd = |extra: &str| {
        format!(
            r#"{{"commands": [{{"name": "run", "parts": ["method"]}}, {{"name": "b", {extra}}}]}}"#
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (r#"{"key_ide": "x"}"#.into(), "key_ide: unknown field `key_ide`, expected one of"),
        (
            cmd(r#""parts": ["method"], "pahts": ["/x"]"#),
            "commands[1].pahts: unknown field `pahts`",
        ),
        (cmd(r#""paths": ["/x"]"#), "commands[1]: missing field `parts`"),
        (
            cmd(r#""parts": ["headers"]"#),
            "commands[1].parts[0]: unknown part \"headers\": expected \"method\", \"path\", \"query\", \"body\" or {\"json_pointer\": \"/...\"}",
        ),
        (
            cmd(r#""parts": [{"json_ptr": "/a"}]"#),
            "commands[1].parts[0]: unknown key \"json_ptr\" in a part: the only object part is {\"json_pointer\": \"/...\"}",
        ),
        (
            cmd(r#""parts": [{"method": null}]"#),
            "commands[1].parts[0]: unknown key \"method\" in a part",
        ),
        (
            cmd(r#""parts": [{}]"#),
            "commands[1].parts[0]: missing field `json_pointer`",
        ),
        (
            cmd(r#""parts": [{"json_pointer": 1}]"#),
            "commands[1].parts[0].json_pointer: invalid type: integer `1`, expected a string",
        ),
        (
            cmd(r#""parts": [null]"#),
            "commands[1].parts[0]: invalid type: null, expected a part: \"method\", \"path\", \"query\", \"body\" or {\"json_pointer\": \"/...\"}",
        ),
        (
            cmd(r#""parts": ["json_pointer"]"#),
            "commands[1].parts[0]: unknown part \"json_pointer\"",
        ),
        (
            r#"{"commands": [{"name": "run", "parts": ["method"]}, {"name": "run", "parts": ["path"]}]}"#.into(),
            "commands[1].name: \"run\" is already the name of commands[0]; names must be unique",
        ),
        (
            r#"{"commands": [{"name": "default", "parts": ["path"]}]}"#.into(),
            "commands[0].name: \"default\" is reserved for the built-in command used when none matches",
        ),
        (
            r#"{"commands": [{"name": " ", "parts": ["path"]}]}"#.into(),
            "commands[0].name: must not be empty",
        ),
        (
            cmd(r#""parts": []"#),
            "commands[1].parts: is an empty list: a command hashes at least one part",
        ),
        (
            cmd(r#""parts": ["path", "method", "path"]"#),
            "commands[1].parts[2]: contradicts commands[1].parts[0]: the part \"path\" is listed twice",
        ),
        (
            cmd(r#""parts": ["path", {"json_pointer": "query"}]"#),
            "commands[1].parts[1].json_pointer: \"query\" is not a JSON pointer (RFC 6901): it must be empty (the whole body) or start with `/`",
        ),
        (
            cmd(r#""parts": [{"json_pointer": "/a~2b"}]"#),
            "commands[1].parts[0].json_pointer: \"/a~2b\" is not a JSON pointer (RFC 6901): `~` must be followed by `0` (for `~`) or `1` (for `/`)",
        ),
        (
            cmd(r#""parts": [{"json_pointer": "/a~"}]"#),
            "commands[1].parts[0].json_pointer: \"/a~\" is not a JSON pointer (RFC 6901): `~`",
        ),
        (
            cmd(r#""parts": ["path"], "paths": ["api"]"#),
            "commands[1].paths[0]: \"api\" must start with `/`",
        ),
        (
            cmd(r#""parts": ["path"], "methods": []"#),
            "commands[1].methods: is an empty list",
        ),
        (
            r#"{"audit_header": "X-Audit"}"#.into(),
            "audit_header: \"X-Audit\" is not a lower-case HTTP header name: 'X' is not allowed (header names are written in lower case)",
        ),
        (
            r#"{"command_header": "x cmd"}"#.into(),
            "command_header: \"x cmd\" is not a lower-case HTTP header name: ' ' is not allowed",
        ),
        (
            r#"{"id_header": ":path"}"#.into(),
            "id_header: \":path\" is not a lower-case HTTP header name: ':' is not allowed",
        ),
        (r#"{"id_header": ""}"#.into(), "id_header: must be a header name of 1 to 256 bytes"),
        (
            r#"{"audit_header": "authorization"}"#.into(),
            "audit_header: \"authorization\" is a header the proxy or the application relies on",
        ),
        (
            r#"{"audit_header": "x-a", "id_header": "x-a"}"#.into(),
            "id_header: contradicts audit_header: both name the header \"x-a\"; each needs its own",
        ),
        (
            r#"{"id_header": "x-meshguard-command-sha256"}"#.into(),
            "id_header: contradicts command_header",
        ),
        (
            r#"{"key_env": "1KEY"}"#.into(),
            "key_env: \"1KEY\" is not an environment variable name",
        ),
        (
            r#"{"key_id": "key 1"}"#.into(),
            "key_id: \"key 1\" is not a key id (letters, digits, `.`, `_` and `-`, 1 to 64 bytes)",
        ),
        (r#"{"key_id": ""}"#.into(), "key_id: \"\" is not a key id"),
        (r#"{"config_version": ""}"#.into(), "config_version: must not be empty"),
        (
            r#"{"max_body_bytes": 0}"#.into(),
            "max_body_bytes: 0 is out of range: 1 to 67108864 (64 MiB)",
        ),
        (
            r#"{"max_body_bytes": 67108865}"#.into(),
            "max_body_bytes: 67108865 is out of range",
        ),
        (
            r#"{"max_body_bytes": -1}"#.into(),
            "max_body_bytes: invalid value: integer `-1`, expected u64",
        ),
        (
            r#"{"max_body_bytes": 1.5}"#.into(),
            "max_body_bytes: invalid type: floating point `1.5`, expected u64",
        ),
        (
            r#"{"fail_closed": true}"#.into(),
            "fail_closed: is true but no collector is configured",
        ),
        (
            r#"{"fail_closed": true, "collector": null}"#.into(),
            "fail_closed: is true but no collector is configured",
        ),
        (r#"{"collector": {}}"#.into(), "collector: missing field `cluster`"),
        (
            r#"{"collector": {"cluster": ""}}"#.into(),
            "collector.cluster: must not be empty",
        ),
        (
            r#"{"collector": {"cluster": "a", "path": "v1"}}"#.into(),
            "collector.path: \"v1\" must start with `/`",
        ),
        (
            r#"{"collector": {"cluster": "a", "authority": "a b"}}"#.into(),
            "collector.authority: \"a b\" contains whitespace or control characters",
        ),
        (
            r#"{"collector": {"cluster": "a", "timeout_ms": 0}}"#.into(),
            "collector.timeout_ms: 0 is out of range: 1 to 60000",
        ),
        (
            r#"{"collector": {"cluster": "a", "max_queue": 100001}}"#.into(),
            "collector.max_queue: 100001 is out of range: 1 to 100000",
        ),
        (
            r#"{"collector": {"cluster": "a", "max_retries": 11}}"#.into(),
            "collector.max_retries: 11 is out of range: 0 to 10",
        ),
        (
            r#"{"collector": {"cluster": "a", "batch_size": 0}}"#.into(),
            "collector.batch_size: 0 is out of range: 1 to 1000",
        ),
        (
            r#"{"collector": {"cluster": "a", "max_queue_bytes": 1000}}"#.into(),
            "collector.max_queue_bytes: 1000 is out of range: 65536 to 1073741824",
        ),
        (
            r#"{"collector": {"cluster": "a", "max_in_flight": 0}}"#.into(),
            "collector.max_in_flight: 0 is out of range: 1 to 64",
        ),
        (
            r#"{"max_record_path_bytes": 8}"#.into(),
            "max_record_path_bytes: 8 is out of range: 16 to 16384",
        ),
        (
            r#"{"collector": {"cluster": "a", "max_queue": 10}}"#.into(),
            "collector.batch_size: contradicts collector.max_queue: a batch of 50 records is larger than the queue of 10",
        ),
        (
            r#"{"collector": {"cluster": "a", "retries": 1}}"#.into(),
            "collector.retries: unknown field `retries`",
        ),
        (r#"{"log_records": "yes"}"#.into(), "log_records: invalid type: string \"yes\", expected a boolean"),
    ];
    for (json, want) in cases {
        let err = error(&json);
        assert!(
            err.starts_with(want),
            "{json}\n  gave {err:?}\n  want {want:?}"
        );
    }
}

#[test]
fn every_reserved_header_is_refused() {
    for name in RESERVED_HEADERS {
        let err = error(&format!(r#"{{"id_header": "{name}"}}"#));
        assert!(err.contains("relies on"), "{name}: {err}");
    }
}

#[test]
fn command_lists_are_bounded() {
    let commands: Vec<String> = (0..=MAX_COMMANDS)
        .map(|i| format!(r#"{{"name": "c{i}", "paths": ["/c{i}"], "parts": ["path"]}}"#))
        .collect();
    let json = format!(r#"{{"commands": [{}]}}"#, commands.join(","));
    assert!(matches!(
        AuditPolicy::from_json(json.as_bytes()),
        Err(ConfigError::TooMany {
            count: 1001,
            max: 1000,
            ..
        })
    ));
    let json = format!(
        r#"{{"commands": [{}]}}"#,
        commands[..MAX_COMMANDS].join(",")
    );
    assert_eq!(
        AuditPolicy::from_json(json.as_bytes())
            .unwrap()
            .command_count(),
        MAX_COMMANDS
    );
}

#[test]
fn probable_mistakes_are_warned_about() {
    let p = AuditPolicy::from_json(
        br#"{"log_records": false, "commands": [
            {"name": "all", "parts": ["method"]},
            {"name": "never", "paths": ["/x"], "parts": ["path"]}]}"#,
    )
    .unwrap();
    assert_eq!(
        p.warnings(),
        [
            "commands[0] (all) matches every request, so commands[1] (never) and later ones never apply",
            "log_records is false and no collector is configured: records are written nowhere; only the request headers are added",
        ]
    );
}

#[test]
fn only_nullable_keys_accept_null() {
    let accepted = [
        r#"{"config_version": null, "collector": null}"#,
        r#"{"commands": [{"name": "x", "paths": null, "not_paths": null, "methods": null,
            "not_methods": null, "hosts": null, "not_hosts": null, "parts": [{"json_pointer": "/a~1b/0"}]}]}"#,
    ];
    for json in accepted {
        assert!(AuditPolicy::from_json(json.as_bytes()).is_ok(), "{json}");
    }
    let refused = [
        (
            "commands",
            "commands: invalid type: null, expected a sequence",
        ),
        (
            "log_records",
            "log_records: invalid type: null, expected a boolean",
        ),
        (
            "fail_closed",
            "fail_closed: invalid type: null, expected a boolean",
        ),
        ("key_id", "key_id: invalid type: null, expected a string"),
        ("key_env", "key_env: invalid type: null, expected a string"),
        (
            "audit_header",
            "audit_header: invalid type: null, expected a string",
        ),
        (
            "max_body_bytes",
            "max_body_bytes: invalid type: null, expected u64",
        ),
    ];
    for (key, want) in refused {
        let err = error(&format!(r#"{{"{key}": null}}"#));
        assert!(err.starts_with(want), "{key}: {err}");
    }
}
