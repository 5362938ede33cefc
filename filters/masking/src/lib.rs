//! meshguard masking filter: replaces sensitive values in request and response
//! headers and bodies before they leave the proxy. The engine is
//! `meshguard_core::masking`; this crate buffers bodies (bounded), applies the
//! edits, fails closed where configured and counts everything, never logging a
//! value.

use std::rc::Rc;

use meshguard_core::config::{ConfigError, Mode};
use meshguard_core::masking::{
    body_kind, BodyKind, CompressedAction, Direction, HeaderEdit, MalformedJsonAction, MaskError,
    MaskingPolicy, OversizeAction, RuleHits, Selection, UnsupportedAction,
};
use meshguard_core::metrics::{
    label_value, tagged, MASKING_DRY_RUN_FIELDS, MASKING_FIELDS, MASKING_REFUSED, MASKING_SKIPPED,
};
use meshguard_host::integrity::{FilterRoot, Guard, Quarantine, Root};
use meshguard_host::{self as host, Counter};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType};

const FILTER: &str = "masking";
const DIRECTIONS: [Direction; 2] = [Direction::Request, Direction::Response];
/// Why a body was forwarded unmasked or a message refused (metric `reason`).
const REASONS: [&str; 6] = [
    "oversize",
    "compressed",
    "unsupported_content_type",
    "malformed_json",
    "too_deep",
    "not_utf8",
];

proxy_wasm::main! {{
    Root::<Masking>::register();
}}

/// Counters, defined once per configuration.
#[derive(Debug)]
struct Metrics {
    /// `[rule][direction]`
    fields: Vec<[Counter; 2]>,
    dry_run_fields: Vec<[Counter; 2]>,
    /// `[direction][reason]`
    skipped: [[Counter; REASONS.len()]; 2],
    refused: [[Counter; REASONS.len()]; 2],
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

impl Metrics {
    fn define(policy: &MaskingPolicy) -> Self {
        let per_rule = |base: &str| {
            (0..policy.rule_count())
                .map(|rule| {
                    let name = label_value(policy.rule_name(rule).unwrap_or("?"));
                    DIRECTIONS.map(|d| {
                        Counter::define(&tagged(
                            base,
                            &[("rule", &name), ("direction", d.as_str())],
                        ))
                    })
                })
                .collect()
        };
        let per_reason = |base: &str| {
            DIRECTIONS.map(|d| {
                REASONS.map(|r| {
                    Counter::define(&tagged(base, &[("direction", d.as_str()), ("reason", r)]))
                })
            })
        };
        Self {
            fields: per_rule(MASKING_FIELDS),
            dry_run_fields: per_rule(MASKING_DRY_RUN_FIELDS),
            skipped: per_reason(MASKING_SKIPPED),
            refused: per_reason(MASKING_REFUSED),
        }
    }

    fn hits(&self, mode: Mode, direction: Direction, hits: &[RuleHits]) {
        let table = match mode {
            Mode::Enforce => &self.fields,
            Mode::DryRun => &self.dry_run_fields,
        };
        for h in hits {
            if let Some(counter) = table
                .get(h.rule)
                .and_then(|row| row.get(dir_index(direction)))
            {
                counter.add(u64::from(h.count));
            }
        }
    }

    fn reason(table: &[[Counter; REASONS.len()]; 2], direction: Direction, reason: &str) {
        let slot = REASONS.iter().position(|r| *r == reason);
        if let Some(counter) = table
            .get(dir_index(direction))
            .and_then(|row| slot.and_then(|i| row.get(i)))
        {
            counter.increment();
        }
    }
}

#[derive(Debug)]
struct Active {
    policy: MaskingPolicy,
    metrics: Metrics,
    quarantine: Quarantine,
}

/// The masking filter's root state: the active configuration.
#[derive(Debug)]
struct Masking(Rc<Active>);

impl FilterRoot for Masking {
    const NAME: &'static str = FILTER;
    type Compiled = MaskingPolicy;

    /// The hash key comes from the env var the config names (`hash_key_env`).
    fn compile(bytes: &[u8]) -> Result<MaskingPolicy, ConfigError> {
        MaskingPolicy::from_json_with_env(bytes, host::env_var)
    }

    fn start(_context_id: u32, policy: MaskingPolicy, guard: &Guard) -> Self {
        log::info!(
            "meshguard masking: policy: mode={} rules={} max_body_bytes={}",
            policy.mode().as_str(),
            policy.rule_count(),
            policy.max_body_bytes()
        );
        Self(Rc::new(Active {
            metrics: Metrics::define(&policy),
            quarantine: guard.quarantine(),
            policy,
        }))
    }

