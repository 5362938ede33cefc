//! meshguard identity filter: refuses requests whose peer identity or transport
//! security is outside policy. All decisions live in `meshguard_core::identity`;
//! this crate only reads the host, applies the verdict and counts it.

// Release wasm builds wrap silently on integer overflow, and a panic kills the
// VM: outside tests, every arithmetic operation is checked, saturating or
// explicitly wrapping (docs/fuzzing.md, "Arithmetic").
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::cell::OnceCell;
use std::rc::Rc;

use meshguard_core::config::ConfigError;
use meshguard_core::identity::{
    response::deny_body, DecidedBy, Decision, DetailLevel, IdentityPolicy, IdentitySource,
    Judgement, Mode, Peer, Reason, RequestInfo, Verdict,
};
use meshguard_core::metrics::{
    label_value, tagged, IDENTITY_REQUESTS, IDENTITY_SHADOW_DISAGREEMENTS,
    IDENTITY_SHADOW_REQUESTS, IDENTITY_SHADOW_RULE_HITS,
};
use meshguard_host::integrity::{FilterRoot, Guard, Quarantine, Root};
use meshguard_host::{self as host, Counter};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

const FILTER: &str = "identity";
/// Longest path echoed into a log line.
const MAX_LOGGED_PATH: usize = 256;

proxy_wasm::main! {{
    Root::<Identity>::register();
}}

/// Counters for every meaningful (decision, reason) pair, defined once per
/// configuration so that the request path only increments.
#[derive(Debug)]
struct Metrics {
    allowed: [Counter; Reason::ALL.len()],
    denied: [Counter; Reason::ALL.len()],
    dry_run_denied: [Counter; Reason::ALL.len()],
}

impl Metrics {
    fn define() -> Self {
        let row = |outcome: Outcome, verdict: Verdict| {
            Reason::ALL.map(|reason| {
                if reason.verdict() != verdict {
                    return Counter::default(); // e.g. "allowed" for "mtls_required": never counted
                }
                Counter::define(&tagged(
                    IDENTITY_REQUESTS,
                    &[("decision", outcome.as_str()), ("reason", reason.code())],
                ))
            })
        };
        Self {
            allowed: row(Outcome::Allowed, Verdict::Allow),
            denied: row(Outcome::Denied, Verdict::Deny),
            dry_run_denied: row(Outcome::DryRunDenied, Verdict::Deny),
        }
    }

    fn count(&self, outcome: Outcome, reason: Reason) {
        let row = match outcome {
            Outcome::Allowed => &self.allowed,
            Outcome::Denied => &self.denied,
            Outcome::DryRunDenied => &self.dry_run_denied,
        };
        let slot = Reason::ALL.iter().position(|r| *r == reason);
        if let Some(counter) = slot.and_then(|i| row.get(i)) {
            counter.increment();
        }
    }
}

/// Per-rule counters are defined for at most this many shadow rules; later
/// ones count under `rule="other"` (bounded label cardinality).
const MAX_SHADOW_RULE_COUNTERS: usize = 1000;

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

