//! What `meshguard validate` reads: plugin JSON as the filter receives it, or
//! the Istio resources a team keeps in git (WasmPlugin for Istio ≤ 1.29,
//! TrafficExtension for ≥ 1.30), one or many per file, or a `kubectl kustomize`
//! output on standard input. Each meshguard resource yields its plugin JSON,
//! the filter it is for and its `vmConfig.env`, checked together.

use serde::Deserialize;
use serde_json::Value;

use crate::validate::Filter;

static NULL: Value = Value::Null;

/// The value at a JSON pointer, or `null`.
fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value.pointer(pointer).unwrap_or(&NULL)
}

/// One configuration to validate.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where it came from: the file, and the resource inside it.
    pub source: String,
    pub filter: Filter,
    /// How the filter was chosen, as shown to the user.
    pub filter_from: &'static str,
    /// The plugin JSON exactly as the filter receives it.
    pub plugin_config: Vec<u8>,
    /// `vmConfig.env` of a resource (none for plain plugin JSON).
    pub env: Vec<EnvEntry>,
}

/// One `vmConfig.env` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEntry {
    pub name: String,
    /// `INLINE` (with its value) or `HOST` (read from the proxy's environment).
    pub from_host: bool,
    pub value: Option<String>,
}

/// A resource in the input that is not a meshguard filter (skipped, said so).
#[derive(Debug, Clone)]
pub struct Skipped {
    pub source: String,
    pub kind: String,
}

/// Splits `bytes` (named `name`) into validation targets. `filter` is what
/// the user said with `--filter`, if anything.
pub fn targets(
    name: &str,
    bytes: &[u8],
    filter: Option<Filter>,
) -> anyhow::Result<(Vec<Target>, Vec<Skipped>)> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{name}: not UTF-8 text ({e})"))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        // Plugin JSON, or a resource written as JSON.
        let value: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        if value.get("kind").is_none() {
            let (filter, filter_from) = match filter {
                Some(f) => (f, "--filter"),
                None => (detect_from_keys(&value), "its keys"),
            };
            return Ok((
                vec![Target {
                    source: name.to_string(),
                    filter,
                    filter_from,
                    plugin_config: bytes.to_vec(),
                    env: Vec::new(),
                }],
                Vec::new(),
            ));
        }
    }
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (i, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|e| anyhow::anyhow!("{name}: YAML document {}: {e}", i + 1))?;
        if value.is_null() {
            continue; // an empty document (`---` at the end)
        }
        let kind = at(&value, "/kind").as_str().unwrap_or("").to_string();
        let resource = format!(
            "{name}: {kind} {}/{}",
            at(&value, "/metadata/namespace").as_str().unwrap_or("-"),
            at(&value, "/metadata/name").as_str().unwrap_or("?")
        );
        let spec = match kind.as_str() {
            "WasmPlugin" => at(&value, "/spec"),
            "TrafficExtension" => at(&value, "/spec/wasm"),
            _ => {
                skipped.push(Skipped {
                    source: resource,
                    kind,
                });
                continue;
            }
        };
        let Some((detected, from)) = detect_from_resource(&value, spec) else {
            skipped.push(Skipped {
                source: resource,
                kind: format!("{kind} (not a meshguard filter)"),
            });
            continue;
        };
        let (filter, filter_from) = match filter {
            Some(f) if f != detected => anyhow::bail!(
                "{resource}: --filter {} contradicts the resource, which is for the {} filter ({from})",
                f.name(),
                detected.name()
            ),
            _ => (detected, from),
        };
        let plugin_config = match at(spec, "/pluginConfig") {
            Value::Null => b"{}".to_vec(),
            config => serde_json::to_vec(config)?,
        };
        out.push(Target {
            source: resource,
            filter,
            filter_from,
            plugin_config,
            env: env_entries(at(spec, "/vmConfig/env")),
        });
    }
    Ok((out, skipped))
}

