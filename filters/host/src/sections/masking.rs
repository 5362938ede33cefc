//! The masking section: replaces sensitive values in request and response
//! headers, trailers, query strings and bodies before they leave the proxy.
//! The engine and the per-message state machine are `meshguard_core::masking`
//! (`Gate`); this reads what the host offers at each callback, applies the
//! gate's edits and verdicts, and counts everything, never logging a value.

use meshguard_core::config::Mode;
use meshguard_core::masking::{
    tunnel, wants_identity_response, Answer, Direction, Gate, HeaderEdit, HeadersStep,
    MaskingPolicy, Reason, Report, RuleHits, Selection, Verdict,
};
use meshguard_core::metrics::{
    label_value, tagged, MASKING_DRY_RUN_FIELDS, MASKING_FIELDS, MASKING_REFUSED, MASKING_SKIPPED,
    MASKING_TEXT_FALLBACKS,
};

use crate::host::{Counter, Map, PluginHost, StreamHost};
use crate::reply::{reset, Flow};
use crate::view::View;

const DIRECTIONS: [Direction; 2] = [Direction::Request, Direction::Response];
const REASONS: [Reason; Reason::ALL.len()] = Reason::ALL;
/// The reasons of a degraded masking: JSON masked as text (`on_malformed_json:
/// mask_as_text`), bytes scanned run by run (`on_not_utf8: mask_bytes`).
const FALLBACKS: [Reason; 3] = [Reason::MalformedJson, Reason::TooDeep, Reason::NotUtf8];