impl ShadowMetrics {
    fn define(shadow: &IdentityPolicy) -> Self {
        let row = |decision: &str, verdict: Verdict| {
            Reason::ALL.map(|reason| {
                if reason.verdict() != verdict {
                    return Counter::default();
                }
                Counter::define(&tagged(
                    IDENTITY_SHADOW_REQUESTS,
                    &[("decision", decision), ("reason", reason.code())],
                ))
            })
        };
        let hits = |rule: &str| {
            Counter::define(&tagged(
                IDENTITY_SHADOW_RULE_HITS,
                &[("rule", &label_value(rule))],
            ))
        };
        let disagreement = |decision| {
            Counter::define(&tagged(
                IDENTITY_SHADOW_DISAGREEMENTS,
                &[("decision", decision)],
            ))
        };
        Self {
            allowed: row("allowed", Verdict::Allow),
            denied: row("denied", Verdict::Deny),
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
    }

    fn count(&self, decision: &Decision, disagrees: bool) {
        let (row, verdict) = match decision.verdict() {
            Verdict::Allow => (&self.allowed, 0),
            Verdict::Deny => (&self.denied, 1),
        };
        let slot = Reason::ALL.iter().position(|r| *r == decision.reason);
        if let Some(counter) = slot.and_then(|i| row.get(i)) {
            counter.increment();
        }
        if let DecidedBy::Rule(i) = decision.decided_by {
            self.rule_hits
                .get(i)
                .copied()
                .unwrap_or(self.other_rule_hits)
                .increment();
        }
        if disagrees {
            if let Some(counter) = self.disagreements.get(verdict) {
                counter.increment();
            }
        }
    }
}

/// What happened to the request: the `decision` metric label and the
/// filter-state value the audit filter records.
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

/// A configuration that passed validation, with its counters.
#[derive(Debug)]
struct Active {
    policy: IdentityPolicy,
    metrics: Metrics,
    shadow_metrics: Option<ShadowMetrics>,
    quarantine: Quarantine,
}

/// The identity filter's root state: the active configuration.
#[derive(Debug)]
struct Identity(Rc<Active>);

impl FilterRoot for Identity {
    const NAME: &'static str = FILTER;
    type Compiled = IdentityPolicy;

    fn compile(bytes: &[u8]) -> Result<IdentityPolicy, ConfigError> {
        IdentityPolicy::from_json(bytes)
    }

    fn start(_context_id: u32, policy: IdentityPolicy, guard: &Guard) -> Self {
        log::info!(
            "meshguard identity: policy: mode={} rules={}",
            policy.mode().as_str(),
            policy.rule_count(),
        );
        for warning in policy.warnings() {
            log::warn!("meshguard identity: configuration warning: {warning}");
        }
        if let Some(shadow) = policy.shadow() {
            log::info!(
                "meshguard identity: shadow policy: rules={} (evaluated, never enforced)",
                shadow.rule_count()
            );
        }
        Self(Rc::new(Active {
            shadow_metrics: policy.shadow().map(ShadowMetrics::define),
            policy,
            metrics: Metrics::define(),
            quarantine: guard.quarantine(),
        }))
    }