    fn http_context(state: Option<&Self>) -> Box<dyn HttpContext> {
        Box::new(MaskingHttp {
            active: state.map(|s| Rc::clone(&s.0)),
            request: None,
            response: None,
            hits: 0,
        })
    }
}

/// What one direction still has to do.
#[derive(Debug)]
struct Pending {
    selection: Selection,
    /// Body masking is under way for this direction.
    body: Option<BodyKind>,
}

struct MaskingHttp {
    active: Option<Rc<Active>>,
    request: Option<Pending>,
    response: Option<Pending>,
    /// Values masked (or, in dry-run, found) in this exchange.
    hits: u32,
}

impl Context for MaskingHttp {}

impl HttpContext for MaskingHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            log::error!("meshguard masking: no accepted configuration; refusing the request");
            return refuse(Direction::Request, 503, "meshguard_not_configured");
        };
        let policy = &active.policy;
        let line = host::RequestLine::read();
        if let Some(action) = active.quarantine.enforce(&line.path) {
            return action;
        }
        let transport = host::peer_transport();
        let caller = transport.certificate_identity();
        let request = line.info();
        let request_selection = policy.select(Direction::Request, caller, &request);
        let response_selection = policy.select(Direction::Response, caller, &request);
        if response_selection.needs_body() && policy.mode() == Mode::Enforce {
            // A compressed response cannot be masked: ask for identity encoding.
            host::set_request_header("accept-encoding", Some("identity"));
        }
        self.response = (!response_selection.is_empty()).then_some(Pending {
            selection: response_selection,
            body: None,
        });
        if request_selection.is_empty() {
            return Action::Continue;
        }
        if request_selection.needs_headers() {
            self.mask_headers(&active, Direction::Request, &request_selection);
        }
        let mut pending = Pending {
            selection: request_selection,
            body: None,
        };
        if pending.selection.needs_body() && !end_of_stream {
            match self.start_body(&active, Direction::Request) {
                Ok(kind) => pending.body = kind,
                Err(action) => return action,
            }
        }
        self.request = Some(pending);
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_body(Direction::Request, body_size, end_of_stream)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let (Some(active), Some(mut pending)) = (self.active.clone(), self.response.take()) else {
            return Action::Continue;
        };
        if pending.selection.needs_headers() {
            self.mask_headers(&active, Direction::Response, &pending.selection);
        }
        if pending.selection.needs_body() && !end_of_stream {
            match self.start_body(&active, Direction::Response) {
                Ok(kind) => pending.body = kind,
                Err(action) => return action,
            }
        }
        self.response = Some(pending);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_body(Direction::Response, body_size, end_of_stream)
    }

    fn on_log(&mut self) {
        if self.hits > 0 {
            log::debug!(
                "meshguard masking: {} values masked in this exchange",
                self.hits
            );
        }
    }
}

impl MaskingHttp {
    fn pending(&mut self, direction: Direction) -> &mut Option<Pending> {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }

    fn mask_headers(&mut self, active: &Active, direction: Direction, selection: &Selection) {
        let policy = &active.policy;
        let headers = match direction {
            Direction::Request => host::request_headers(),
            Direction::Response => host::response_headers(),
        };
        let edits = policy.mask_headers(selection, &headers);
        active.metrics.hits(policy.mode(), direction, &edits.hits);
        self.count(&edits.hits);
        if policy.mode() == Mode::DryRun {
            return;
        }
        for edit in &edits.edits {
            let (name, value) = match edit {
                HeaderEdit::Replace { name, value } => (name.as_str(), Some(value.as_str())),
                HeaderEdit::Remove { name } => (name.as_str(), None),
            };
            let done = match direction {
                Direction::Request => host::set_request_header(name, value),
                Direction::Response => host::set_response_header(name, value),
            };
            if !done {
                log::error!("meshguard masking: the host refused to mask header {name}");
            }
        }
    }

    /// Decides, from the headers, whether this body can be masked. `Ok(Some)`:
    /// buffer and mask it; `Ok(None)`: forward it unmasked (counted);
    /// `Err`: the message was refused.
    fn start_body(
        &mut self,
        active: &Active,
        direction: Direction,
    ) -> Result<Option<BodyKind>, Action> {
        let policy = &active.policy;
        let header = |name: &str| match direction {
            Direction::Request => host::request_header(name),
            Direction::Response => host::response_header(name),
        };
        let encoding =
            header("content-encoding").filter(|e| !e.trim().eq_ignore_ascii_case("identity"));
        if encoding.is_some() {
            let reject = policy.on_compressed_request() == CompressedAction::Reject;
            return Self::forward_or_refuse(active, direction, "compressed", reject, 415);
        }
        let kind = body_kind(header("content-type").as_deref());
        if kind == BodyKind::Other {
            let reject = policy.on_unsupported_content_type() == UnsupportedAction::Reject;
            return Self::forward_or_refuse(
                active,
                direction,
                "unsupported_content_type",
                reject,
                415,
            );
        }
        let declared = header("content-length").and_then(|l| l.trim().parse::<usize>().ok());
        if declared.is_some_and(|len| len > policy.max_body_bytes()) {
            // Refused before a byte is buffered.
            let reject = policy.on_oversize() == OversizeAction::Reject;
            return Self::forward_or_refuse(active, direction, "oversize", reject, 413);
        }
        if policy.mode() == Mode::Enforce {
            // The body may change length: a stale content-length would desync a
            // pooled HTTP/1 connection. Envoy re-frames the message instead.
            match direction {
                Direction::Request => host::set_request_header("content-length", None),
                Direction::Response => host::set_response_header("content-length", None),
            };
        }
        Ok(Some(kind))
    }