/// The filter a resource is for: its `pluginName` (Envoy's root id), else its
/// module url, else its name, naming `meshguard-<filter>` or `.../<filter>`.
fn detect_from_resource(resource: &Value, spec: &Value) -> Option<(Filter, &'static str)> {
    let candidates = [
        (at(spec, "/pluginName").as_str(), "its pluginName"),
        (at(resource, "/spec/pluginName").as_str(), "its pluginName"),
        (at(spec, "/url").as_str(), "its module url"),
        (at(resource, "/metadata/name").as_str(), "its name"),
    ];
    for (text, from) in candidates {
        let Some(text) = text else { continue };
        let lower = text.to_ascii_lowercase();
        // The combined plugin's root id, or its module's name in a URL.
        let combined = match from {
            "its pluginName" => lower == "meshguard",
            "its module url" => {
                lower.ends_with("/meshguard")
                    || lower.contains("/meshguard:")
                    || lower.contains("/meshguard@")
                    || lower.ends_with("/meshguard.wasm")
            }
            _ => false,
        };
        if combined {
            return Some((Filter::Meshguard, from));
        }
        for filter in [Filter::Identity, Filter::Masking, Filter::Audit] {
            let name = filter.name();
            if lower.contains(&format!("meshguard-{name}"))
                || lower.contains(&format!("meshguard_{name}"))
                || (from == "its module url"
                    && lower.contains("meshguard")
                    && lower.contains(&format!("/{name}")))
            {
                return Some((filter, from));
            }
        }
    }
    None
}

/// Plain plugin JSON: each filter's keys are its own; the combined
/// plugin's are its sections.
fn detect_from_keys(value: &Value) -> Filter {
    if value
        .as_object()
        .is_some_and(crate::policy_file::is_combined)
    {
        return Filter::Meshguard;
    }
    let has = |key: &str| value.get(key).is_some();
    let rules = at(value, "/rules").as_array().into_iter().flatten();
    let masking_rule = |r: &Value| {
        [
            "json_paths",
            "json_keys",
            "detectors",
            "patterns",
            "headers",
            "strategy",
        ]
        .iter()
        .any(|k| r.get(k).is_some())
    };
    if has("commands") || has("key_id") || has("key_env") || has("collector") {
        Filter::Audit
    } else if has("max_body_bytes") || rules.clone().any(masking_rule) {
        Filter::Masking
    } else {
        Filter::Identity
    }
}

fn env_entries(env: &Value) -> Vec<EnvEntry> {
    env.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(EnvEntry {
                name: at(e, "/name").as_str()?.to_string(),
                from_host: at(e, "/valueFrom").as_str() == Some("HOST"),
                value: at(e, "/value").as_str().map(str::to_string),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_plugin_json_is_recognised_by_its_keys() {
        for (json, want) in [
            (
                r#"{"rules": [{"name": "a", "action": "allow"}]}"#,
                Filter::Identity,
            ),
            (r#"{"transport": {"require_mtls": true}}"#, Filter::Identity),
            (
                r#"{"rules": [{"name": "a", "json_keys": ["ssn"]}]}"#,
                Filter::Masking,
            ),
            (r#"{"commands": []}"#, Filter::Audit),
        ] {
            let (t, _) = targets("x.json", json.as_bytes(), None).unwrap();
            assert_eq!(t[0].filter, want, "{json}");
        }
    }

    #[test]
    fn istio_resources_yield_their_plugin_config_filter_and_env() {
        let yaml = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: meshguard-identity, namespace: shop}
spec:
  pluginName: meshguard-identity
  pluginConfig: {rules: []}
  vmConfig:
    env:
    - {name: MESHGUARD_TRUSTED_KEYS, valueFrom: HOST}
    - {name: X, value: "1"}
---
apiVersion: extensions.istio.io/v1alpha1
kind: TrafficExtension
metadata: {name: pii, namespace: shop}
spec:
  wasm:
    url: oci://registry.example.com/meshguard/masking:0.1.0
    pluginConfig: {rules: [{name: a, json_keys: [ssn]}]}
---
"#;
        let (t, skipped) = targets("all.yaml", yaml.as_bytes(), None).unwrap();
        assert_eq!(skipped.len(), 1);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].filter, Filter::Identity);
        assert_eq!(t[0].plugin_config, br#"{"rules":[]}"#);
        assert_eq!(
            t[0].env,
            [
                EnvEntry {
                    name: "MESHGUARD_TRUSTED_KEYS".into(),
                    from_host: true,
                    value: None
                },
                EnvEntry {
                    name: "X".into(),
                    from_host: false,
                    value: Some("1".into())
                },
            ]
        );
        assert_eq!(
            (t[1].filter, t[1].filter_from),
            (Filter::Masking, "its module url")
        );
        let err = targets("all.yaml", yaml.as_bytes(), Some(Filter::Audit)).unwrap_err();
        assert!(err.to_string().contains("contradicts"), "{err}");
    }
}
