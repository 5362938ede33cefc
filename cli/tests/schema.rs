//! docs/schema/identity.schema.json against the parser the filter runs
//! (`IdentityPolicy::from_json`): the same keys in every object, the same enum
//! values, the same verdict on a set of probe values, and the same defaults.
//!
//! The key sets come from the parser itself: serde refuses an unknown key with
//! "unknown field `x`, expected one of `a`, `b`", which lists every key the
//! object accepts. A field added to config.rs but not to the schema fails here.

// Test code: clippy.toml allows these inside `#[test]` functions only, and this
// file's helpers are test code too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;

use meshguard_core::identity::{
    DetailLevel, IdentityPolicy, Mode, Peer, Reason, RequestInfo, Transport,
};
use serde_json::{json, Map, Value};

use common::repo_file;

const BOGUS_KEY: &str = "meshguard_schema_test_bogus_key";
const BOGUS_VARIANT: &str = "meshguard_schema_test_bogus_variant";

fn schema() -> Value {
    let path = repo_file("docs/schema/identity.schema.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn parse(config: &Value) -> Result<IdentityPolicy, String> {
    IdentityPolicy::from_json(config.to_string().as_bytes()).map_err(|e| e.to_string())
}

/// Follows a local `$ref` (`#/$defs/NAME`), once or repeatedly.
fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        // The identity filter's `shadow` is a whole policy: the root again.
        Some("#") => root,
        Some(r) => {
            let name = r.strip_prefix("#/$defs/").unwrap_or_else(|| panic!("{r}"));
            resolve(root, &root["$defs"][name])
        }
        None => s,
    }
}

// ---------------------------------------------------------------------------
// A validator for exactly the keywords the schema uses. Any other keyword
// fails the test, so nothing in the schema goes unchecked by accident.

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "title",
    "description",
    "default",
    "examples",
    "$defs",
];
/// `pattern` is for editors; there is no regex engine here, so it is not
/// evaluated (the parser checks paths and methods precisely).
const NOT_EVALUATED: &[&str] = &["pattern"];

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        // JSON Schema: any number with a zero fractional part.
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => panic!("unknown type {other}"),
    }
}

fn count(x: &Value) -> usize {
    usize::try_from(x.as_u64().unwrap()).unwrap()
}

fn valid(root: &Value, s: &Value, v: &Value) -> bool {
    let keywords = s.as_object().unwrap();
    keywords.iter().all(|(k, x)| match k.as_str() {
        "$ref" => valid(root, resolve(root, s), v),
        "type" => match x {
            Value::String(t) => has_type(v, t),
            Value::Array(ts) => ts.iter().any(|t| has_type(v, t.as_str().unwrap())),
            _ => panic!("type {x}"),
        },
        "enum" => x.as_array().unwrap().contains(v),
        "const" => x == v,
        "not" => !valid(root, x, v),
        "anyOf" => x.as_array().unwrap().iter().any(|b| valid(root, b, v)),
        "properties" => v.as_object().is_none_or(|o| {
            o.iter()
                .all(|(pk, pv)| x.get(pk).is_none_or(|ps| valid(root, ps, pv)))
        }),
        "additionalProperties" => {
            assert_eq!(x, &json!(false), "only `false` is used");
            let known = keywords.get("properties");
            v.as_object().is_none_or(|o| {
                o.keys()
                    .all(|pk| known.is_some_and(|p| p.get(pk).is_some()))
            })
        }
        "required" => v.as_object().is_none_or(|o| {
            x.as_array()
                .unwrap()
                .iter()
                .all(|r| o.contains_key(r.as_str().unwrap()))
        }),
        "items" => v
            .as_array()
            .is_none_or(|a| a.iter().all(|i| valid(root, x, i))),
        "minItems" => v.as_array().is_none_or(|a| a.len() >= count(x)),
        "maxItems" => v.as_array().is_none_or(|a| a.len() <= count(x)),
        "minLength" => v.as_str().is_none_or(|t| t.chars().count() >= count(x)),
        "maxLength" => v.as_str().is_none_or(|t| t.chars().count() <= count(x)),
        "minimum" => v.as_f64().is_none_or(|f| f >= x.as_f64().unwrap()),
        "maximum" => v.as_f64().is_none_or(|f| f <= x.as_f64().unwrap()),
        k if ANNOTATIONS.contains(&k) || NOT_EVALUATED.contains(&k) => true,
        other => panic!("the schema uses `{other}`, which this test does not evaluate"),
    })
}

