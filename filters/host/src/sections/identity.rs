//! The identity section: refuses requests whose caller or transport is
//! outside policy. All decisions live in `meshguard_core::identity`; this
//! reads the view, applies the verdict and counts it.

use meshguard_core::identity::{
    response::deny_body, DecidedBy, Decision, DetailLevel, IdentityPolicy, IdentitySource, Mode,
    Peer, Reason, RequestInfo, Verdict,
};
use meshguard_core::logsafe::{defang, escape, quote};
use meshguard_core::metrics::{
    label_value, tagged, IDENTITY_REQUESTS, IDENTITY_SHADOW_DISAGREEMENTS,
    IDENTITY_SHADOW_REQUESTS, IDENTITY_SHADOW_RULE_HITS,
};

use crate::host::{Counter, PluginHost, StreamHost};
use crate::reply::{json_reply, Flow};
use crate::view::View;

/// Longest path echoed into a log line.
const MAX_LOGGED_PATH: usize = 256;

/// Per-rule counters are defined for at most this many shadow rules; later
/// ones count under `rule="other"` (bounded label cardinality).
const MAX_SHADOW_RULE_COUNTERS: usize = 1000;

/// What happened to the request: the `decision` metric label and the
/// filter-state value audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Denied,
    DryRunDenied,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::DryRunDenied => "dry_run_denied",
        }
    }
}

/// The section's counters, defined once per configuration so that the
/// request path only increments.
#[derive(Debug)]
pub struct Identity {
    allowed: [Counter; Reason::ALL.len()],
    denied: [Counter; Reason::ALL.len()],
    dry_run_denied: [Counter; Reason::ALL.len()],
    shadow: Option<ShadowMetrics>,
}

/// Counters of the shadow policy: its decisions, the rule that decided, and
/// the requests where it disagrees with the enforced policy.
#[derive(Debug)]
struct ShadowMetrics {
    allowed: [Counter; Reason::ALL.len()],
    denied: [Counter; Reason::ALL.len()],
    rule_hits: Vec<Counter>,
    other_rule_hits: Counter,
    /// By the shadow's verdict: `[allowed, denied]`.
    disagreements: [Counter; 2],
}

/// One counter per reason whose verdict is `verdict` (the others never count).
fn row<H: PluginHost>(
    host: &H,
    base: &str,
    decision: &str,
    verdict: Verdict,
) -> [Counter; Reason::ALL.len()] {
    Reason::ALL.map(|reason| {
        if reason.verdict() != verdict {
            return Counter::default();
        }
        host.define_counter(&tagged(
            base,
            &[("decision", decision), ("reason", reason.code())],
        ))
    })
}

fn slot(row: &[Counter; Reason::ALL.len()], reason: Reason) -> Counter {
    Reason::ALL
        .iter()
        .position(|r| *r == reason)
        .and_then(|i| row.get(i))
        .copied()
        .unwrap_or_default()
}

impl Identity {
    pub fn define<H: PluginHost>(host: &H, policy: &IdentityPolicy) -> Self {
        log::info!(
            "meshguard identity: policy: mode={} rules={}",
            policy.mode().as_str(),
            policy.rule_count(),
        );
        for warning in policy.warnings() {
            log::warn!(
                "meshguard identity: configuration warning: {}",
                defang(warning)
            );
        }
        let shadow = policy.shadow().map(|shadow| {
            log::info!(
                "meshguard identity: shadow policy: rules={} (evaluated, never enforced)",
                shadow.rule_count()
            );
            let hits = |rule: &str| {
                host.define_counter(&tagged(
                    IDENTITY_SHADOW_RULE_HITS,
                    &[("rule", &label_value(rule))],
                ))
            };
            let disagreement = |decision| {
                host.define_counter(&tagged(
                    IDENTITY_SHADOW_DISAGREEMENTS,
                    &[("decision", decision)],
                ))
            };
            ShadowMetrics {
                allowed: row(host, IDENTITY_SHADOW_REQUESTS, "allowed", Verdict::Allow),
                denied: row(host, IDENTITY_SHADOW_REQUESTS, "denied", Verdict::Deny),
                rule_hits: shadow
                    .rule_names()
                    .take(MAX_SHADOW_RULE_COUNTERS)
                    .map(hits)
                    .collect(),
                other_rule_hits: if shadow.rule_count() > MAX_SHADOW_RULE_COUNTERS {
                    hits("other")
                } else {
                    Counter::default()
                },
                disagreements: [disagreement("allowed"), disagreement("denied")],
            }
        });
        Self {
            allowed: row(host, IDENTITY_REQUESTS, "allowed", Verdict::Allow),
            denied: row(host, IDENTITY_REQUESTS, "denied", Verdict::Deny),
            dry_run_denied: row(host, IDENTITY_REQUESTS, "dry_run_denied", Verdict::Deny),
            shadow,
        }
    }