    fn http_context(state: Option<&Self>) -> Box<dyn HttpContext> {
        Box::new(IdentityHttp {
            active: state.map(|s| Rc::clone(&s.0)),
        })
    }
}

struct IdentityHttp {
    active: Option<Rc<Active>>,
}

impl Context for IdentityHttp {}

impl HttpContext for IdentityHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(active) = self.active.as_deref() else {
            log::error!("meshguard identity: no accepted configuration; refusing the request");
            return respond(503, None, br#"{"error":"meshguard_not_configured"}"#);
        };
        let policy = &active.policy;
        let head = host::RequestHead::read();
        let mut line = host::RequestLine::from_head(&head);
        let transport = host::peer_transport();
        // Read at most once, for the enforced and the shadow policy alike.
        let xfcc = OnceCell::new();
        let read_xfcc = || {
            xfcc.get_or_init(|| {
                let header = head.get("x-forwarded-client-cert");
                // Our own URI SAN only matters when there is XFCC to read.
                let local = header.as_ref().and_then(|_| {
                    host::property_string(&["connection", "uri_san_local_certificate"])
                });
                (header, local)
            })
            .clone()
        };
        let shadow = policy
            .shadow()
            .map(|shadow| shadow.judge(transport.clone(), read_xfcc, &line.info()));
        let Judgement {
            peer,
            decision,
            forwarded_path,
        } = policy.judge(transport, read_xfcc, &line.info());
        if let (Some(shadow), Some(metrics)) = (&shadow, &active.shadow_metrics) {
            let disagrees = shadow.decision.is_deny() != decision.is_deny();
            metrics.count(&shadow.decision, disagrees);
            if disagrees {
                log::info!(
                    "meshguard identity: shadow disagrees: enforced={}:{} shadow={}:{} shadow_by={} peer={} path={:?}",
                    verdict_name(&decision),
                    decision.reason.code(),
                    verdict_name(&shadow.decision),
                    shadow.decision.reason.code(),
                    policy.shadow().map_or_else(String::new, |s| s.describe(shadow.decision.decided_by)),
                    shadow.peer.identity.as_ref().map_or("none", |id| id.as_str()),
                    line.path.chars().take(MAX_LOGGED_PATH).collect::<String>(),
                );
            }
        }
        let rewrite = forwarded_path.is_some();
        if let Some(path) = forwarded_path {
            line.path = path;
        }
        let request = line.info();
        if decision.decided_by != DecidedBy::Path {
            if let Some(action) = active.quarantine.enforce(&request, policy.path_options()) {
                return action;
            }
        }
        let outcome = match (decision.is_deny(), policy.mode()) {
            (false, _) => Outcome::Allowed,
            (true, Mode::DryRun) => Outcome::DryRunDenied,
            (true, Mode::Enforce) => Outcome::Denied,
        };
        host::publish_decision(
            FILTER,
            &format!("{}:{}", outcome.as_str(), decision.reason.code()),
        );
        active.metrics.count(outcome, decision.reason);
        if outcome == Outcome::Allowed {
            if rewrite && !line.forward_path() {
                log::error!("meshguard identity: the host refused the canonical path; resetting");
                host::reset_request();
                return Action::Pause;
            }
            if log::log_enabled!(log::Level::Debug) {
                log::debug!(
                    "{}",
                    log_line("allowed", policy, &decision, &peer, &request, None)
                );
            }
            return Action::Continue;
        }
        let request_id = head.get("x-request-id");
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
            return Action::Continue;
        }
        let body = deny_body(policy, &decision, &peer, request_id.as_deref());
        let reason = match policy.detail() {
            DetailLevel::Minimal => None,
            DetailLevel::Reason | DetailLevel::Verbose => Some(decision.reason.code()),
        };
        respond(policy.deny_status(), reason, &body)
    }
}

fn verdict_name(decision: &Decision) -> &'static str {
    match decision.verdict() {
        Verdict::Allow => "allowed",
        Verdict::Deny => "denied",
    }
}

/// Sends a JSON local reply and stops the filter chain; if the host refuses
/// the reply, the request is reset so that it never reaches the upstream.
fn respond(status: u16, reason: Option<&str>, body: &[u8]) -> Action {
    if !host::send_json_reply(status, reason, body) {
        host::reset_request();
    }
    Action::Pause
}

fn log_line(
    what: &str,
    policy: &IdentityPolicy,
    decision: &Decision,
    peer: &Peer,
    request: &RequestInfo<'_>,
    request_id: Option<&str>,
) -> String {
    use meshguard_core::logsafe::{escape, quote};
    // Every value a caller controls is escaped: it can neither split the line
    // nor make it look like an audit record.
    let path: String = request.path.chars().take(MAX_LOGGED_PATH).collect();
    let via = match &peer.source {
        IdentitySource::Certificate => String::new(),
        IdentitySource::Gateway(gw) => format!(" via_gateway={}", escape(&gw.to_string())),
    };
    format!(
        "meshguard identity: {what}: reason={} by={} peer={}{via} mtls={} tls={} method={} host={} path={} request_id={}",
        decision.reason.code(),
        policy.describe(decision.decided_by),
        escape(peer.identity.as_ref().map_or("none", |id| id.as_str())),
        peer.transport.is_mtls(),
        peer.transport.tls_version().map_or("none", |v| v.as_str()),
        quote(request.method),
        quote(request.host),
        quote(&path),
        quote(request_id.unwrap_or("-")),
    )
}
