//! meshguard masking filter: replaces sensitive values in request and response
//! headers, trailers, query strings and bodies before they leave the proxy.
//! The engine and the per-message state machine are `meshguard_core::masking`
//! (`Gate`); this crate reads what the host offers at each callback, applies
//! the gate's edits and verdicts, and counts everything, never logging a value.

// Release wasm builds wrap silently on integer overflow, and a panic kills the
// VM: outside tests, every arithmetic operation is checked, saturating or
// explicitly wrapping (docs/fuzzing.md, "Arithmetic").
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::rc::Rc;

use meshguard_core::config::{ConfigError, Mode};
use meshguard_core::identity::xfcc;
use meshguard_core::masking::{
    wants_identity_response, Answer, Direction, Gate, HeaderEdit, HeadersStep, MaskingPolicy,
    Reason, Report, RuleHits, Selection, Verdict,
};
use meshguard_core::metrics::{
    label_value, tagged, MASKING_DRY_RUN_FIELDS, MASKING_FIELDS, MASKING_REFUSED, MASKING_SKIPPED,
    MASKING_TEXT_FALLBACKS,
};
use meshguard_host::integrity::{FilterRoot, Guard, Quarantine, Root};
use meshguard_host::surface::{Envoy, Surface};
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

    fn hits<H: Surface>(&self, host: &mut H, mode: Mode, direction: Direction, hits: &[RuleHits]) {
        let table = match mode {
            Mode::Enforce => &self.fields,
            Mode::DryRun => &self.dry_run_fields,
        };
        for h in hits {
            if let Some(counter) = table
                .get(h.rule)
                .and_then(|row| row.get(dir_index(direction)))
            {
                host.add(*counter, u64::from(h.count));
            }
        }
    }

    fn reason<H: Surface, const N: usize>(
        host: &mut H,
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
            host.add(*counter, 1);
        }
    }

    /// Counts one callback's report and logs its skip or refusal (never a value).
    fn report<H: Surface>(&self, host: &mut H, mode: Mode, direction: Direction, report: &Report) {
        self.hits(host, mode, direction, &report.hits);
        if let Some(skip) = &report.skipped {
            Self::reason(host, &self.skipped, &REASONS, direction, skip.reason);
            let why = skip.setting.unwrap_or("dry-run: would refuse");
            log::info!(
                "meshguard masking: {} body forwarded unmasked: {} ({why})",
                direction.as_str(),
                skip.reason.as_str()
            );
        }
        if let Some(reason) = report.refused {
            Self::reason(host, &self.refused, &REASONS, direction, reason);
            log::info!(
                "meshguard masking: {} refused: {}",
                direction.as_str(),
                reason.as_str()
            );
        }
        if let Some(reason) = report.text_fallback {
            Self::reason(host, &self.text_fallbacks, &FALLBACKS, direction, reason);
        }
    }

    fn host_error<H: Surface>(&self, host: &mut H, direction: Direction) {
        Self::reason(host, &self.refused, &REASONS, direction, Reason::HostError);
    }

    fn path_refused<H: Surface>(&self, host: &mut H) {
        Self::reason(
            host,
            &self.refused,
            &REASONS,
            Direction::Request,
            Reason::Path,
        );
        log::info!("meshguard masking: request refused: its path cannot be canonicalized");
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
            streams: Streams::default(),
        })
    }
}

struct MaskingHttp {
    active: Option<Rc<Active>>,
    streams: Streams,
}

/// The two directions of one exchange: their gates and what was masked.
#[derive(Default)]
struct Streams {
    request: Option<Gate>,
    /// The response's rules, selected with the request's route and caller,
    /// then its gate once its headers arrive.
    response: Option<ResponseGate>,
    /// Values masked (or, in dry-run, found) in this exchange.
    hits: u32,
}

enum ResponseGate {
    Selected(Selection),
    Started(Gate),
}

impl Context for MaskingHttp {}