// ---------------------------------------------------------------------------
// The object schemas of the config and how to build a config around each.

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Item,
}

#[derive(Debug)]
struct ObjectAt<'a> {
    at: Vec<Step>,
    schema: &'a Value,
}

impl ObjectAt<'_> {
    fn name(&self) -> String {
        let mut name = String::from("config");
        for step in &self.at {
            match step {
                Step::Key(k) => {
                    name.push('.');
                    name.push_str(k);
                }
                Step::Item => name.push_str("[]"),
            }
        }
        name
    }

    fn properties(&self) -> &Map<String, Value> {
        self.schema["properties"].as_object().unwrap()
    }
}

/// Every object schema reachable through `properties` and `items` (not through
/// `anyOf`, whose branches only constrain an object defined elsewhere).
fn objects(root: &Value) -> Vec<ObjectAt<'_>> {
    fn walk<'a>(root: &'a Value, s: &'a Value, at: Vec<Step>, out: &mut Vec<ObjectAt<'a>>) {
        let refers_to_root = |b: &Value| b.get("$ref").and_then(Value::as_str) == Some("#");
        let branches = s.get("anyOf").and_then(Value::as_array);
        if !at.is_empty()
            && (refers_to_root(s) || branches.is_some_and(|b| b.iter().any(refers_to_root)))
        {
            return; // the root, walked once
        }
        let s = resolve(root, s);
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            out.push(ObjectAt {
                at: at.clone(),
                schema: s,
            });
            for (k, p) in props {
                let mut next = at.clone();
                next.push(Step::Key(k.clone()));
                walk(root, p, next, out);
            }
        }
        if let Some(items) = s.get("items") {
            let mut next = at;
            next.push(Step::Item);
            walk(root, items, next, out);
        }
    }
    let mut out = Vec::new();
    walk(root, root, Vec::new(), &mut out);
    out
}

fn first_example(property: &Value) -> Value {
    property["examples"][0].clone()
}

/// The smallest valid object for `s`: its required keys, and the keys each
/// `anyOf` branch requires, each set to its first example.
fn base_object(s: &Value) -> Map<String, Value> {
    let branches = s["anyOf"].as_array().into_iter().flatten();
    let keys: Vec<&str> = std::iter::once(&s["required"])
        .chain(branches.map(|b| &b["required"]))
        .filter_map(Value::as_array)
        .flatten()
        .map(|k| k.as_str().unwrap())
        .collect();
    keys.into_iter()
        .map(|k| (k.to_string(), first_example(&s["properties"][k])))
        .collect()
}

/// A whole config with `object` at `at`, every enclosing object holding its
/// own required keys.
fn place(root: &Value, s: &Value, at: &[Step], object: Map<String, Value>) -> Value {
    let s = resolve(root, s);
    match at.split_first() {
        None => Value::Object(object),
        Some((Step::Key(k), rest)) => {
            let mut outer = base_object(s);
            outer.insert(k.clone(), place(root, &s["properties"][k], rest, object));
            Value::Object(outer)
        }
        Some((Step::Item, rest)) => json!([place(root, &s["items"], rest, object)]),
    }
}

/// The config with property `key` of the object at `obj` set to `value`.
fn config_with(root: &Value, obj: &ObjectAt<'_>, key: &str, value: Value) -> Value {
    let mut object = base_object(obj.schema);
    object.insert(key.to_string(), value);
    place(root, root, &obj.at, object)
}