    /// Judges the request; `Flow::Stop` when it was refused (answered).
    /// `decision_out` receives the outcome audit records
    /// (`allowed:<reason>`; the pipeline publishes it with the view for
    /// another plugin's audit).
    pub fn request<H: StreamHost>(
        &self,
        host: &mut H,
        policy: &IdentityPolicy,
        view: &mut View,
        decision_out: &mut Option<String>,
    ) -> Flow {
        let trusted = |id: &meshguard_core::spiffe::SpiffeId| policy.is_trusted_gateway(id);
        let peer = view.peer(host, Some(&trusted)).clone();
        let decision = policy.decide(&peer, view.info());
        if let (Some(shadow), Some(metrics)) = (policy.shadow(), &self.shadow) {
            // The shadow judges the same view with its own trusted gateways.
            let shadow_trusted =
                |id: &meshguard_core::spiffe::SpiffeId| shadow.is_trusted_gateway(id);
            let shadow_peer = if policy.has_trusted_gateways() || shadow.has_trusted_gateways() {
                let header = view.header("x-forwarded-client-cert");
                let local = host
                    .attribute(crate::host::Attribute::LocalUriSan)
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
                meshguard_core::identity::resolve_peer(
                    view.transport.clone(),
                    || (header, local),
                    shadow_trusted,
                )
            } else {
                peer.clone()
            };
            let shadow_decision = shadow.decide(&shadow_peer, view.info());
            let disagrees = shadow_decision.is_deny() != decision.is_deny();
            metrics.count(host, &shadow_decision, disagrees);
            if disagrees {
                log::info!(
                    "meshguard identity: shadow disagrees: enforced={}:{} shadow={}:{} shadow_by={} peer={} path={}",
                    verdict_name(&decision),
                    decision.reason.code(),
                    verdict_name(&shadow_decision),
                    shadow_decision.reason.code(),
                    defang(&shadow.describe(shadow_decision.decided_by)),
                    escape(shadow_peer.identity.as_ref().map_or("none", |id| id.as_str())),
                    quote(&truncated(&view.raw_path)),
                );
            }
        }
        let outcome = match (decision.is_deny(), policy.mode()) {
            (false, _) => Outcome::Allowed,
            (true, Mode::DryRun) => Outcome::DryRunDenied,
            (true, Mode::Enforce) => Outcome::Denied,
        };
        *decision_out = Some(format!("{}:{}", outcome.as_str(), decision.reason.code()));
        let counter = match outcome {
            Outcome::Allowed => slot(&self.allowed, decision.reason),
            Outcome::Denied => slot(&self.denied, decision.reason),
            Outcome::DryRunDenied => slot(&self.dry_run_denied, decision.reason),
        };
        host.add(counter, 1);
        let request = view.info().unwrap_or_else(|_| view.raw_info());
        if outcome == Outcome::Allowed {
            if log::log_enabled!(log::Level::Debug) {
                log::debug!(
                    "{}",
                    log_line("allowed", policy, &decision, &peer, &request, None)
                );
            }
            return Flow::Continue;
        }
        let request_id = view.header("x-request-id");
        let what = match outcome {
            Outcome::DryRunDenied => "dry-run would deny",
            Outcome::Allowed | Outcome::Denied => "denied",
        };
        log::info!(
            "{}",
            log_line(
                what,
                policy,
                &decision,
                &peer,
                &request,
                request_id.as_deref()
            )
        );
        if outcome == Outcome::DryRunDenied {
            return Flow::Continue;
        }
        let body = deny_body(policy, &decision, &peer, request_id.as_deref());
        let reason = match policy.detail() {
            DetailLevel::Minimal => None,
            DetailLevel::Reason | DetailLevel::Verbose => Some(decision.reason.code()),
        };
        json_reply(host, policy.deny_status(), reason, &body)
    }
}

impl ShadowMetrics {
    fn count<H: StreamHost>(&self, host: &H, decision: &Decision, disagrees: bool) {
        let (row, verdict) = match decision.verdict() {
            Verdict::Allow => (&self.allowed, 0),
            Verdict::Deny => (&self.denied, 1),
        };
        host.add(slot(row, decision.reason), 1);
        if let DecidedBy::Rule(i) = decision.decided_by {
            host.add(
                self.rule_hits
                    .get(i)
                    .copied()
                    .unwrap_or(self.other_rule_hits),
                1,
            );
        }
        if disagrees {
            if let Some(counter) = self.disagreements.get(verdict) {
                host.add(*counter, 1);
            }
        }
    }
}

fn truncated(path: &str) -> String {
    path.chars().take(MAX_LOGGED_PATH).collect()
}

fn verdict_name(decision: &Decision) -> &'static str {
    match decision.verdict() {
        Verdict::Allow => "allowed",
        Verdict::Deny => "denied",
    }
}

fn log_line(
    what: &str,
    policy: &IdentityPolicy,
    decision: &Decision,
    peer: &Peer,
    request: &RequestInfo<'_>,
    request_id: Option<&str>,
) -> String {
    // Every value a caller controls is escaped: it can neither split the line
    // nor make it look like an audit record.
    let via = match &peer.source {
        IdentitySource::Certificate => String::new(),
        IdentitySource::Gateway(gw) => format!(" via_gateway={}", escape(&gw.to_string())),
    };
    format!(
        "meshguard identity: {what}: reason={} by={} peer={}{via} mtls={} tls={} method={} host={} path={} request_id={}",
        decision.reason.code(),
        defang(&policy.describe(decision.decided_by)),
        escape(peer.identity.as_ref().map_or("none", |id| id.as_str())),
        peer.transport.is_mtls(),
        peer.transport.tls_version().map_or("none", |v| v.as_str()),
        quote(request.method),
        quote(request.host),
        quote(&truncated(request.path)),
        quote(request_id.unwrap_or("-")),
    )
}