impl HttpContext for MaskingHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            log::error!("meshguard masking: no accepted configuration; refusing the request");
            return refuse(
                &mut Envoy,
                Direction::Request,
                503,
                "meshguard_not_configured",
            );
        };
        let (policy, metrics) = (&active.policy, &active.metrics);
        // One canonical path for the rule scopes and the upstream.
        let head = host::RequestHead::read();
        let mut line = host::RequestLine::from_head(&head);
        match line.canonicalize(policy.path_options()) {
            Ok(true) if policy.mode() == Mode::Enforce && !line.forward_path() => {
                metrics.host_error(&mut Envoy, Direction::Request);
                return reset(&mut Envoy, Direction::Request);
            }
            Ok(_) => {}
            Err(rejection) => {
                // No scope can be judged on a path we cannot read.
                if policy.mode() == Mode::Enforce {
                    metrics.path_refused(&mut Envoy);
                    return refuse(&mut Envoy, Direction::Request, 400, rejection.code());
                }
            }
        }
        if let Some(action) = active
            .quarantine
            .enforce(&line.info(), policy.path_options())
        {
            return action;
        }
        let transport = host::peer_transport();
        // As the identity filter reads the caller: a certificate whose XFCC
        // element (appended by this proxy) names several URI SANs is no
        // X509-SVID, so it has no identity and no rule exempts it.
        let caller = transport.certificate_identity().filter(|peer| {
            let xfcc = head.get("x-forwarded-client-cert");
            let local = xfcc
                .as_ref()
                .and_then(|_| host::property_string(&["connection", "uri_san_local_certificate"]));
            !xfcc::peer_certificate_has_several_uris(
                xfcc.as_deref(),
                peer.as_str(),
                local.as_deref(),
            )
        });
        let request = policy.select(Direction::Request, caller, &line.info());
        let response = policy.select(Direction::Response, caller, &line.info());
        self.streams.request_headers(
            &mut Envoy,
            policy,
            metrics,
            request,
            response,
            end_of_stream,
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        self.streams.body(
            &mut Envoy,
            &active.policy,
            &active.metrics,
            Direction::Request,
            body_size,
            end_of_stream,
        )
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        self.streams.trailers(
            &mut Envoy,
            &active.policy,
            &active.metrics,
            Direction::Request,
        )
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        self.streams
            .response_headers(&mut Envoy, &active.policy, &active.metrics, end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        self.streams.body(
            &mut Envoy,
            &active.policy,
            &active.metrics,
            Direction::Response,
            body_size,
            end_of_stream,
        )
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(active) = self.active.clone() else {
            return Action::Continue;
        };
        self.streams.trailers(
            &mut Envoy,
            &active.policy,
            &active.metrics,
            Direction::Response,
        )
    }

    fn on_log(&mut self) {
        if self.streams.hits > 0 {
            log::debug!(
                "meshguard masking: {} values masked in this exchange",
                self.streams.hits
            );
        }
    }
}

