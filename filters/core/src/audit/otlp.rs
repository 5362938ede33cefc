//! Records as OpenTelemetry log records, in OTLP/HTTP JSON (`/v1/logs`), for
//! any OpenTelemetry Collector's `otlp` receiver (docs/audit.md, "OTLP").
//!
//! Each record becomes one `LogRecord`: `eventName` `meshguard.audit.request`,
//! `timeUnixNano` the request's time, severity INFO, the record's canonical
//! JSON as the `body` string (what `meshguard audit verify` checks: the seal
//! covers it), and attributes that copy record fields for queries (the audit
//! id, chain, seq, command, hashes, peer, decisions, config fingerprint, and
//! the HTTP and `security_rule.*` semantic attributes). The attributes are not
//! sealed: the verifier checks each one it finds against the sealed body.

use serde_json::Value;

use super::record::Record;
use crate::canonical::write_str;

/// The `eventName` of an audit record.
pub const EVENT_NAME: &str = "meshguard.audit.request";
/// The instrumentation scope's name.
pub const SCOPE_NAME: &str = "meshguard.audit";
/// `security_rule.ruleset.name`.
pub const RULESET: &str = "meshguard.audit";
/// The OTLP `SeverityNumber` of INFO.
pub const SEVERITY_INFO: u8 = 9;

/// An attribute value: OTLP `stringValue` or `intValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    Str(String),
    Int(u64),
}

/// The attributes a record is exported with, in order.
pub fn attributes(record: &Record) -> Vec<(String, AttributeValue)> {
    use AttributeValue::{Int, Str};
    let mut out: Vec<(String, AttributeValue)> = vec![
        ("meshguard.audit.id".into(), Str(record.id.clone())),
        ("meshguard.audit.chain".into(), Str(record.chain.clone())),
        ("meshguard.audit.seq".into(), Int(record.seq)),
        ("meshguard.audit.kid".into(), Str(record.kid.clone())),
        (
            "meshguard.audit.command".into(),
            Str(record.command.clone()),
        ),
        (
            "meshguard.audit.command_sha256".into(),
            Str(record.command_sha256.clone()),
        ),
        ("security_rule.ruleset.name".into(), Str(RULESET.into())),
        ("security_rule.name".into(), Str(record.command.clone())),
        ("http.request.method".into(), Str(record.method.clone())),
        ("url.path".into(), Str(record.path.clone())),
        ("server.address".into(), Str(record.host.clone())),
    ];
    if let Some(fingerprint) = &record.config_fingerprint {
        out.push((
            "meshguard.config.fingerprint".into(),
            Str(fingerprint.clone()),
        ));
        out.push(("security_rule.version".into(), Str(fingerprint.clone())));
    }
    if let Some(peer) = &record.peer {
        out.push(("meshguard.peer".into(), Str(peer.clone())));
    }
    if let Some(status) = record.status {
        out.push(("http.response.status_code".into(), Int(u64::from(status))));
    }
    if let Some(duration) = record.duration_ms {
        out.push(("meshguard.audit.duration_ms".into(), Int(duration)));
    }
    for (section, decision) in &record.decisions {
        let text = match decision {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push((format!("meshguard.decision.{section}"), Str(text)));
    }
    out
}

/// One `LogRecord` object for `record`, whose canonical JSON is `record_json`,
/// observed (sealed) at `observed_ms`.
pub fn log_record(record: &Record, record_json: &str, observed_ms: u64) -> String {
    let mut out = Vec::with_capacity(record_json.len().saturating_mul(2).saturating_add(1024));
    let nanos = |ms: u64| ms.saturating_mul(1_000_000).to_string();
    out.extend_from_slice(b"{\"timeUnixNano\":\"");
    out.extend_from_slice(nanos(record.ts_ms).as_bytes());
    out.extend_from_slice(b"\",\"observedTimeUnixNano\":\"");
    out.extend_from_slice(nanos(observed_ms).as_bytes());
    out.extend_from_slice(
        format!(
            "\",\"severityNumber\":{SEVERITY_INFO},\"severityText\":\"INFO\",\"eventName\":\"{EVENT_NAME}\",\"body\":{{\"stringValue\":"
        )
        .as_bytes(),
    );
    write_str(record_json, &mut out);
    out.extend_from_slice(b"},\"attributes\":[");
    for (i, (key, value)) in attributes(record).iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"key\":");
        write_str(key, &mut out);
        match value {
            AttributeValue::Str(s) => {
                out.extend_from_slice(b",\"value\":{\"stringValue\":");
                write_str(s, &mut out);
            }
            AttributeValue::Int(n) => {
                out.extend_from_slice(b",\"value\":{\"intValue\":\"");
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'"');
            }
        }
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"]}");
    String::from_utf8(out).unwrap_or_default()
}