/// The section's counters, defined once per configuration.
#[derive(Debug)]
pub struct Masking {
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

fn reason_counter<const N: usize>(
    table: &[[Counter; N]; 2],
    reasons: &[Reason; N],
    direction: Direction,
    reason: Reason,
) -> Counter {
    let slot = reasons.iter().position(|r| *r == reason);
    table
        .get(dir_index(direction))
        .and_then(|row| slot.and_then(|i| row.get(i)))
        .copied()
        .unwrap_or_default()
}

impl Masking {
    pub fn define<H: PluginHost>(host: &H, policy: &MaskingPolicy) -> Self {
        log::info!(
            "meshguard masking: policy: mode={} rules={} max_body_bytes={}",
            policy.mode().as_str(),
            policy.rule_count(),
            policy.max_body_bytes()
        );
        let per_rule = |base: &str| {
            (0..policy.rule_count())
                .map(|rule| {
                    let name = label_value(policy.rule_name(rule).unwrap_or("?"));
                    DIRECTIONS.map(|d| {
                        host.define_counter(&tagged(
                            base,
                            &[("rule", &name), ("direction", d.as_str())],
                        ))
                    })
                })
                .collect()
        };
        let counter = |base: &str, d: Direction, r: Reason| {
            host.define_counter(&tagged(
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

    /// Counts one callback's report and logs its skip or refusal (never a value).
    fn report<H: StreamHost>(&self, host: &H, mode: Mode, direction: Direction, report: &Report) {
        let table = match mode {
            Mode::Enforce => &self.fields,
            Mode::DryRun => &self.dry_run_fields,
        };
        for h in &report.hits {
            if let Some(counter) = table
                .get(h.rule)
                .and_then(|row| row.get(dir_index(direction)))
            {
                host.add(*counter, u64::from(h.count));
            }
        }
        if let Some(skip) = &report.skipped {
            host.add(
                reason_counter(&self.skipped, &REASONS, direction, skip.reason),
                1,
            );
            let why = skip.setting.unwrap_or("dry-run: would refuse");
            log::info!(
                "meshguard masking: {} body forwarded unmasked: {} ({why})",
                direction.as_str(),
                skip.reason.as_str()
            );
        }
        if let Some(reason) = report.refused {
            host.add(
                reason_counter(&self.refused, &REASONS, direction, reason),
                1,
            );
            log::info!(
                "meshguard masking: {} refused: {}",
                direction.as_str(),
                reason.as_str()
            );
        }
        if report.binary_parts > 0 {
            host.add(
                reason_counter(&self.skipped, &REASONS, direction, Reason::BinaryPart),
                u64::from(report.binary_parts),
            );
            log::info!(
                "meshguard masking: {} binary parts forwarded unmasked in a {} body (on_binary_part: pass)",
                report.binary_parts,
                direction.as_str()
            );
        }
        if let Some(reason) = report.text_fallback {
            host.add(
                reason_counter(&self.text_fallbacks, &FALLBACKS, direction, reason),
                1,
            );
        }
    }

    fn refused<H: StreamHost>(&self, host: &H, direction: Direction, reason: Reason) {
        host.add(
            reason_counter(&self.refused, &REASONS, direction, reason),
            1,
        );
    }
}

/// One exchange's masking: the two directions' gates and what was masked.
#[derive(Debug)]
pub struct Exchange {
    request: Option<Gate>,
    /// The response's rules, selected with the request's route and caller,
    /// then its gate once its headers arrive.
    response: Option<ResponseGate>,
    /// Values masked (or, in dry-run, found) in this exchange.
    hits: u32,
    /// Publish the running count in filter state (another plugin's audit
    /// may record it).
    publish: bool,
}

#[derive(Debug)]
enum ResponseGate {
    Selected(Selection),
    Started(Gate),
}

/// A body callback's outcome: the flow, the size of the host's buffer
/// afterwards (a masked body replaces the held one), and whether the message
/// was refused (answered or reset: nothing more of it is processed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyStep {
    pub flow: Flow,
    pub buffered: usize,
    pub refused: bool,
}

impl Exchange {
    /// An exchange; `publish` when no audit section of this plugin records it.
    pub fn new(publish: bool) -> Self {
        Self {
            request: None,
            response: None,
            hits: 0,
            publish,
        }
    }

    /// What audit records: `masked:N` once something was masked.
    pub fn decision(&self) -> Option<String> {
        (self.hits > 0).then(|| format!("masked:{}", self.hits))
    }

    /// The request headers: selects both directions' rules on the view,
    /// masks the headers and query, and decides how the body is handled.
    pub fn request_headers<H: StreamHost>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        section: &Masking,
        view: &mut View,
        end_of_stream: bool,
    ) -> Flow {
        if let Err(rejection) = view.info() {
            // No scope can be judged on a path that cannot be read.
            if policy.mode() == Mode::Enforce {
                section.refused(host, Direction::Request, Reason::Path);
                log::info!("meshguard masking: request refused: its path cannot be canonicalized");
                return refuse(host, Direction::Request, 400, rejection.code());
            }
        }
        let caller = view.peer(host, None).identity.clone();
        let info = view.info().unwrap_or_else(|_| view.raw_info());
        let mut request = policy.select(Direction::Request, caller.as_ref(), &info);
        let mut response = policy.select(Direction::Response, caller.as_ref(), &info);
        // An upgraded or CONNECT stream is never held (it would stall).
        if let Some((verdict, report)) =
            tunnel(policy, view.headers(), &mut request, &mut response, false)
        {
            self.count(host, policy, section, Direction::Request, &report);
            if let Verdict::Refuse { reason, answer } = verdict {
                return answer_refusal(host, Direction::Request, reason, answer);
            }
        }
        if wants_identity_response(policy, &response) {
            // A compressed response cannot be masked: ask for identity encoding.
            host.set_header(Map::RequestHeaders, "accept-encoding", Some("identity"));
        }
        self.response = (!response.is_empty()).then_some(ResponseGate::Selected(response));
        if request.is_empty() {
            return Flow::Continue;
        }
        let (gate, step) = Gate::headers(
            policy,
            Direction::Request,
            request,
            view.headers(),
            end_of_stream,
            false,
        );
        self.request = Some(gate);
        if let Some(HeaderEdit::Replace { value, .. }) =
            step.edits.iter().find(|e| e.name() == ":path")
        {
            // The masked query is what later sections judge and record.
            view.set_target(value.clone());
        }
        self.apply(host, policy, section, Direction::Request, step)
    }

    pub fn response_headers<H: StreamHost>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        section: &Masking,
        end_of_stream: bool,
    ) -> Flow {
        let Some(ResponseGate::Selected(selection)) = self.response.take() else {
            return Flow::Continue;
        };
        let headers = host.headers(Map::ResponseHeaders).unwrap_or_default();
        let (gate, step) = Gate::headers(
            policy,
            Direction::Response,
            selection,
            &headers,
            end_of_stream,
            false,
        );
        self.response = Some(ResponseGate::Started(gate));
        self.apply(host, policy, section, Direction::Response, step)
    }

    /// Whether this direction's body is held and masked here.
    pub fn holds(&self, direction: Direction) -> bool {
        self.gate_ref(direction).is_some()
    }

    fn gate_ref(&self, direction: Direction) -> Option<&Gate> {
        match direction {
            Direction::Request => self.request.as_ref(),
            Direction::Response => match self.response.as_ref() {
                Some(ResponseGate::Started(gate)) => Some(gate),
                _ => None,
            },
        }
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

    /// A body callback: the host holds `buffered` bytes, of which the first
    /// `settled` already left this section (masked) and are held by a later
    /// one. Only the bytes after them are read, masked and replaced, so
    /// masked bytes are never masked twice and raw bytes never pass.
    #[allow(clippy::too_many_arguments)]
    pub fn body<H: StreamHost>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        section: &Masking,
        direction: Direction,
        buffered: usize,
        settled: usize,
        end_of_stream: bool,
    ) -> BodyStep {
        let Some(gate) = self.gate(direction) else {
            return BodyStep {
                flow: Flow::Continue,
                buffered,
                refused: false,
            };
        };
        let settled = settled.min(buffered);
        let unread = buffered.saturating_sub(settled);
        let (verdict, report) = gate.body(policy, unread, end_of_stream, || {
            host.body(direction, settled, unread)
        });
        self.count(host, policy, section, direction, &report);
        self.verdict(host, section, direction, verdict, buffered, settled)
    }

    /// Trailers end the stream: the held body is masked here (the host keeps
    /// it readable and replaceable in this callback), never released as is.
    pub fn trailers<H: StreamHost>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        section: &Masking,
        direction: Direction,
        settled: usize,
    ) -> BodyStep {
        let Some(gate) = self.gate(direction) else {
            return BodyStep {
                flow: Flow::Continue,
                buffered: 0,
                refused: false,
            };
        };
        let map = Map::trailers(direction);
        let trailers = host.headers(map).unwrap_or_default();
        let limit = policy.max_body_bytes().saturating_add(1);
        let mut unread = 0;
        let step = gate.trailers(policy, &trailers, || {
            let body = host.body(direction, settled, limit);
            unread = body.len();
            body
        });
        let held = settled.saturating_add(unread);
        let HeadersStep {
            edits,
            verdict,
            report,
        } = step;
        self.count(host, policy, section, direction, &report);
        if !apply_edits(host, map, &edits) {
            section.refused(host, direction, Reason::HostError);
            return BodyStep {
                flow: reset(host, direction),
                buffered: held,
                refused: true,
            };
        }
        self.verdict(host, section, direction, verdict, held, settled)
    }

