//! Metric names, in the Istio convention for tags embedded in a stat name.
//!
//! A filter defines `base.tag=.=value;.;tag2=.=value2;.;`; Envoy's tag extractors
//! (Istio: `extraStatTags`) turn each `(tag=\.=(.*?);\.;)` into a Prometheus
//! label, so `/stats/prometheus` shows `base{tag="value",tag2="value2"}`. Values
//! come only from fixed enums here: cardinality is bounded by construction.

/// Every tag meshguard emits. Istio users list these in `extraStatTags`.
pub const TAG_NAMES: [&str; 8] = [
    "decision",
    "reason",
    "filter",
    "result",
    "version",
    "rule",
    "direction",
    "section",
];

/// Gauge of the linear memory of the largest of a filter's Wasm VMs in the
/// proxy, by `filter`.
pub const VM_MEMORY: &str = "meshguard_vm_memory_bytes";

/// Counter of identity-filter decisions, by `decision` and `reason`.
pub const IDENTITY_REQUESTS: &str = "meshguard_identity_requests_total";
/// Counter of the shadow policy's decisions, by `decision` and `reason`.
pub const IDENTITY_SHADOW_REQUESTS: &str = "meshguard_identity_shadow_requests_total";
/// Counter of requests decided by each shadow rule, by `rule`.
pub const IDENTITY_SHADOW_RULE_HITS: &str = "meshguard_identity_shadow_rule_hits_total";
/// Counter of requests where the shadow policy's verdict differs from the
/// enforced one, by the shadow's `decision`.
pub const IDENTITY_SHADOW_DISAGREEMENTS: &str = "meshguard_identity_shadow_disagreements_total";
/// Counter of configuration loads, by `filter` and `result`.
pub const CONFIG_LOADS: &str = "meshguard_config_loads_total";

/// Gauge, 1 while the filter's active config differs from the intended one.
pub const CONFIG_DRIFT: &str = "meshguard_config_drift";
/// Gauge, 1 while nothing trusted says what this filter's config should be
/// (no intended version, or the last answer was not believed).
pub const CONFIG_UNKNOWN: &str = "meshguard_config_unknown";
/// Counter of source-of-truth answers not believed, by `reason`.
pub const INTENDED_ANSWERS_REFUSED: &str = "meshguard_intended_answers_refused_total";
/// Gauge, 1 while the workload is quarantined for drift.
pub const CONFIG_QUARANTINED: &str = "meshguard_config_quarantined";
/// Gauge, 1 for the active `config_version` (label `version`).
pub const CONFIG_INFO: &str = "meshguard_config_info";
/// Gauge, 1 while a combined plugin's section differs from the one the
/// believed intended document names, by `filter` and `section` (the
/// document's `sections`; the whole fingerprint decides drift).
pub const CONFIG_SECTION_DRIFT: &str = "meshguard_config_section_drift";
/// Gauge, seconds since the intended version was last obtained.
pub const CONFIG_CHECK_AGE: &str = "meshguard_config_check_age_seconds";
/// Counter of failed calls to the source of truth, by `filter` and `reason`
/// (`dispatch_failed`, `no_answer`, `bad_status`, `too_large`).
pub const INTENDED_SOURCE_ERRORS: &str = "meshguard_intended_source_errors_total";
/// Counter of requests refused because their config instance was superseded
/// by a newer signed serial (a replayed config Envoy served from its cache).
pub const CONFIG_SUPERSEDED_DENIED: &str = "meshguard_config_superseded_denied_total";
/// Counter of requests a superseded config instance still judged because
/// they came over a connection it served while current (a listener draining
/// after a push), within `MESHGUARD_DRAIN_GRACE_SECONDS`.
pub const CONFIG_SUPERSEDED_DRAINED: &str = "meshguard_config_superseded_drained_total";
/// Counter of requests refused by quarantine.
pub const QUARANTINE_DENIED: &str = "meshguard_quarantine_denied_total";
/// Counter of requests refused by a VM that could not admit the config this
/// proxy admitted (it refuses rather than run without the check), by
/// `filter` and `reason` (the load result it would have given).
pub const CONFIG_NOT_ADMITTED_DENIED: &str = "meshguard_config_not_admitted_denied_total";
/// Counter of requests refused because their filter chain is not a Service
/// the config's release names (`release.services`, on waypoints).
pub const CONFIG_OUT_OF_SCOPE_DENIED: &str = "meshguard_config_out_of_scope_denied_total";
/// Gauge, seconds since the newest believed intended document was issued:
/// a source re-serving an old (still valid) document shows here, while the
/// check age stays low.
pub const INTENDED_DOCUMENT_AGE: &str = "meshguard_intended_document_age_seconds";