/// The names serde lists after "expected" in an unknown field/variant error.
fn expected_names(message: &str) -> BTreeSet<String> {
    let (_, list) = message
        .split_once(", expected ")
        .unwrap_or_else(|| panic!("no list of expected names in {message:?}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// The enum values a property accepts, if it is an enum (through `$ref` and `anyOf`).
fn enum_values(root: &Value, s: &Value) -> Option<Vec<Value>> {
    let s = resolve(root, s);
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return Some(values.clone());
    }
    let branches: Vec<Vec<Value>> = s
        .get("anyOf")?
        .as_array()?
        .iter()
        .filter_map(|b| enum_values(root, b))
        .collect();
    (!branches.is_empty()).then(|| branches.concat())
}

// ---------------------------------------------------------------------------

#[test]
fn every_object_is_closed_and_every_property_documented() {
    let root = schema();
    assert_eq!(
        root["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let objects = objects(&root);
    assert!(objects.len() >= 6, "{objects:?}");
    for obj in &objects {
        let name = obj.name();
        assert_eq!(obj.schema["type"], "object", "{name}");
        assert_eq!(obj.schema["additionalProperties"], false, "{name}");
        for (key, p) in obj.properties() {
            let description = p["description"].as_str().unwrap_or("");
            assert!(description.len() > 20, "{name}.{key}: no description");
            assert!(
                p["examples"].as_array().is_some_and(|e| !e.is_empty()),
                "{name}.{key}: no examples"
            );
        }
    }
}

#[test]
fn the_schema_and_the_parser_accept_the_same_keys() {
    let root = schema();
    for obj in objects(&root) {
        let name = obj.name();
        let bogus = config_with(&root, &obj, BOGUS_KEY, json!(1));
        let error = parse(&bogus).expect_err(&format!("{name}: accepts an unknown key"));
        assert!(
            error.contains(&format!("unknown field `{BOGUS_KEY}`")),
            "{name}: {error}"
        );
        assert!(
            !valid(&root, &root, &bogus),
            "{name}: schema accepts {bogus}"
        );
        let parser_keys = expected_names(&error);
        let schema_keys: BTreeSet<String> = obj.properties().keys().cloned().collect();
        assert_eq!(
            parser_keys, schema_keys,
            "{name}: the parser's keys (left) differ from the schema's (right)"
        );

        // Each key, with each of its documented examples, is accepted by both.
        for (key, p) in obj.properties() {
            for example in p["examples"].as_array().unwrap() {
                let config = config_with(&root, &obj, key, example.clone());
                assert!(valid(&root, &root, &config), "schema refuses {config}");
                if let Err(e) = parse(&config) {
                    panic!("parser refuses {config}: {e}");
                }
            }
        }
    }
}

#[test]
fn the_schema_and_the_parser_list_the_same_enum_values() {
    let root = schema();
    let mut enums = 0;
    for obj in objects(&root) {
        for (key, p) in obj.properties() {
            let Some(values) = enum_values(&root, p) else {
                continue;
            };
            enums += 1;
            let config = config_with(&root, &obj, key, json!(BOGUS_VARIANT));
            let error = parse(&config).expect_err(&config.to_string());
            assert!(error.contains("unknown variant"), "{error}");
            let schema_values: BTreeSet<String> = values
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            assert_eq!(
                expected_names(&error),
                schema_values,
                "{}.{key}: the parser's values (left) differ from the schema's (right)",
                obj.name()
            );
        }
    }
    // mode, default_action, path_normalization, transport and override
    // min_tls_version, on_unusable_identity, detail, action.
    assert_eq!(enums, 8);
}

/// serde's derived `Deserialize` also reads a struct from a JSON array, field
/// by field in declaration order (`"deny_response": [404, "verbose"]`), and
/// `deny_unknown_fields` does not prevent it. That is a parser leniency, not
/// syntax: the schema allows objects only, and the difference is tolerated
/// here for object-typed properties alone (see the report on the core).
fn positional_struct(root: &Value, property: &Value, value: &Value) -> bool {
    let is_object = |s: &Value| resolve(root, s)["type"] == "object";
    let branches = property["anyOf"].as_array().into_iter().flatten();
    value.is_array() && (is_object(property) || branches.into_iter().any(is_object))
}

#[test]
fn the_schema_and_the_parser_agree_on_probe_values() {
    // Each property set to values of every JSON type, its enum values, its
    // default and a bogus string: the schema and the parser must agree on each.
    let root = schema();
    let mut probes = 0;
    for obj in objects(&root) {
        for (key, p) in obj.properties() {
            let mut values = vec![
                json!(null),
                json!(true),
                json!(12345),
                json!(403),
                json!("text"),
                json!([]),
                json!({}),
                json!(BOGUS_VARIANT),
            ];
            values.extend(enum_values(&root, p).unwrap_or_default());
            values.extend(p.get("default").cloned());
            for value in values {
                let config = config_with(&root, &obj, key, value.clone());
                let by_schema = valid(&root, &root, &config);
                let by_parser = parse(&config);
                if positional_struct(&root, p, &value) && by_parser.is_ok() {
                    continue;
                }
                assert_eq!(
                    by_schema,
                    by_parser.is_ok(),
                    "schema says {by_schema} for {config}; parser: {:?}",
                    by_parser.err()
                );
                probes += 1;
            }
        }
    }
    assert!(probes > 200, "{probes}");
}

#[test]
fn the_schema_defaults_are_the_parser_defaults() {
    let root = schema();
    let props = &root["properties"];
    let policy = parse(&json!({})).unwrap();
    let mode = match policy.mode() {
        Mode::Enforce => "enforce",
        Mode::DryRun => "dry-run",
    };
    assert_eq!(props["mode"]["default"], mode);
    let deny = &props["deny_response"]["properties"];
    assert_eq!(deny["status"]["default"], policy.deny_status());
    let detail = match policy.detail() {
        DetailLevel::Minimal => "minimal",
        DetailLevel::Reason => "reason",
        DetailLevel::Verbose => "verbose",
    };
    assert_eq!(deny["detail"]["default"], detail);
    assert_eq!(
        props["config_version"]["default"],
        json!(policy.config_version())
    );

    let request = RequestInfo {
        path: "/",
        method: "GET",
        host: "svc",
    };
    let decide = |transport: Transport| {
        policy
            .evaluate(&Peer::from_certificate(transport), &request)
            .reason
    };
    // default_action: deny.
    assert_eq!(props["default_action"]["default"], "deny");
    let mtls10 = Transport::from_host(
        Some(true),
        Some("TLSv1.0"),
        Some("spiffe://cluster.local/ns/a/sa/b"),
    );
    // transport.min_tls_version: none, so TLSv1.0 passes the transport check.
    let transport = &props["transport"]["properties"];
    assert_eq!(transport["min_tls_version"]["default"], json!(null));
    assert_eq!(decide(mtls10), Reason::NoMatchingRule);
    // transport.require_mtls: true.
    assert_eq!(transport["require_mtls"]["default"], true);
    assert_eq!(
        decide(Transport::from_host(Some(false), Some("TLSv1.3"), None)),
        Reason::MtlsRequired
    );
    for key in ["rules", "identity", "transport", "deny_response"] {
        assert!(
            parse(&json!({ key: props[key]["default"] })).is_ok(),
            "{key}"
        );
    }
}

#[test]
fn the_example_policies_match_the_schema() {
    let root = schema();
    for file in [
        "examples/identity/strict.json",
        "examples/identity/dry-run.json",
    ] {
        let config: Value =
            serde_json::from_slice(&std::fs::read(repo_file(file)).unwrap()).unwrap();
        assert!(valid(&root, &root, &config), "{file}");
        assert!(parse(&config).is_ok(), "{file}");
    }
}

#[test]
fn the_reference_documents_every_key_and_reason_code() {
    let doc = std::fs::read_to_string(repo_file("docs/identity.md")).unwrap();
    let root = schema();
    for obj in objects(&root) {
        for key in obj.properties().keys() {
            assert!(
                doc.contains(&format!("`{key}`")),
                "docs/identity.md does not mention `{key}` ({})",
                obj.name()
            );
        }
    }
    for reason in Reason::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", reason.code())),
            "docs/identity.md has no row for {}",
            reason.code()
        );
    }
}