    /// Applies a headers step: counts, then the refusal or the edits.
    fn apply<H: StreamHost>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        section: &Masking,
        direction: Direction,
        step: HeadersStep,
    ) -> Flow {
        self.count(host, policy, section, direction, &step.report);
        if let Verdict::Refuse { reason, answer } = step.verdict {
            return answer_refusal(host, direction, reason, answer);
        }
        if !apply_edits(host, Map::headers(direction), &step.edits) {
            section.refused(host, direction, Reason::HostError);
            log::error!("meshguard masking: the host refused a header edit; refusing");
            return answer_refusal(host, direction, Reason::HostError, Answer::Status(502));
        }
        Flow::Continue
    }

    /// Turns a body verdict into host calls. `held` bytes are in the host's
    /// buffer, the first `settled` of them already masked: a replacement
    /// replaces the rest (the host only replaces from the start, so the
    /// settled bytes are written back as they are).
    fn verdict<H: StreamHost>(
        &mut self,
        host: &mut H,
        section: &Masking,
        direction: Direction,
        verdict: Verdict,
        held: usize,
        settled: usize,
    ) -> BodyStep {
        let (flow, buffered, refused) = match verdict {
            Verdict::Continue => (Flow::Continue, held, false),
            Verdict::Hold => (Flow::Stop, held, false),
            Verdict::HoldReplaced(tail) => {
                let mut all = host.body(direction, 0, settled);
                all.extend_from_slice(&tail);
                if host.replace_body(direction, held, &all) {
                    (Flow::Stop, all.len(), false)
                } else {
                    section.refused(host, direction, Reason::HostError);
                    log::error!("meshguard masking: the host refused a held record; resetting");
                    (reset(host, direction), held, true)
                }
            }
            Verdict::Replace(body) => {
                let body = if settled > 0 {
                    let mut all = host.body(direction, 0, settled);
                    all.extend_from_slice(&body);
                    all
                } else {
                    body
                };
                if host.replace_body(direction, held, &body) {
                    (Flow::Continue, body.len(), false)
                } else {
                    section.refused(host, direction, Reason::HostError);
                    log::error!("meshguard masking: the host refused the masked body; resetting");
                    (reset(host, direction), held, true)
                }
            }
            Verdict::Refuse { reason, answer } => {
                (answer_refusal(host, direction, reason, answer), held, true)
            }
        };
        BodyStep {
            flow,
            buffered,
            refused,
        }
    }