/// Counter of audit records, by `result`: emitted, delivered (to the
/// collector), dropped (queue full, retries exhausted, not sealable).
pub const AUDIT_RECORDS: &str = "meshguard_audit_records_total";
/// Counter of requests whose command hash could not be computed.
pub const AUDIT_HASH_FAILURES: &str = "meshguard_audit_hash_failures_total";
/// Counter of requests the audit filter refused under `fail_closed`, by
/// `reason`: collector_unavailable, queue_full (no room for the record in the
/// outbox), hash_failed.
pub const AUDIT_REFUSED: &str = "meshguard_audit_refused_total";

/// Counter of failed calls to the audit collector, by `reason`
/// (`dispatch_failed`, `no_answer`, `bad_status`); the records stay in the
/// outbox for retry (`meshguard_audit_records_total{result}` counts their fate).
pub const AUDIT_COLLECTOR_FAILURES: &str = "meshguard_audit_collector_failures_total";

/// Counter of internal errors the native module recovered from, by
/// `filter`: a panic in a hook, after which the stream was refused (`503`,
/// `meshguard_internal_error`) or reset. Native module only: in a Wasm VM a
/// panic fails the VM (Envoy's failure policy decides).
pub const PANICS: &str = "meshguard_panics_total";

/// Longest `version` label value; longer versions are cut (bounded label size).
pub const MAX_VERSION_LABEL: usize = 64;

/// A `config_version` as a label value (see [`label_value`]); `unset` when absent.
pub fn version_label(version: Option<&str>) -> String {
    version.map_or_else(|| "unset".into(), label_value)
}

/// Config text (a version, a rule name) as a label value: characters outside
/// `[A-Za-z0-9._-]` become `_` (they would break the tag syntax), at most 64.
pub fn label_value(text: &str) -> String {
    text.chars()
        .take(MAX_VERSION_LABEL)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Counter of values masked, by `rule` and `direction`.
pub const MASKING_FIELDS: &str = "meshguard_masking_fields_total";
/// Counter of values dry-run mode would have masked, by `rule` and `direction`.
pub const MASKING_DRY_RUN_FIELDS: &str = "meshguard_masking_dry_run_fields_total";
/// Counter of bodies forwarded without masking, by `direction` and `reason`.
pub const MASKING_SKIPPED: &str = "meshguard_masking_bodies_skipped_total";
/// Counter of messages refused because they could not be masked, by `direction` and `reason`.
pub const MASKING_REFUSED: &str = "meshguard_masking_bodies_refused_total";

/// Counter of messages masked in a degraded way, by `direction` and
/// `reason`: JSON masked as text under `on_malformed_json: mask_as_text`
/// (`malformed_json`, `too_deep`), bytes that are not UTF-8 scanned run by run
/// under `on_not_utf8: mask_bytes` (`not_utf8`).
pub const MASKING_TEXT_FALLBACKS: &str = "meshguard_masking_text_fallbacks_total";

/// Builds a stat name with embedded tags.
pub fn tagged(base: &str, tags: &[(&str, &str)]) -> String {
    let mut name = String::with_capacity(base.len().saturating_add(tags.len().saturating_mul(24)));
    name.push_str(base);
    if !tags.is_empty() {
        name.push('.');
    }
    for (tag, value) in tags {
        name.push_str(tag);
        name.push_str("=.=");
        name.push_str(value);
        name.push_str(";.;");
    }
    name
}

/// The tag-extraction regex Envoy needs for `tag` (what Istio generates from
/// `extraStatTags`).
pub fn tag_regex(tag: &str) -> String {
    format!(r"({tag}=\.=(.*?);\.;)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_embedded_in_the_istio_format() {
        assert_eq!(tagged("m", &[]), "m");
        assert_eq!(
            tagged("m", &[("decision", "denied"), ("reason", "mtls_required")]),
            "m.decision=.=denied;.;reason=.=mtls_required;.;"
        );
        assert_eq!(tag_regex("reason"), r"(reason=\.=(.*?);\.;)");
    }

    #[test]
    fn version_labels_cannot_break_the_tag_syntax() {
        assert_eq!(version_label(None), "unset");
        assert_eq!(version_label(Some("2026-11-21.1")), "2026-11-21.1");
        assert_eq!(version_label(Some("v1;.;x=.=y")), "v1_._x_._y");
        assert_eq!(
            version_label(Some(&"a".repeat(100))).len(),
            MAX_VERSION_LABEL
        );
    }
}