/// What surrounds the log records of one export request
/// (`ExportLogsServiceRequest`): the text before the first record and after
/// the last, records being separated by `,`.
pub fn export_framing() -> (String, String) {
    let head = format!(
        "{{\"resourceLogs\":[{{\"resource\":{{\"attributes\":[{{\"key\":\"service.name\",\"value\":{{\"stringValue\":\"meshguard\"}}}}]}},\
         \"scopeLogs\":[{{\"scope\":{{\"name\":\"{SCOPE_NAME}\",\"version\":\"{}\"}},\"logRecords\":[",
        super::record::RECORD_VERSION
    );
    (head, "]}]}]}".into())
}

/// The most bytes one exported log record takes, for a record of at most
/// `record_bound` bytes: the body holds the record escaped once more (at most
/// twice as long), the attributes copy its fields (no longer than the record),
/// plus keys and framing.
pub fn log_record_bound(record_bound: usize) -> usize {
    record_bound.saturating_mul(3).saturating_add(4096)
}

/// A meshguard record found in an OTLP JSON document: its canonical JSON (the
/// body) and the attributes it was exported with.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub body: String,
    pub attributes: Vec<(String, Value)>,
}

/// The meshguard records of one OTLP JSON document (an
/// `ExportLogsServiceRequest`, as a Collector's file exporter writes one per
/// line), or `None` when `value` is not one. Log records of other events are
/// skipped.
pub fn exported_records(value: &Value) -> Option<Vec<Exported>> {
    let resource_logs = value.get("resourceLogs")?.as_array()?;
    let mut out = Vec::new();
    let scope_logs = resource_logs
        .iter()
        .filter_map(|r| r.get("scopeLogs")?.as_array())
        .flatten();
    let records = scope_logs
        .filter_map(|s| s.get("logRecords")?.as_array())
        .flatten();
    for record in records {
        if record.get("eventName").and_then(Value::as_str) != Some(EVENT_NAME) {
            continue;
        }
        let body = record
            .get("body")
            .and_then(|b| b.get("stringValue"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let attributes = record
            .get("attributes")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|a| {
                        Some((
                            a.get("key")?.as_str()?.to_owned(),
                            a.get("value").cloned().unwrap_or(Value::Null),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Exported { body, attributes });
    }
    Some(out)
}

/// The first exported attribute that differs from the sealed record's (an
/// attribute the exporter left out, or one a pipeline added, is not a
/// difference): `(key, exported value)`.
pub fn attribute_mismatch(
    record: &Record,
    exported: &[(String, Value)],
) -> Option<(String, String)> {
    let expected = attributes(record);
    for (key, value) in exported {
        let Some((_, want)) = expected.iter().find(|(k, _)| k == key) else {
            // Our namespace is ours alone: an unknown meshguard key is an edit.
            if key.starts_with("meshguard.") {
                return Some((key.clone(), value.to_string()));
            }
            continue;
        };
        let matches = match want {
            AttributeValue::Str(s) => {
                value.get("stringValue").and_then(Value::as_str) == Some(s.as_str())
            }
            AttributeValue::Int(n) => match value.get("intValue") {
                Some(Value::String(text)) => text.parse::<u64>().ok() == Some(*n),
                Some(Value::Number(number)) => number.as_u64() == Some(*n),
                _ => false,
            },
        };
        if !matches {
            return Some((key.clone(), value.to_string()));
        }
    }
    None
}