/// The callbacks, over any [`Surface`]: Envoy in the filter, a fake in tests.
impl Streams {
    fn request_headers<H: Surface>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        metrics: &Metrics,
        request: Selection,
        response: Selection,
        end_of_stream: bool,
    ) -> Action {
        let m = maps(Direction::Request);
        if wants_identity_response(policy, &response) {
            // A compressed response cannot be masked: ask for identity encoding.
            host.set_entry(m.headers, "accept-encoding", Some("identity"));
        }
        self.response = (!response.is_empty()).then_some(ResponseGate::Selected(response));
        if request.is_empty() {
            return Action::Continue;
        }
        let headers = host.entries(m.headers);
        let (gate, step) = Gate::headers(
            policy,
            Direction::Request,
            request,
            &headers,
            end_of_stream,
            false,
        );
        self.request = Some(gate);
        self.apply(host, policy, metrics, Direction::Request, step)
    }

    fn response_headers<H: Surface>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        metrics: &Metrics,
        end_of_stream: bool,
    ) -> Action {
        let Some(ResponseGate::Selected(selection)) = self.response.take() else {
            return Action::Continue;
        };
        let headers = host.entries(maps(Direction::Response).headers);
        let (gate, step) = Gate::headers(
            policy,
            Direction::Response,
            selection,
            &headers,
            end_of_stream,
            false,
        );
        self.response = Some(ResponseGate::Started(gate));
        self.apply(host, policy, metrics, Direction::Response, step)
    }

    fn gate(&mut self, direction: Direction) -> Option<&mut Gate> {
        match direction {
            Direction::Request => self.request.as_mut(),
            Direction::Response => match self.response.as_mut() {
                Some(ResponseGate::Started(gate)) => Some(gate),
                _ => None,
            },
        }
    }

    fn body<H: Surface>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        metrics: &Metrics,
        direction: Direction,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        let Some(gate) = self.gate(direction) else {
            return Action::Continue;
        };
        let buffer = maps(direction).body;
        let (verdict, report) = gate.body(policy, body_size, end_of_stream, || {
            host.body(buffer, body_size)
        });
        self.count(host, policy, metrics, direction, &report);
        self.verdict(host, metrics, direction, verdict, body_size)
    }

    /// Trailers end the stream: the held body is masked here (Envoy keeps it
    /// readable and replaceable in this callback), never released as is.
    fn trailers<H: Surface>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        metrics: &Metrics,
        direction: Direction,
    ) -> Action {
        let Some(gate) = self.gate(direction) else {
            return Action::Continue;
        };
        let m = maps(direction);
        let trailers = host.entries(m.trailers);
        let limit = policy.max_body_bytes().saturating_add(1);
        let mut held = 0;
        let step = gate.trailers(policy, &trailers, || {
            let body = host.body(m.body, limit);
            held = body.len();
            body
        });
        let HeadersStep {
            edits,
            verdict,
            report,
        } = step;
        self.count(host, policy, metrics, direction, &report);
        if !apply_edits(host, m.trailers, &edits) {
            metrics.host_error(host, direction);
            return reset(host, direction);
        }
        self.verdict(host, metrics, direction, verdict, held)
    }

    /// Applies a headers step: counts, then the refusal or the edits.
    fn apply<H: Surface>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        metrics: &Metrics,
        direction: Direction,
        step: HeadersStep,
    ) -> Action {
        self.count(host, policy, metrics, direction, &step.report);
        if let Verdict::Refuse { reason, answer } = step.verdict {
            return answer_refusal(host, direction, reason, answer);
        }
        if !apply_edits(host, maps(direction).headers, &step.edits) {
            metrics.host_error(host, direction);
            log::error!("meshguard masking: the host refused a header edit; refusing");
            return answer_refusal(host, direction, Reason::HostError, Answer::Status(502));
        }
        Action::Continue
    }

    /// Turns a body verdict into host calls and an `Action`.
    fn verdict<H: Surface>(
        &mut self,
        host: &mut H,
        metrics: &Metrics,
        direction: Direction,
        verdict: Verdict,
        held: usize,
    ) -> Action {
        match verdict {
            Verdict::Continue => Action::Continue,
            Verdict::Hold => Action::Pause,
            Verdict::Replace(body) => {
                if host.replace_body(maps(direction).body, held, &body) {
                    Action::Continue
                } else {
                    metrics.host_error(host, direction);
                    log::error!("meshguard masking: the host refused the masked body; resetting");
                    reset(host, direction)
                }
            }
            Verdict::Refuse { reason, answer } => answer_refusal(host, direction, reason, answer),
        }
    }

    fn count<H: Surface>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        metrics: &Metrics,
        direction: Direction,
        report: &Report,
    ) {
        metrics.report(host, policy.mode(), direction, report);
        let n: u32 = report.hits.iter().map(|h: &RuleHits| h.count).sum();
        self.hits = self.hits.saturating_add(n);
        if n > 0 {
            host.publish_decision(FILTER, &format!("masked:{}", self.hits));
        }
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

/// Applies header (or trailer) edits; false when the host refused one.
fn apply_edits<H: Surface>(host: &mut H, map: MapType, edits: &[HeaderEdit]) -> bool {
    edits.iter().all(|edit| {
        let (name, value) = match edit {
            HeaderEdit::Replace { name, value } => (name.as_str(), Some(value.as_str())),
            HeaderEdit::Remove { name } => (name.as_str(), None),
        };
        host.set_entry(map, name, value)
    })
}

fn answer_refusal<H: Surface>(
    host: &mut H,
    direction: Direction,
    reason: Reason,
    answer: Answer,
) -> Action {
    match answer {
        Answer::Status(status) => refuse(host, direction, status, reason.as_str()),
        Answer::Reset => reset(host, direction),
    }
}

/// A local reply for a message that cannot be masked. For a response this
/// replaces it (possible only while its headers have not left).
fn refuse<H: Surface>(host: &mut H, direction: Direction, status: u16, reason: &str) -> Action {
    let body = format!(r#"{{"error":"masking_failed","reason":"{reason}"}}"#);
    if !host.json_reply(status, reason, body.as_bytes()) {
        return reset(host, direction);
    }
    Action::Pause
}

fn reset<H: Surface>(host: &mut H, direction: Direction) -> Action {
    host.reset(direction == Direction::Response);
    Action::Pause
}

#[cfg(test)]
mod tests {
    //! The adapter's callback sequences over a recording host: what it
    //! releases, replaces, replies and resets. The gate's decisions are
    //! tested in the core; the real-Envoy tests are the proof.

    use meshguard_core::request::RequestInfo;
    use meshguard_host::surface::Fake;

    use super::*;

    fn policy() -> MaskingPolicy {
        MaskingPolicy::from_json(
            br#"{"rules": [{"name": "pii", "json_keys": ["password"], "detectors": ["email"]},
                           {"name": "auth", "headers": ["authorization"]}]}"#,
            None,
        )
        .unwrap()
    }

    /// Counters the host never defined: counting is a no-op.
    fn metrics(policy: &MaskingPolicy) -> Metrics {
        Metrics {
            fields: vec![[Counter::default(); 2]; policy.rule_count()],
            dry_run_fields: vec![[Counter::default(); 2]; policy.rule_count()],
            skipped: Default::default(),
            refused: Default::default(),
            text_fallbacks: Default::default(),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    struct Exchange {
        host: Fake,
        streams: Streams,
        policy: MaskingPolicy,
        metrics: Metrics,
    }

    impl Exchange {
        /// The request headers callback for `path` with these headers.
        fn start(path: &str, headers: &[(&str, &str)], end_of_stream: bool) -> (Self, Action) {
            let policy = policy();
            let metrics = metrics(&policy);
            let mut host = Fake::default();
            let mut all = pairs(headers);
            all.push((":path".into(), path.into()));
            host.maps.insert(MapType::HttpRequestHeaders, all);
            let info = RequestInfo {
                path,
                method: "POST",
                host: "svc",
            };
            let request = policy.select(Direction::Request, None, &info);
            let response = policy.select(Direction::Response, None, &info);
            let mut streams = Streams::default();
            let action = streams.request_headers(
                &mut host,
                &policy,
                &metrics,
                request,
                response,
                end_of_stream,
            );
            (
                Self {
                    host,
                    streams,
                    policy,
                    metrics,
                },
                action,
            )
        }

        fn chunk(&mut self, direction: Direction, data: &[u8], end_of_stream: bool) -> Action {
            let buffer = maps(direction).body;
            self.host.push_body(buffer, data);
            let size = self.host.body(buffer, usize::MAX).len();
            self.streams.body(
                &mut self.host,
                &self.policy,
                &self.metrics,
                direction,
                size,
                end_of_stream,
            )
        }

        fn trailers(&mut self, direction: Direction, trailers: &[(&str, &str)]) -> Action {
            self.host
                .maps
                .insert(maps(direction).trailers, pairs(trailers));
            self.streams
                .trailers(&mut self.host, &self.policy, &self.metrics, direction)
        }

        fn response(&mut self, headers: &[(&str, &str)]) -> Action {
            self.host
                .maps
                .insert(MapType::HttpResponseHeaders, pairs(headers));
            self.streams
                .response_headers(&mut self.host, &self.policy, &self.metrics, false)
        }
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn a_request_body_ended_by_trailers_is_held_then_replaced_masked() {
        let (mut x, action) =
            Exchange::start("/a?password=x", &[JSON, ("content-length", "30")], false);
        assert_eq!(action, Action::Continue);
        assert_eq!(
            x.host.entry(MapType::HttpRequestHeaders, "content-length"),
            None
        );
        assert_eq!(
            x.host.entry(MapType::HttpRequestHeaders, ":path"),
            Some("/a?password=%5BREDACTED%5D")
        );
        assert_eq!(
            x.chunk(Direction::Request, br#"{"password""#, false),
            Action::Pause
        );
        assert_eq!(
            x.chunk(Direction::Request, br#": "x"}"#, false),
            Action::Pause
        );
        let action = x.trailers(Direction::Request, &[("authorization", "Basic x")]);
        assert_eq!(action, Action::Continue);
        assert_eq!(
            x.host.take_body(BufferType::HttpRequestBody),
            br#"{"password": "[REDACTED]"}"#
        );
        assert_eq!(
            x.host.entry(MapType::HttpRequestTrailers, "authorization"),
            Some("[REDACTED]")
        );
        assert!(x.host.replies.is_empty() && x.host.resets.is_empty());
        assert_eq!(
            x.host.decisions.last().map(String::as_str),
            Some("masked:3")
        );
    }

    #[test]
    fn a_response_that_cannot_be_masked_at_its_trailers_is_reset() {
        let (mut x, _) = Exchange::start("/a", &[], true);
        assert_eq!(x.response(&[JSON]), Action::Continue);
        assert_eq!(
            x.chunk(Direction::Response, br#"{"password": "#, false),
            Action::Pause
        );
        assert_eq!(x.trailers(Direction::Response, &[]), Action::Pause);
        assert_eq!(x.host.resets, [true]);
        assert_eq!(x.host.counted, 1, "the refusal is counted");
    }

    #[test]
    fn a_grpc_request_is_answered_locally_and_never_held() {
        let (x, action) = Exchange::start(
            "/svc.Users/Get",
            &[("content-type", "application/grpc")],
            false,
        );
        assert_eq!(action, Action::Pause);
        assert_eq!(x.host.replies, [(415, "grpc".to_owned())]);
        assert_eq!(x.host.counted, 1, "the refusal is counted");
    }

    #[test]
    fn a_masked_body_the_host_refuses_resets_the_stream() {
        let (mut x, _) = Exchange::start("/a", &[JSON], false);
        x.host.refuse_bodies = true;
        let action = x.chunk(Direction::Request, br#"{"password": "x"}"#, true);
        assert_eq!(action, Action::Pause);
        assert_eq!(x.host.resets, [false]);
        // The hit, and the host_error refusal.
        assert_eq!(x.host.counted, 2);
    }

    #[test]
    fn a_body_without_anything_to_mask_is_released_unchanged() {
        let (mut x, _) = Exchange::start("/a", &[JSON], false);
        assert_eq!(
            x.chunk(Direction::Request, br#"{"a": 1}"#, false),
            Action::Pause
        );
        assert_eq!(x.chunk(Direction::Request, b"", true), Action::Continue);
        assert_eq!(
            x.host.take_body(BufferType::HttpRequestBody),
            br#"{"a": 1}"#
        );
        assert!(x.host.decisions.is_empty());
    }
}
