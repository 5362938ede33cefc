//! The queries of meshguard's observability files, read from the files
//! themselves (never copied into tests): every Grafana panel target of
//! `istio-manifests/observability/grafana-dashboard.json` and every alert
//! expression of `alerts.yaml`, plus the helpers to evaluate them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::manifests::Outcome;
use crate::registry::tool;

/// `istio-manifests/observability/`.
pub fn observability_dir() -> PathBuf {
    crate::repo_root().join("istio-manifests/observability")
}

/// One query of a dashboard panel, with the dashboard variables substituted.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

/// Values for Grafana's built-in variables when a query runs outside Grafana:
/// windows that hold several samples of a 1 s scrape.
const BUILTINS: [(&str, &str); 4] = [
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__range", "5m"),
    ("__range_s", "300"),
];

/// Every panel target of a Grafana dashboard (rows included). Template
/// variables become their "All" value (`allValue`), built-ins fixed windows;
/// a variable left over is an error.
pub fn dashboard_queries(dashboard: &Value) -> anyhow::Result<Vec<PanelQuery>> {
    let mut vars: Vec<(String, String)> = BUILTINS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for var in dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if let (Some(name), Some(all)) = (var["name"].as_str(), var["allValue"].as_str()) {
            vars.push((name.to_string(), all.to_string()));
        }
    }
    // Longest names first: `$__range_s` before `$__range`.
    vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut panels = Vec::new();
    collect_panels(&dashboard["panels"], &mut panels);
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().cloned().unwrap_or_default() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let mut expr = expr.to_string();
            for (name, value) in &vars {
                expr = expr
                    .replace(&format!("${{{name}}}"), value)
                    .replace(&format!("${name}"), value);
            }
            // `$1`-style references of label_replace are PromQL, not variables.
            let left_over = expr.match_indices('$').any(|(i, _)| {
                expr[i + 1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '{')
            });
            if left_over {
                bail!("panel {title:?}: unknown variable left in {expr:?}");
            }
            queries.push(PanelQuery {
                panel: title.clone(),
                ref_id: target["refId"].as_str().unwrap_or("?").to_string(),
                expr,
            });
        }
    }
    Ok(queries)
}

fn collect_panels(panels: &Value, out: &mut Vec<Value>) {
    for panel in panels.as_array().cloned().unwrap_or_default() {
        if panel["type"] == "row" {
            collect_panels(&panel["panels"], out);
        } else {
            out.push(panel);
        }
    }
}

/// One alerting rule.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub expr: String,
}

/// Every alerting rule of a Prometheus rule file (as JSON).
pub fn alert_rules(rule_file: &Value) -> Vec<AlertRule> {
    let mut rules = Vec::new();
    for group in rule_file["groups"].as_array().cloned().unwrap_or_default() {
        for rule in group["rules"].as_array().cloned().unwrap_or_default() {
            if let (Some(name), Some(expr)) = (rule["alert"].as_str(), rule["expr"].as_str()) {
                rules.push(AlertRule {
                    name: name.to_string(),
                    expr: expr.trim().to_string(),
                });
            }
        }
    }
    rules
}

/// An alert condition turned into a query that keeps every candidate series:
/// each comparison operator outside label matchers and strings gets PromQL's
/// `bool` modifier, so `x > 0` returns `x`'s series with 0 or 1 instead of
/// filtering them out. Whether the alert could ever fire then shows as "this
/// returns series" even while the condition is false.
pub fn as_bool_comparisons(expr: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len() + 16);
    let mut braces = 0usize;
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            _ => {}
        }
        let next = chars.get(i + 1).copied();
        let operator = if braces > 0 {
            None
        } else {
            match (c, next) {
                ('=', Some('=')) | ('!', Some('=')) | ('>', Some('=')) | ('<', Some('=')) => {
                    Some(2)
                }
                ('>', _) | ('<', _) => Some(1),
                _ => None,
            }
        };
        if let Some(len) = operator {
            out.extend(&chars[i..i + len]);
            i += len;
            let rest: String = chars[i..].iter().collect();
            if !rest.trim_start().starts_with("bool") {
                out.push_str(" bool");
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Runs `promtool` with `args` in the observability directory.
pub fn promtool(args: &[&str]) -> anyhow::Result<Outcome> {
    let output = Command::new(tool("promtool")?)
        .args(args)
        .current_dir(observability_dir())
        .output()
        .context("running promtool")?;
    Ok(Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_become_bool_outside_matchers_and_strings() {
        assert_eq!(as_bool_comparisons("max(x) > 0"), "max(x) > bool 0");
        assert_eq!(
            as_bool_comparisons(r#"sum(rate(x{a!="b",c=~"d>e"}[5m])) >= 2 and y == 1"#),
            r#"sum(rate(x{a!="b",c=~"d>e"}[5m])) >= bool 2 and y == bool 1"#
        );
        assert_eq!(as_bool_comparisons("x != bool 1"), "x != bool 1");
        assert_eq!(as_bool_comparisons("(a / b) < 0.5"), "(a / b) < bool 0.5");
    }

    #[test]
    fn dashboard_variables_are_substituted() {
        let dashboard = serde_json::json!({
            "templating": {"list": [{"name": "pod", "allValue": ".*"}]},
            "panels": [{"type": "row", "panels": [{"title": "t", "targets": [
                {"refId": "A", "expr": "rate(x{pod=~\"$pod\"}[$__rate_interval]) + y{pod=~\"${pod}\"}"}
            ]}]}]
        });
        let queries = dashboard_queries(&dashboard).unwrap();
        assert_eq!(queries[0].expr, "rate(x{pod=~\".*\"}[1m]) + y{pod=~\".*\"}");
        let replacement = serde_json::json!({"panels": [{"targets": [{"expr": "label_replace(x, \"a\", \"$1\", \"b\", \"(.*)\")"}]}]});
        assert!(dashboard_queries(&replacement).is_ok());
        let unknown = serde_json::json!({"panels": [{"targets": [{"expr": "x{a=\"$nope\"}"}]}]});
        assert!(dashboard_queries(&unknown).is_err());
    }
}