    fn count<H: StreamHost>(
        &mut self,
        host: &mut H,
        policy: &MaskingPolicy,
        section: &Masking,
        direction: Direction,
        report: &Report,
    ) {
        section.report(host, policy.mode(), direction, report);
        let n: u32 = report.hits.iter().map(|h: &RuleHits| h.count).sum();
        self.hits = self.hits.saturating_add(n);
        if n > 0 && self.publish {
            host.publish("meshguard_masking", &format!("masked:{}", self.hits));
        }
    }

    /// The exchange ended.
    pub fn log(&self) {
        if self.hits > 0 {
            log::debug!(
                "meshguard masking: {} values masked in this exchange",
                self.hits
            );
        }
    }
}

/// Applies header (or trailer) edits; false when the host refused one.
fn apply_edits<H: StreamHost>(host: &mut H, map: Map, edits: &[HeaderEdit]) -> bool {
    edits.iter().all(|edit| match edit {
        HeaderEdit::Replace { name, value } => host.set_header(map, name, Some(value)),
        HeaderEdit::Remove { name } => host.set_header(map, name, None),
        HeaderEdit::Values { name, values } => {
            let mut values = values.iter();
            host.set_header(map, name, values.next().map(String::as_str))
                && values.all(|v| host.add_header(map, name, v))
        }
    })
}

fn answer_refusal<H: StreamHost>(
    host: &mut H,
    direction: Direction,
    reason: Reason,
    answer: Answer,
) -> Flow {
    match answer {
        Answer::Status(status) => refuse(host, direction, status, reason.as_str()),
        Answer::Reset => reset(host, direction),
    }
}

/// A local reply for a message that cannot be masked. For a response this
/// replaces it (possible only while its headers have not left).
fn refuse<H: StreamHost>(host: &mut H, direction: Direction, status: u16, reason: &str) -> Flow {
    let body = format!(r#"{{"error":"masking_failed","reason":"{reason}"}}"#);
    let headers = [
        ("content-type", "application/json"),
        ("x-meshguard-deny-reason", reason),
    ];
    if !host.reply(status, &headers, body.as_bytes()) {
        return reset(host, direction);
    }
    Flow::Stop
}