    /// At headers time: refuse with a local reply, or forward unmasked.
    fn forward_or_refuse(
        active: &Active,
        direction: Direction,
        reason: &str,
        reject: bool,
        request_status: u16,
    ) -> Result<Option<BodyKind>, Action> {
        if Self::must_refuse(active, direction, reason, reject) {
            return Err(Self::refuse_body(direction, reason, request_status, false));
        }
        Ok(None)
    }

    /// A body that cannot be masked: true when it must be refused (enforce
    /// mode and a `reject` setting), else it is forwarded unmasked. Counted
    /// and logged (without content) either way; the caller replies or resets.
    fn must_refuse(active: &Active, direction: Direction, reason: &str, reject: bool) -> bool {
        let metrics = &active.metrics;
        if reject && active.policy.mode() == Mode::Enforce {
            Metrics::reason(&metrics.refused, direction, reason);
            log::info!(
                "meshguard masking: {} refused: {reason}",
                direction.as_str()
            );
            return true;
        }
        Metrics::reason(&metrics.skipped, direction, reason);
        let dry = if reject {
            " (dry-run: would refuse)"
        } else {
            ""
        };
        log::info!(
            "meshguard masking: {} body forwarded unmasked: {reason}{dry}",
            direction.as_str()
        );
        false
    }

    /// Refuses a message whose body cannot be masked. While the response's
    /// headers have not left, a local reply replaces it (`request_status` for
    /// requests, 502 for responses); a response already under way is reset.
    fn refuse_body(
        direction: Direction,
        reason: &str,
        request_status: u16,
        response_started: bool,
    ) -> Action {
        match direction {
            Direction::Request => refuse(direction, request_status, reason),
            Direction::Response if response_started => reset(direction),
            Direction::Response => refuse(direction, 502, reason),
        }
    }

    fn on_body(&mut self, direction: Direction, body_size: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        let Some(kind) = self.pending(direction).as_ref().and_then(|p| p.body) else {
            return Action::Continue;
        };
        let policy = &active.policy;
        if body_size > policy.max_body_bytes() {
            if let Some(p) = self.pending(direction).as_mut() {
                p.body = None;
            }
            let reject = policy.on_oversize() == OversizeAction::Reject;
            if Self::must_refuse(&active, direction, "oversize", reject) {
                return Self::refuse_body(direction, "oversize", 413, true);
            }
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause; // buffer until the whole body is here
        }
        let selection = match self.pending(direction).take() {
            Some(p) => p.selection,
            None => return Action::Continue,
        };
        let buffer = match direction {
            Direction::Request => BufferType::HttpRequestBody,
            Direction::Response => BufferType::HttpResponseBody,
        };
        let body = host::body(buffer, 0, body_size);
        let outcome = match policy.mask_body(&selection, kind, &body) {
            Err(MaskError::MalformedJson { .. } | MaskError::TooDeep { .. })
                if policy.on_malformed_json() == MalformedJsonAction::MaskAsText =>
            {
                policy.mask_body(&selection, BodyKind::Text, &body)
            }
            other => other,
        };
        match outcome {
            Ok(masked) => {
                active.metrics.hits(policy.mode(), direction, &masked.hits);
                self.count(&masked.hits);
                if let (Some(new_body), Mode::Enforce) = (masked.body, policy.mode()) {
                    if !host::replace_body(buffer, body_size, &new_body) {
                        log::error!(
                            "meshguard masking: the host refused the masked body; resetting"
                        );
                        return reset(direction);
                    }
                }
                Action::Continue
            }
            Err(MaskError::NotUtf8) => {
                Metrics::reason(&active.metrics.skipped, direction, "not_utf8");
                Action::Continue
            }
            Err(e) => {
                // mask_as_text was handled above: what is left is a refusal.
                let reason = e.as_code();
                if Self::must_refuse(&active, direction, reason, true) {
                    return Self::refuse_body(direction, reason, 400, true);
                }
                Action::Continue
            }
        }
    }

    fn count(&mut self, hits: &[RuleHits]) {
        let n: u32 = hits.iter().map(|h| h.count).sum();
        self.hits = self.hits.saturating_add(n);
        if n > 0 {
            host::publish_decision(FILTER, &format!("masked:{}", self.hits));
        }
    }
}

/// A local reply for a message that cannot be masked. For a response this
/// replaces it (possible only while its headers have not left).
fn refuse(direction: Direction, status: u16, reason: &str) -> Action {
    let body = format!(r#"{{"error":"masking_failed","reason":"{reason}"}}"#);
    if !host::send_json_reply(status, Some(reason), body.as_bytes()) {
        return reset(direction);
    }
    Action::Pause
}

fn reset(direction: Direction) -> Action {
    match direction {
        Direction::Request => host::reset_request(),
        Direction::Response => host::reset_response(),
    }
    Action::Pause
}
