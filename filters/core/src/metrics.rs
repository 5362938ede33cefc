//! Metric names, in the Istio convention for tags embedded in a stat name.
//!
//! A filter defines `base.tag=.=value;.;tag2=.=value2;.;`; Envoy's tag extractors
//! (Istio: `extraStatTags`) turn each `(tag=\.=(.*?);\.;)` into a Prometheus
//! label, so `/stats/prometheus` shows `base{tag="value",tag2="value2"}`. Values
//! come only from fixed enums here: cardinality is bounded by construction.

/// Every tag meshguard emits. Istio users list these in `extraStatTags`.
pub const TAG_NAMES: [&str; 4] = ["decision", "reason", "filter", "result"];

/// Counter of identity-filter decisions, by `decision` and `reason`.
pub const IDENTITY_REQUESTS: &str = "meshguard_identity_requests_total";
/// Counter of configuration loads, by `filter` and `result`.
pub const CONFIG_LOADS: &str = "meshguard_config_loads_total";

/// Builds a stat name with embedded tags.
pub fn tagged(base: &str, tags: &[(&str, &str)]) -> String {
    let mut name = String::with_capacity(base.len() + tags.len() * 24);
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
}
