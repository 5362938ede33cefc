//! meshguard masking filter: replaces sensitive values in request and response
//! headers, trailers, query strings and bodies before they leave the proxy.
//! The engine and the per-message state machine are `meshguard_core::masking`
//! (`Gate`); this crate reads what the host offers at each callback, applies
//! the gate's edits and verdicts, and counts everything, never logging a value.

use std::rc::Rc;

use meshguard_core::config::{ConfigError, Mode};
use meshguard_core::masking::{
    wants_identity_response, Answer, Direction, Gate, HeaderEdit, HeadersStep, MaskingPolicy,
    Reason, Report, RuleHits, Verdict,
};
use meshguard_core::metrics::{
    label_value, tagged, MASKING_DRY_RUN_FIELDS, MASKING_FIELDS, MASKING_REFUSED, MASKING_SKIPPED,
    MASKING_TEXT_FALLBACKS,
};
use meshguard_host::integrity::{FilterRoot, Guard, Quarantine, Root};
use meshguard_host::{self as host, Counter};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

const FILTER: &str = "masking";
const DIRECTIONS: [Direction; 2] = [Direction::Request, Direction::Response];
const REASONS: [Reason; Reason::ALL.len()] = Reason::ALL;
/// The reasons of a degraded masking: JSON masked as text (`on_malformed_json:
/// mask_as_text`), bytes scanned run by run (`on_not_utf8: mask_bytes`).
const FALLBACKS: [Reason; 3] = [Reason::MalformedJson, Reason::TooDeep, Reason::NotUtf8];

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
    /// `[direction][malformed_json, too_deep, not_utf8]`
    text_fallbacks: [[Counter; FALLBACKS.len()]; 2],
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
        let counter = |base: &str, d: Direction, r: Reason| {
            Counter::define(&tagged(
                base,
                &[("direction", d.as_str()), ("reason", r.as_str())],
            ))
        };
        Self {
            fields: per_rule(MASKING_FIELDS),
            dry_run_fields: per_rule(MASKING_DRY_RUN_FIELDS),
            skipped: DIRECTIONS.map(|d| REASONS.map(|r| counter(MASKING_SKIPPED, d, r))),
            refused: DIRECTIONS.map(|d| REASONS.map(|r| counter(MASKING_REFUSED, d, r))),
            text_fallbacks: DIRECTIONS
                .map(|d| FALLBACKS.map(|r| counter(MASKING_TEXT_FALLBACKS, d, r))),
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

    fn reason<const N: usize>(
        table: &[[Counter; N]; 2],
        reasons: &[Reason; N],
        direction: Direction,
        reason: Reason,
    ) {
        let slot = reasons.iter().position(|r| *r == reason);
        if let Some(counter) = table
            .get(dir_index(direction))
            .and_then(|row| slot.and_then(|i| row.get(i)))
        {
            counter.increment();
        }
    }

    /// Counts one callback's report and logs its skip or refusal (never a value).
    fn report(&self, mode: Mode, direction: Direction, report: &Report) {
        self.hits(mode, direction, &report.hits);
        if let Some(skip) = &report.skipped {
            Self::reason(&self.skipped, &REASONS, direction, skip.reason);
            let why = skip.setting.unwrap_or("dry-run: would refuse");
            log::info!(
                "meshguard masking: {} body forwarded unmasked: {} ({why})",
                direction.as_str(),
                skip.reason.as_str()
            );
        }
        if let Some(reason) = report.refused {
            Self::reason(&self.refused, &REASONS, direction, reason);
            log::info!(
                "meshguard masking: {} refused: {}",
                direction.as_str(),
                reason.as_str()
            );
        }
        if let Some(reason) = report.text_fallback {
            Self::reason(&self.text_fallbacks, &FALLBACKS, direction, reason);
        }
    }

    fn host_error(&self, direction: Direction) {
        Self::reason(&self.refused, &REASONS, direction, Reason::HostError);
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

/// Where one direction's data lives in the host.
struct Maps {
    headers: MapType,
    trailers: MapType,
    body: BufferType,
}

fn maps(direction: Direction) -> Maps {
    match direction {
        Direction::Request => Maps {
            headers: MapType::HttpRequestHeaders,
            trailers: MapType::HttpRequestTrailers,
            body: BufferType::HttpRequestBody,
        },
        Direction::Response => Maps {
            headers: MapType::HttpResponseHeaders,
            trailers: MapType::HttpResponseTrailers,
            body: BufferType::HttpResponseBody,
        },
    }
}

struct MaskingHttp {
    active: Option<Rc<Active>>,
    request: Option<Gate>,
    /// The response's gate; before the response headers, a gate made with the
    /// request's route and caller but not yet started (see `response_selection`).
    response: Option<ResponseGate>,
    /// Values masked (or, in dry-run, found) in this exchange.
    hits: u32,
}

enum ResponseGate {
    Selected(meshguard_core::masking::Selection),
    Started(Gate),
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
        if wants_identity_response(policy, &response_selection) {
            // A compressed response cannot be masked: ask for identity encoding.
            host::set_request_header("accept-encoding", Some("identity"));
        }
        self.response =
            (!response_selection.is_empty()).then_some(ResponseGate::Selected(response_selection));
        if request_selection.is_empty() {
            return Action::Continue;
        }
        let headers = host::request_headers();
        let (gate, step) = Gate::headers(
            policy,
            Direction::Request,
            request_selection,
            &headers,
            end_of_stream,
            false,
        );
        self.request = Some(gate);
        self.apply(
            &active,
            Direction::Request,
            maps(Direction::Request).headers,
            step,
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_body(Direction::Request, body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.on_trailers(Direction::Request)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let (Some(active), Some(ResponseGate::Selected(selection))) =
            (self.active.clone(), self.response.take())
        else {
            return Action::Continue;
        };
        let headers = host::response_headers();
        let (gate, step) = Gate::headers(
            &active.policy,
            Direction::Response,
            selection,
            &headers,
            end_of_stream,
            false,
        );
        self.response = Some(ResponseGate::Started(gate));
        self.apply(
            &active,
            Direction::Response,
            maps(Direction::Response).headers,
            step,
        )
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_body(Direction::Response, body_size, end_of_stream)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.on_trailers(Direction::Response)
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
    fn gate(&mut self, direction: Direction) -> Option<&mut Gate> {
        match direction {
            Direction::Request => self.request.as_mut(),
            Direction::Response => match self.response.as_mut() {
                Some(ResponseGate::Started(gate)) => Some(gate),
                _ => None,
            },
        }
    }

    fn on_body(&mut self, direction: Direction, body_size: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        let Some(gate) = self.gate(direction) else {
            return Action::Continue;
        };
        let buffer = maps(direction).body;
        let (verdict, report) = gate.body(&active.policy, body_size, end_of_stream, || {
            host::body(buffer, 0, body_size)
        });
        self.count(&active, direction, &report);
        self.verdict(&active, direction, verdict, body_size)
    }

    /// Trailers end the stream: the held body is masked here (Envoy keeps it
    /// readable and replaceable in this callback), never released as is.
    fn on_trailers(&mut self, direction: Direction) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        let Some(gate) = self.gate(direction) else {
            return Action::Continue;
        };
        let m = maps(direction);
        let trailers = host::map_entries(m.trailers);
        let limit = active.policy.max_body_bytes().saturating_add(1);
        let mut held = 0;
        let step = gate.trailers(&active.policy, &trailers, || {
            let body = host::body(m.body, 0, limit);
            held = body.len();
            body
        });
        let HeadersStep {
            edits,
            verdict,
            report,
        } = step;
        self.count(&active, direction, &report);
        if !apply_edits(m.trailers, &edits) {
            active.metrics.host_error(direction);
            return reset(direction);
        }
        self.verdict(&active, direction, verdict, held)
    }

    /// Applies the headers step: edits, counts, then the verdict.
    fn apply(
        &mut self,
        active: &Active,
        direction: Direction,
        map: MapType,
        step: HeadersStep,
    ) -> Action {
        self.count(active, direction, &step.report);
        if let Verdict::Refuse { reason, answer } = step.verdict {
            return answer_refusal(direction, reason, answer);
        }
        if !apply_edits(map, &step.edits) {
            active.metrics.host_error(direction);
            log::error!("meshguard masking: the host refused a header edit; refusing");
            return answer_refusal(direction, Reason::HostError, Answer::Status(502));
        }
        Action::Continue
    }

    /// Turns a body verdict into host calls and an `Action`.
    fn verdict(
        &mut self,
        active: &Active,
        direction: Direction,
        verdict: Verdict,
        held: usize,
    ) -> Action {
        match verdict {
            Verdict::Continue => Action::Continue,
            Verdict::Hold => Action::Pause,
            Verdict::Replace(body) => {
                if host::replace_body(maps(direction).body, held, &body) {
                    Action::Continue
                } else {
                    active.metrics.host_error(direction);
                    log::error!("meshguard masking: the host refused the masked body; resetting");
                    reset(direction)
                }
            }
            Verdict::Refuse { reason, answer } => answer_refusal(direction, reason, answer),
        }
    }

    fn count(&mut self, active: &Active, direction: Direction, report: &Report) {
        active
            .metrics
            .report(active.policy.mode(), direction, report);
        let n: u32 = report.hits.iter().map(|h: &RuleHits| h.count).sum();
        self.hits = self.hits.saturating_add(n);
        if n > 0 {
            host::publish_decision(FILTER, &format!("masked:{}", self.hits));
        }
    }
}

/// Applies header (or trailer) edits; false when the host refused one.
fn apply_edits(map: MapType, edits: &[HeaderEdit]) -> bool {
    edits.iter().all(|edit| {
        let (name, value) = match edit {
            HeaderEdit::Replace { name, value } => (name.as_str(), Some(value.as_str())),
            HeaderEdit::Remove { name } => (name.as_str(), None),
        };
        host::set_map_entry(map, name, value)
    })
}

fn answer_refusal(direction: Direction, reason: Reason, answer: Answer) -> Action {
    match answer {
        Answer::Status(status) => refuse(direction, status, reason.as_str()),
        Answer::Reset => reset(direction),
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
