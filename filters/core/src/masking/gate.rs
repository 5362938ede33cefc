//! The body gate: what the masking filter does with one message (a request
//! or a response) at each host callback, as a pure state machine shared by
//! the Envoy adapter and `meshguard mask`.
//!
//! - at the **headers**: mask the headers (and a request's query string),
//!   then decide whether the body is buffered and masked, streamed record by
//!   record, forwarded unmasked (a counted skip) or refused;
//! - on each **body chunk**: a held body (JSON, form, unknown types, text
//!   that is one JSON document or in another charset) is held until the end
//!   of the stream, refusing or skipping one that grows past
//!   `max_body_bytes`; a streamed body (server-sent events, JSON Lines,
//!   json-seq, line-delimited text, multipart) releases every record the
//!   chunk completes, masked, and holds only the incomplete one;
//! - at the **end of the stream**, or at the **trailers** when they end it
//!   (HTTP/2, gRPC, chunked HTTP/1 with trailers): mask the whole held body,
//!   or the last record. Trailer values get the header rules. Held data is
//!   never released unprocessed: the only ways out are masked (or
//!   unchanged) bytes, a counted skip decided by a setting, or a refusal.
//!
//! Nothing here touches the host: the adapter reads headers and bodies,
//! applies [`HeaderEdit`]s and turns each [`Verdict`] into a host call and an
//! `Action`, and counts each [`Report`].
//!
//! **What `read` returns.** At each body callback the adapter passes the
//! number of bytes the host holds that this gate has not released
//! (`buffered`) and a `read` that returns them: for a held body, everything
//! since the headers; for a streamed one, what arrived since the last
//! release. [`Verdict::Replace`] replaces exactly those bytes.

use super::charset::{charset_param, looks_like_utf16, UTF8_BOM};
use super::config::{
    BinaryPartAction, CompressedAction, GrpcAction, MalformedJsonAction, Mode, OversizeAction,
    UnsupportedAction, UpgradeAction,
};
use super::multipart::{boundary, Multipart};
use super::stream::{Framing, StreamError, Streamer};
use super::{
    body_kind, BodyKind, Direction, HeaderEdit, MaskError, MaskingPolicy, RuleHits, Selection,
};

/// Why a body was forwarded unmasked or a message refused: the `reason`
/// label of `meshguard_masking_bodies_skipped_total` and
/// `meshguard_masking_bodies_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Oversize,
    Compressed,
    UnsupportedContentType,
    Grpc,
    MalformedJson,
    TooDeep,
    NotUtf8,
    /// The host refused an edit (a masked body or `:path`): the stream is
    /// reset rather than letting the original through.
    HostError,
    /// The request path cannot be canonicalized (`invalid_path`,
    /// `ambiguous_path`), so no rule scope can be judged.
    Path,
    /// A multipart body without a usable boundary, or not following it.
    MalformedMultipart,
    /// A binary part of a multipart body (`on_binary_part`).
    BinaryPart,
    /// A charset that cannot be read, or masked text that cannot be
    /// written back in it.
    Charset,
    /// An upgraded (WebSocket...) or CONNECT stream (`on_upgrade`).
    Upgrade,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Self::Oversize,
        Self::Compressed,
        Self::UnsupportedContentType,
        Self::Grpc,
        Self::MalformedJson,
        Self::TooDeep,
        Self::NotUtf8,
        Self::HostError,
        Self::Path,
        Self::MalformedMultipart,
        Self::BinaryPart,
        Self::Charset,
        Self::Upgrade,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::Compressed => "compressed",
            Self::UnsupportedContentType => "unsupported_content_type",
            Self::Grpc => "grpc",
            Self::MalformedJson => "malformed_json",
            Self::TooDeep => "too_deep",
            Self::NotUtf8 => "not_utf8",
            Self::HostError => "host_error",
            Self::Path => "path",
            Self::MalformedMultipart => "malformed_multipart",
            Self::BinaryPart => "binary_part",
            Self::Charset => "charset",
            Self::Upgrade => "upgrade",
        }
    }

    fn of(error: &MaskError) -> Self {
        match error {
            MaskError::MalformedJson { .. } => Self::MalformedJson,
            MaskError::TooDeep { .. } => Self::TooDeep,
            MaskError::NotUtf8 => Self::NotUtf8,
            MaskError::Charset => Self::Charset,
        }
    }

    /// The refusal status of a request that cannot be masked for this reason.
    fn status(self) -> u16 {
        match self {
            Self::Oversize => 413,
            Self::Compressed | Self::UnsupportedContentType | Self::Grpc => 415,
            Self::BinaryPart | Self::Charset => 415,
            Self::Upgrade => 501,
            Self::HostError => 502,
            Self::MalformedJson
            | Self::TooDeep
            | Self::NotUtf8
            | Self::Path
            | Self::MalformedMultipart => 400,
        }
    }

    /// The setting that lets this reason through, when the policy allows it
    /// (`None`: the policy refuses it in enforce mode).
    fn forwarded_by(self, policy: &MaskingPolicy) -> Option<&'static str> {
        match self {
            Self::Oversize => (policy.on_oversize() == OversizeAction::PassUnmasked)
                .then_some("on_oversize: pass_unmasked"),
            Self::Compressed => (policy.on_compressed_request() == CompressedAction::PassUnmasked)
                .then_some("on_compressed_request: pass_unmasked"),
            Self::UnsupportedContentType => (policy.on_unsupported_content_type()
                == UnsupportedAction::Pass)
                .then_some("on_unsupported_content_type: pass"),
            Self::Grpc => {
                (policy.on_grpc() == GrpcAction::PassUnmasked).then_some("on_grpc: pass_unmasked")
            }
            Self::BinaryPart => (policy.on_binary_part() == BinaryPartAction::Pass)
                .then_some("on_binary_part: pass"),
            Self::Upgrade => (policy.on_upgrade() == UpgradeAction::PassUnmasked)
                .then_some("on_upgrade: pass_unmasked"),
            Self::MalformedJson
            | Self::TooDeep
            | Self::NotUtf8
            | Self::HostError
            | Self::Path
            | Self::MalformedMultipart
            | Self::Charset => None,
        }
    }

    fn of_stream(error: &StreamError) -> Self {
        match error {
            StreamError::Oversize => Self::Oversize,
            StreamError::Mask(e) => Self::of(e),
            StreamError::Multipart => Self::MalformedMultipart,
            StreamError::BinaryPart => Self::BinaryPart,
            StreamError::Charset => Self::Charset,
        }
    }
}

/// How a refused message is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A local reply with this status (a response's replaces it: decided
    /// before its headers left).
    Status(u16),
    /// The response's headers have already been forwarded: reset the stream.
    Reset,
}

/// What the adapter does with the data the host offers at this callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through (nothing held, or the held bytes unchanged).
    Continue,
    /// Keep holding it: more body is coming.
    Hold,
    /// Replace the bytes `read` returned with these, then let them through.
    Replace(Vec<u8>),
    /// Replace the bytes `read` returned with these and keep holding them:
    /// a streamed body's incomplete record, handed back to the host (so that
    /// the host holds it, and the trailers can still add to the body).
    HoldReplaced(Vec<u8>),
    /// Refuse the message.
    Refuse { reason: Reason, answer: Answer },
}

/// A body forwarded unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub reason: Reason,
    /// The setting that forwards it, or in dry-run the refusal enforce mode
    /// would make (`setting: None`).
    pub setting: Option<&'static str>,
    pub would_refuse: Option<Answer>,
}

/// What to count for one callback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub hits: Vec<RuleHits>,
    pub skipped: Option<Skip>,
    pub refused: Option<Reason>,
    /// Masked in a degraded way, counted: a JSON body masked as text under
    /// `on_malformed_json: mask_as_text` (`malformed_json`, `too_deep`), or
    /// text that is not UTF-8 scanned run by run under `on_not_utf8:
    /// mask_bytes` (`not_utf8`).
    pub text_fallback: Option<Reason>,
    /// Binary multipart parts forwarded unmasked under `on_binary_part:
    /// pass` (each counted as skipped with reason `binary_part`).
    pub binary_parts: u32,
}

impl Report {
    fn add_hits(&mut self, hits: Vec<RuleHits>) {
        self.hits.extend(hits);
    }
}

/// The outcome of the headers (or trailers) callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadersStep {
    /// Edits to apply in order (none in dry-run). `:path` may be among them.
    pub edits: Vec<HeaderEdit>,
    pub verdict: Verdict,
    pub report: Report,
}

#[derive(Debug, Clone)]
enum State {
    /// The body is not looked at (no body rule, no body, or a counted skip).
    Pass,
    /// The body is held and will be masked whole as this kind.
    Holding(BodyKind),
    /// A text body: held until its first bytes tell whether it is one
    /// document (JSON, another charset: held whole) or lines (streamed).
    Sniffing,
    /// The body is masked record by record.
    Streaming(Box<Streamer>),
    /// The body was masked or the message refused.
    Done,
}

/// Bytes of a text body looked at before it is streamed line by line.
const SNIFF_BYTES: usize = 64;

/// One message's gate. Create it at the headers with [`Gate::headers`].
#[derive(Debug, Clone)]
pub struct Gate {
    direction: Direction,
    selection: Selection,
    dry_run: bool,
    state: State,
    /// The content type's `charset` parameter.
    charset: Option<String>,
}

/// Whether a request must ask for `accept-encoding: identity`: its response
/// will have its body masked, and a compressed body cannot be.
pub fn wants_identity_response(policy: &MaskingPolicy, response: &Selection) -> bool {
    response.needs_body() && policy.mode() == Mode::Enforce
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether request headers open a tunnel: an `Upgrade` (WebSocket, or an
/// HTTP/2 extended CONNECT, which Envoy shows as one; `h2c` excepted) or a
/// CONNECT.
pub fn is_tunnel(headers: &[(String, String)]) -> bool {
    header(headers, ":method").is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"))
        || header(headers, "upgrade").is_some_and(|u| {
            // `h2c` asks for HTTP/2 on the same connection: not a tunnel.
            let u = u.trim();
            !u.is_empty() && !u.eq_ignore_ascii_case("h2c")
        })
}

/// A tunnel (see [`is_tunnel`]) on a route whose rules mask bodies in either
/// direction: its bytes are not HTTP bodies and are never held (holding
/// them would stall the stream). `on_upgrade` decides: refused with `501`,
/// or let through with header masking only (both selections lose their
/// body rules), counted. `None`: not a tunnel, or no body rule applies.
pub fn tunnel(
    policy: &MaskingPolicy,
    request_headers: &[(String, String)],
    request: &mut Selection,
    response: &mut Selection,
    dry_run: bool,
) -> Option<(Verdict, Report)> {
    if !is_tunnel(request_headers) || !(request.needs_body() || response.needs_body()) {
        return None;
    }
    let dry_run = dry_run || policy.mode() == Mode::DryRun;
    let mut report = Report::default();
    let answer = Answer::Status(Reason::Upgrade.status());
    let verdict = match Reason::Upgrade.forwarded_by(policy) {
        Some(setting) => {
            report.skipped = Some(Skip {
                reason: Reason::Upgrade,
                setting: Some(setting),
                would_refuse: None,
            });
            Verdict::Continue
        }
        None if dry_run => {
            report.skipped = Some(Skip {
                reason: Reason::Upgrade,
                setting: None,
                would_refuse: Some(answer),
            });
            Verdict::Continue
        }
        None => {
            report.refused = Some(Reason::Upgrade);
            Verdict::Refuse {
                reason: Reason::Upgrade,
                answer,
            }
        }
    };
    request.drop_body_rules();
    response.drop_body_rules();
    Some((verdict, report))
}

/// Whether a text body is one document held whole (JSON sent as text, a
/// charset other than UTF-8, NUL-interleaved UTF-16) rather than lines.
fn text_is_whole(head: &[u8], charset: Option<&str>) -> bool {
    let declared_other =
        charset.is_some_and(|c| !matches!(c, "utf-8" | "utf8" | "us-ascii" | "ascii"));
    let text = head.strip_prefix(UTF8_BOM).unwrap_or(head);
    declared_other
        || looks_like_utf16(head)
        || matches!(
            text.iter().find(|c| !c.is_ascii_whitespace()),
            Some(b'{' | b'[')
        )
}

impl Gate {
    /// The headers callback. `dry_run` is the policy's mode or the CLI's
    /// `--dry-run-report`; `end_of_stream` says the message has no body.
    pub fn headers(
        policy: &MaskingPolicy,
        direction: Direction,
        selection: Selection,
        headers: &[(String, String)],
        end_of_stream: bool,
        dry_run: bool,
    ) -> (Self, HeadersStep) {
        let dry_run = dry_run || policy.mode() == Mode::DryRun;
        let content_type = header(headers, "content-type");
        let mut gate = Self {
            direction,
            selection,
            dry_run,
            state: State::Pass,
            charset: charset_param(content_type),
        };
        let mut step = HeadersStep {
            edits: Vec::new(),
            verdict: Verdict::Continue,
            report: Report::default(),
        };
        if gate.selection.is_empty() {
            return (gate, step);
        }
        if gate.selection.needs_headers() {
            let edits = policy.mask_headers(&gate.selection, headers);
            step.report.add_hits(edits.hits);
            if !dry_run {
                step.edits.extend(edits.edits);
            }
        }
        if direction == Direction::Request {
            let path = header(headers, ":path").unwrap_or("");
            match policy.mask_query(&gate.selection, path) {
                Ok(masked) => {
                    step.report.add_hits(masked.hits);
                    if masked.scanned_bytes {
                        step.report.text_fallback = Some(Reason::NotUtf8);
                    }
                    if let (Some(new_path), false) = (masked.body, dry_run) {
                        step.edits.push(HeaderEdit::Replace {
                            name: ":path".into(),
                            value: String::from_utf8_lossy(&new_path).into_owned(),
                        });
                    }
                }
                Err(e) => {
                    step.verdict = gate.cannot_mask(policy, Reason::of(&e), &mut step.report);
                    if step.verdict != Verdict::Continue {
                        gate.state = State::Done;
                        return (gate, step);
                    }
                }
            }
        }
        if !gate.selection.needs_body() || end_of_stream {
            return (gate, step);
        }
        let encoded = header(headers, "content-encoding")
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let kind = body_kind(content_type);
        let streamed = matches!(
            kind,
            BodyKind::EventStream
                | BodyKind::JsonLines
                | BodyKind::JsonSeq
                | BodyKind::Multipart
                | BodyKind::Text
        );
        let declared =
            header(headers, "content-length").and_then(|l| l.trim().parse::<usize>().ok());
        let utf8_only = matches!(
            kind,
            BodyKind::EventStream | BodyKind::JsonLines | BodyKind::JsonSeq
        );
        let boundary = boundary(content_type);
        let refusal = if encoded {
            Some(Reason::Compressed)
        } else if kind == BodyKind::Grpc {
            Some(Reason::Grpc)
        } else if !streamed && declared.is_some_and(|len| len > policy.max_body_bytes()) {
            Some(Self::too_large(kind))
        } else if utf8_only && text_is_whole(b"", gate.charset.as_deref()) {
            // Server-sent events and JSON Lines are UTF-8 by definition.
            Some(Reason::Charset)
        } else if kind == BodyKind::Multipart && boundary.is_none() {
            Some(Reason::MalformedMultipart)
        } else {
            None
        };
        if let Some(reason) = refusal {
            let status = if declared.is_some_and(|len| len > policy.max_body_bytes()) && !streamed {
                413
            } else {
                reason.status()
            };
            step.verdict = gate.cannot_mask_as(policy, reason, status, &mut step.report);
            if step.verdict != Verdict::Continue {
                gate.state = State::Done;
            }
            return (gate, step);
        }
        let records = |framing| {
            State::Streaming(Box::new(Streamer::records(
                framing,
                policy.max_record_bytes(),
            )))
        };
        gate.state = match kind {
            BodyKind::EventStream => records(Framing::Events),
            BodyKind::JsonLines => records(Framing::JsonLines),
            BodyKind::JsonSeq => records(Framing::JsonSeq),
            BodyKind::Multipart => State::Streaming(Box::new(Streamer::multipart(
                Multipart::new(boundary.as_deref().unwrap_or_default()),
                policy.max_record_bytes(),
            ))),
            BodyKind::Text => State::Sniffing,
            kind => State::Holding(kind),
        };
        if !dry_run {
            // The body may change length: a stale content-length would desync
            // a pooled HTTP/1 connection. The host re-frames the message.
            step.edits.push(HeaderEdit::Remove {
                name: "content-length".into(),
            });
        }
        (gate, step)
    }

    /// A body chunk: `buffered` bytes the host holds that this gate has not
    /// released (this chunk included); `read` returns them. A held body is
    /// read only at its end; a streamed one at every chunk.
    pub fn body(
        &mut self,
        policy: &MaskingPolicy,
        buffered: usize,
        end_of_stream: bool,
        read: impl FnOnce() -> Vec<u8>,
    ) -> (Verdict, Report) {
        let mut report = Report::default();
        let verdict = match &self.state {
            State::Pass | State::Done => Verdict::Continue,
            State::Holding(kind) => {
                let kind = *kind;
                if buffered > policy.max_body_bytes() {
                    self.grown_past_limit(policy, &mut report)
                } else if !end_of_stream {
                    Verdict::Hold
                } else {
                    self.finish(policy, kind, &read(), &mut report)
                }
            }
            State::Sniffing => {
                if buffered < SNIFF_BYTES && !end_of_stream {
                    Verdict::Hold
                } else {
                    let held = read();
                    self.sniffed(policy, held, end_of_stream, &mut report)
                }
            }
            State::Streaming(_) => self.stream(policy, read(), end_of_stream, &mut report),
        };
        (verdict, report)
    }

    /// A text body's first bytes are here: held whole, or streamed by line.
    fn sniffed(
        &mut self,
        policy: &MaskingPolicy,
        held: Vec<u8>,
        end: bool,
        report: &mut Report,
    ) -> Verdict {
        if held.iter().all(u8::is_ascii_whitespace) && !end {
            // Nothing tells yet (leading blank lines): keep holding, bounded.
            if held.len() > policy.max_body_bytes() {
                return self.grown_past_limit(policy, report);
            }
            return Verdict::Hold;
        }
        if text_is_whole(&held, self.charset.as_deref()) {
            self.state = State::Holding(BodyKind::Text);
            return if held.len() > policy.max_body_bytes() {
                self.grown_past_limit(policy, report)
            } else if end {
                self.finish(policy, BodyKind::Text, &held, report)
            } else {
                Verdict::Hold
            };
        }
        self.state = State::Streaming(Box::new(Streamer::records(
            Framing::Lines,
            policy.max_record_bytes(),
        )));
        self.stream(policy, held, end, report)
    }

    /// Feeds a streamed body's new bytes: the records they complete leave
    /// masked, the incomplete one stays held.
    fn stream(
        &mut self,
        policy: &MaskingPolicy,
        input: Vec<u8>,
        end: bool,
        report: &mut Report,
    ) -> Verdict {
        let State::Streaming(streamer) = &mut self.state else {
            return Verdict::Continue;
        };
        match policy.feed_stream(&self.selection, streamer, &input, end) {
            Ok((fed, hits, scanned_bytes)) => {
                report.add_hits(hits);
                report.binary_parts = fed.binary_parts;
                if scanned_bytes {
                    report.text_fallback = Some(Reason::NotUtf8);
                }
                if let Some(e) = &fed.fallback {
                    report.text_fallback = Some(Reason::of(e));
                }
                if !end && !self.dry_run && fed.out.is_empty() {
                    // Nothing complete yet: the host keeps the incomplete
                    // record (the trailers can then still mask it there).
                    let tail = streamer.take_pending();
                    return if tail == input {
                        Verdict::Hold
                    } else {
                        Verdict::HoldReplaced(tail)
                    };
                }
                if end {
                    self.state = State::Done;
                }
                if self.dry_run || (!fed.changed && fed.out == input) {
                    Verdict::Continue
                } else {
                    Verdict::Replace(fed.out)
                }
            }
            Err(e) => {
                let held = streamer.take_pending();
                let verdict = self.cannot_mask(policy, Reason::of_stream(&e), report);
                if verdict != Verdict::Continue {
                    self.state = State::Done;
                    return verdict;
                }
                // Forwarded by a setting (or dry-run): the rest passes as is.
                self.state = State::Pass;
                if self.dry_run || held == input {
                    Verdict::Continue
                } else {
                    Verdict::Replace(held)
                }
            }
        }
    }

    /// The trailers, which end the stream: their values get the header rules,
    /// and a held body (or a streamed body's last record) is masked now.
    /// `read` returns the bytes not released yet, as for [`Gate::body`].
    pub fn trailers(
        &mut self,
        policy: &MaskingPolicy,
        trailers: &[(String, String)],
        read: impl FnOnce() -> Vec<u8>,
    ) -> HeadersStep {
        let mut step = HeadersStep {
            edits: Vec::new(),
            verdict: Verdict::Continue,
            report: Report::default(),
        };
        if self.selection.needs_headers() {
            let edits = policy.mask_headers(&self.selection, trailers);
            step.report.add_hits(edits.hits);
            if !self.dry_run {
                step.edits = edits.edits;
            }
        }
        step.verdict = match &self.state {
            State::Holding(kind) => {
                let kind = *kind;
                let body = read();
                if body.len() > policy.max_body_bytes() {
                    self.grown_past_limit(policy, &mut step.report)
                } else {
                    self.finish(policy, kind, &body, &mut step.report)
                }
            }
            State::Sniffing => {
                let held = read();
                self.sniffed(policy, held, true, &mut step.report)
            }
            State::Streaming(_) => {
                let input = read();
                self.stream(policy, input, true, &mut step.report)
            }
            State::Pass | State::Done => Verdict::Continue,
        };
        step
    }

    /// The held body, whole: masked, or refused when it cannot be.
    fn finish(
        &mut self,
        policy: &MaskingPolicy,
        kind: BodyKind,
        body: &[u8],
        report: &mut Report,
    ) -> Verdict {
        // A body without a masked content type (none, octet-stream, a typo)
        // is sniffed: text is masked as text (JSON in it as JSON), so that
        // dropping the content type cannot carry data past the rules.
        // UTF-16 text is text; bytes with NULs otherwise are binary.
        let kind = match kind {
            BodyKind::Other
                if looks_like_utf16(body)
                    || (std::str::from_utf8(body).is_ok() && !body.contains(&0)) =>
            {
                BodyKind::Text
            }
            BodyKind::Other => {
                let verdict = self.cannot_mask(policy, Reason::UnsupportedContentType, report);
                self.state = State::Done;
                return verdict;
            }
            kind => kind,
        };
        self.state = State::Done;
        let charset = self.charset.as_deref();
        let outcome = match policy.mask_body_in(&self.selection, kind, charset, body) {
            Err(e @ (MaskError::MalformedJson { .. } | MaskError::TooDeep { .. }))
                if policy.on_malformed_json() == MalformedJsonAction::MaskAsText =>
            {
                report.text_fallback = Some(Reason::of(&e));
                policy.mask_body_in(&self.selection, BodyKind::Text, charset, body)
            }
            other => other,
        };
        match outcome {
            Ok(masked) => {
                report.add_hits(masked.hits);
                if masked.scanned_bytes {
                    report.text_fallback = report.text_fallback.or(Some(Reason::NotUtf8));
                }
                match masked.body {
                    Some(new_body) if !self.dry_run => Verdict::Replace(new_body),
                    _ => Verdict::Continue,
                }
            }
            Err(e) => self.cannot_mask(policy, Reason::of(&e), report),
        }
    }

    /// Why a body over `max_body_bytes` cannot be masked: a body of an
    /// unknown type is only sniffed within the limit, so past it, it is the
    /// unsupported type that decides (`on_unsupported_content_type`).
    fn too_large(kind: BodyKind) -> Reason {
        if kind == BodyKind::Other {
            Reason::UnsupportedContentType
        } else {
            Reason::Oversize
        }
    }

    /// The held body grew past `max_body_bytes`.
    fn grown_past_limit(&mut self, policy: &MaskingPolicy, report: &mut Report) -> Verdict {
        let reason = match &self.state {
            State::Holding(kind) => Self::too_large(*kind),
            _ => Reason::Oversize,
        };
        let verdict = self.cannot_mask_as(policy, reason, 413, report);
        self.state = if verdict == Verdict::Continue {
            State::Pass
        } else {
            State::Done
        };
        verdict
    }

    /// A body that cannot be masked: refused in enforce mode unless a
    /// setting forwards it; forwarded and counted otherwise. A request is
    /// answered with the reason's status (`413` when a declared or held body
    /// is too large); a response with 502 while its headers are held, else
    /// its stream is reset.
    fn cannot_mask(&self, policy: &MaskingPolicy, reason: Reason, report: &mut Report) -> Verdict {
        self.cannot_mask_as(policy, reason, reason.status(), report)
    }

    /// [`Self::cannot_mask`], answering a request with `request_status`.
    fn cannot_mask_as(
        &self,
        policy: &MaskingPolicy,
        reason: Reason,
        request_status: u16,
        report: &mut Report,
    ) -> Verdict {
        let answer = match (self.direction, &self.state) {
            (Direction::Request, _) => Answer::Status(request_status),
            // Before the body is held, the response's headers are still here.
            (Direction::Response, State::Pass) => Answer::Status(502),
            (Direction::Response, _) => Answer::Reset,
        };
        if let Some(setting) = reason.forwarded_by(policy) {
            report.skipped = Some(Skip {
                reason,
                setting: Some(setting),
                would_refuse: None,
            });
            return Verdict::Continue;
        }
        if self.dry_run {
            report.skipped = Some(Skip {
                reason,
                setting: None,
                would_refuse: Some(answer),
            });
            return Verdict::Continue;
        }
        report.refused = Some(reason);
        Verdict::Refuse { reason, answer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestInfo;

    const KEY: &[u8] = b"0123456789abcdef-test-key";

    fn policy(extra: &str) -> MaskingPolicy {
        let json = format!(
            r#"{{{extra} "max_body_bytes": 64, "rules": [
                {{"name": "pii", "json_keys": ["password"], "detectors": ["email", "card"]}},
                {{"name": "auth", "headers": ["authorization"]}}]}}"#
        );
        MaskingPolicy::from_json(json.as_bytes(), Some(KEY)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One host callback.
    #[derive(Clone, Copy)]
    enum Call {
        /// Headers (name, value) and whether they end the stream.
        Headers(&'static [(&'static str, &'static str)], bool),
        /// A body chunk and whether it ends the stream.
        Chunk(&'static str, bool),
        Trailers(&'static [(&'static str, &'static str)]),
    }
    use Call::*;

    /// What the host ends up doing with the message.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        /// The body bytes released downstream (upstream), in order.
        forwarded: String,
        /// Header and trailer edits, as `name=value` or `-name`.
        edits: Vec<String>,
        refused: Option<(Reason, Answer)>,
        skipped: Option<Reason>,
        fallback: Option<Reason>,
        hits: u32,
        /// Data still held when the calls ran out (must be empty).
        held: usize,
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn run(p: &MaskingPolicy, direction: Direction, calls: &[Call]) -> Seen {
        let selection = p.select(
            direction,
            None,
            &RequestInfo {
                path: "/",
                method: "POST",
                host: "svc",
            },
        );
        let mut seen = Seen {
            forwarded: String::new(),
            edits: Vec::new(),
            refused: None,
            skipped: None,
            fallback: None,
            hits: 0,
            held: 0,
        };
        let mut gate = None;
        let mut held: Vec<u8> = Vec::new();
        let note = |seen: &mut Seen, report: Report| {
            seen.hits += report.hits.iter().map(|h| h.count).sum::<u32>();
            seen.skipped = seen.skipped.or(report.skipped.map(|s| s.reason));
            seen.fallback = seen.fallback.or(report.text_fallback);
        };
        let edits = |seen: &mut Seen, edits: Vec<HeaderEdit>| {
            for e in edits {
                seen.edits.push(match e {
                    HeaderEdit::Replace { name, value } => format!("{name}={value}"),
                    HeaderEdit::Remove { name } => format!("-{name}"),
                    HeaderEdit::Values { name, values } => format!("{name}={values:?}"),
                });
            }
        };
        let release = |seen: &mut Seen, held: &mut Vec<u8>, verdict: Verdict| -> bool {
            match verdict {
                Verdict::Continue => seen.forwarded.push_str(&String::from_utf8_lossy(held)),
                Verdict::Hold => return true,
                Verdict::HoldReplaced(tail) => {
                    *held = tail;
                    return true;
                }
                Verdict::Replace(body) => seen.forwarded.push_str(&String::from_utf8_lossy(&body)),
                Verdict::Refuse { reason, answer } => {
                    seen.refused = Some((reason, answer));
                    held.clear();
                    return false;
                }
            }
            held.clear();
            true
        };
        for call in calls {
            match *call {
                Headers(list, eos) => {
                    let (g, step) =
                        Gate::headers(p, direction, selection.clone(), &pairs(list), eos, false);
                    gate = Some(g);
                    note(&mut seen, step.report);
                    edits(&mut seen, step.edits);
                    if !release(&mut seen, &mut held, step.verdict) {
                        break;
                    }
                }
                Chunk(data, eos) => {
                    let Some(g) = gate.as_mut() else { break };
                    held.extend_from_slice(data.as_bytes());
                    let copy = held.clone();
                    let (verdict, report) = g.body(p, held.len(), eos, || copy);
                    note(&mut seen, report);
                    if !release(&mut seen, &mut held, verdict) {
                        break;
                    }
                }
                Trailers(list) => {
                    let Some(g) = gate.as_mut() else { break };
                    let copy = held.clone();
                    let step = g.trailers(p, &pairs(list), || copy);
                    note(&mut seen, step.report);
                    edits(&mut seen, step.edits);
                    if !release(&mut seen, &mut held, step.verdict) {
                        break;
                    }
                }
            }
        }
        seen.held = held.len();
        seen
    }

    const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
    const TEXT: &[(&str, &str)] = &[("content-type", "text/plain")];
    const GRPC: &[(&str, &str)] = &[("content-type", "application/grpc")];
    const AUTH: &[(&str, &str)] = &[("authorization", "Bearer abc"), ("x-other", "1")];

    struct Case {
        name: &'static str,
        extra: &'static str,
        direction: Direction,
        calls: &'static [Call],
        forwarded: &'static str,
        refused: Option<(Reason, Answer)>,
        skipped: Option<Reason>,
    }

    #[test]
    fn every_callback_sequence_masks_skips_or_refuses_and_never_releases_held_data() {
        let req = Direction::Request;
        let resp = Direction::Response;
        let cases = [
            Case {
                name: "a JSON body in two chunks is masked at the end of the stream",
                extra: "",
                direction: req,
                calls: &[Headers(JSON, false), Chunk(r#"{"password""#, false), Chunk(r#":"x"}"#, true)],
                forwarded: r#"{"password":"[REDACTED]"}"#,
                refused: None,
                skipped: None,
            },
            Case {
                name: "a JSON body ended by trailers is masked at the trailers",
                extra: "",
                direction: req,
                calls: &[Headers(JSON, false), Chunk(r#"{"password":"x"}"#, false), Trailers(AUTH)],
                forwarded: r#"{"password":"[REDACTED]"}"#,
                refused: None,
                skipped: None,
            },
            Case {
                name: "a response text body ended by trailers is masked at the trailers",
                extra: "",
                direction: resp,
                calls: &[Headers(TEXT, false), Chunk("mail ann@example.com", false), Trailers(&[])],
                forwarded: "mail [REDACTED]",
                refused: None,
                skipped: None,
            },
            Case {
                name: "malformed JSON ended by trailers resets a response",
                extra: "",
                direction: resp,
                calls: &[Headers(JSON, false), Chunk(r#"{"password":"#, false), Trailers(&[])],
                forwarded: "",
                refused: Some((Reason::MalformedJson, Answer::Reset)),
                skipped: None,
            },
            Case {
                name: "malformed JSON ended by trailers refuses a request with 400",
                extra: "",
                direction: req,
                calls: &[Headers(JSON, false), Chunk(r#"{"password":"#, false), Trailers(&[])],
                forwarded: "",
                refused: Some((Reason::MalformedJson, Answer::Status(400))),
                skipped: None,
            },
            Case {
                name: "a body growing past the limit before its trailers resets a response",
                extra: "",
                direction: resp,
                calls: &[
                    Headers(JSON, false),
                    Chunk("0123456789012345678901234567890123456789", false),
                    Chunk("0123456789012345678901234567890123456789", false),
                    Trailers(&[]),
                ],
                forwarded: "",
                refused: Some((Reason::Oversize, Answer::Reset)),
                skipped: None,
            },
            Case {
                name: "a body growing past the limit refuses a request with 413",
                extra: "",
                direction: req,
                calls: &[
                    Headers(JSON, false),
                    Chunk("0123456789012345678901234567890123456789", false),
                    Chunk("0123456789012345678901234567890123456789", true),
                ],
                forwarded: "",
                refused: Some((Reason::Oversize, Answer::Status(413))),
                skipped: None,
            },
            Case {
                name: "an oversize body under pass_unmasked is forwarded, counted",
                extra: r#""on_oversize": "pass_unmasked","#,
                direction: resp,
                calls: &[
                    Headers(JSON, false),
                    Chunk("0123456789012345678901234567890123456789", false),
                    Chunk("0123456789012345678901234567890123456789", false),
                    Chunk("ann@example.com", false),
                    Trailers(&[]),
                ],
                forwarded: "01234567890123456789012345678901234567890123456789012345678901234567890123456789ann@example.com",
                refused: None,
                skipped: Some(Reason::Oversize),
            },
            Case {
                name: "a gRPC response is refused at its headers by default",
                extra: "",
                direction: resp,
                calls: &[Headers(GRPC, false), Chunk("\0\0\0\0\x05hello", false), Trailers(&[("grpc-status", "0")])],
                forwarded: "",
                refused: Some((Reason::Grpc, Answer::Status(502))),
                skipped: None,
            },
            Case {
                name: "a gRPC request under on_grpc pass_unmasked is forwarded, counted",
                extra: r#""on_grpc": "pass_unmasked","#,
                direction: req,
                calls: &[Headers(GRPC, false), Chunk("\0\0\0\0\x05hello", false), Trailers(&[])],
                forwarded: "\0\0\0\0\x05hello",
                refused: None,
                skipped: Some(Reason::Grpc),
            },
            Case {
                name: "a body without a content type is sniffed: text is masked",
                extra: "",
                direction: req,
                calls: &[Headers(&[], false), Chunk(r#"{"password": "x"}"#, false), Trailers(&[])],
                forwarded: r#"{"password": "[REDACTED]"}"#,
                refused: None,
                skipped: None,
            },
            Case {
                name: "an octet-stream response that is text is masked",
                extra: "",
                direction: resp,
                calls: &[Headers(&[("content-type", "application/octet-stream")], false), Chunk("ann@example.com", true)],
                forwarded: "[REDACTED]",
                refused: None,
                skipped: None,
            },
            Case {
                name: "an unknown type too large to sniff follows on_unsupported_content_type",
                extra: r#""on_unsupported_content_type": "pass","#,
                direction: resp,
                calls: &[
                    Headers(&[], false),
                    Chunk("0123456789012345678901234567890123456789", false),
                    Chunk("0123456789012345678901234567890123456789", false),
                    Chunk("ann@example.com", true),
                ],
                forwarded: "01234567890123456789012345678901234567890123456789012345678901234567890123456789ann@example.com",
                refused: None,
                skipped: Some(Reason::UnsupportedContentType),
            },
            Case {
                name: "an unknown type too large to sniff is refused under reject",
                extra: r#""on_unsupported_content_type": "reject","#,
                direction: req,
                calls: &[
                    Headers(&[("content-length", "80")], false),
                    Chunk("0123456789012345678901234567890123456789", false),
                ],
                forwarded: "",
                refused: Some((Reason::UnsupportedContentType, Answer::Status(413))),
                skipped: None,
            },
            Case {
                name: "a message whose headers end the stream is never held",
                extra: "",
                direction: req,
                calls: &[Headers(JSON, true)],
                forwarded: "",
                refused: None,
                skipped: None,
            },
        ];
        for case in cases {
            let p = policy(case.extra);
            let seen = run(&p, case.direction, case.calls);
            assert_eq!(seen.forwarded, case.forwarded, "{}", case.name);
            assert_eq!(seen.refused, case.refused, "{}", case.name);
            assert_eq!(seen.skipped, case.skipped, "{}", case.name);
            assert_eq!(seen.held, 0, "{}: data left held", case.name);
        }
    }

    #[test]
    fn trailer_values_get_the_header_rules() {
        let seen = run(
            &policy(""),
            Direction::Response,
            &[Headers(JSON, false), Chunk("{}", false), Trailers(AUTH)],
        );
        assert!(
            seen.edits.contains(&"authorization=[REDACTED]".to_owned()),
            "{:?}",
            seen.edits
        );
        assert_eq!(seen.hits, 1);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_or_scanned_by_setting() {
        let p = policy("");
        let selection = p.select(
            Direction::Request,
            None,
            &RequestInfo {
                path: "/",
                method: "POST",
                host: "svc",
            },
        );
        let body = b"mail ann@example.com \xff end".to_vec();
        // Binary without a masked content type: refused (the default),
        // counted and passed under `pass`.
        let (mut gate, _) =
            Gate::headers(&p, Direction::Request, selection.clone(), &[], false, false);
        let (verdict, _) = gate.body(&p, body.len(), true, || body.clone());
        assert_eq!(
            verdict,
            Verdict::Refuse {
                reason: Reason::UnsupportedContentType,
                answer: Answer::Status(415)
            }
        );
        let passing = policy(r#""on_unsupported_content_type": "pass","#);
        let (mut gate, _) = Gate::headers(
            &passing,
            Direction::Request,
            selection.clone(),
            &[],
            false,
            false,
        );
        let (verdict, report) = gate.body(&passing, body.len(), true, || body.clone());
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(
            report.skipped.map(|s| s.reason),
            Some(Reason::UnsupportedContentType)
        );
        let (mut gate, _) = Gate::headers(
            &p,
            Direction::Request,
            selection.clone(),
            &pairs(TEXT),
            false,
            false,
        );
        let (verdict, report) = gate.body(&p, body.len(), true, || body.clone());
        assert_eq!(
            verdict,
            Verdict::Refuse {
                reason: Reason::NotUtf8,
                answer: Answer::Status(400)
            }
        );
        assert_eq!(report.refused, Some(Reason::NotUtf8));

        let p = policy(r#""on_not_utf8": "mask_bytes","#);
        let (mut gate, _) = Gate::headers(
            &p,
            Direction::Request,
            selection,
            &pairs(TEXT),
            false,
            false,
        );
        let (verdict, _) = gate.body(&p, body.len(), true, || body.clone());
        assert_eq!(
            verdict,
            Verdict::Replace(b"mail [REDACTED] \xff end".to_vec())
        );
    }

    #[test]
    fn the_text_fallback_is_reported() {
        let seen = run(
            &policy(r#""on_malformed_json": "mask_as_text","#),
            Direction::Request,
            &[Headers(JSON, false), Chunk("{ann@example.com", true)],
        );
        assert_eq!(seen.forwarded, "{[REDACTED]");
        assert_eq!(seen.fallback, Some(Reason::MalformedJson));
    }

    #[test]
    fn dry_run_changes_nothing_and_reports_what_it_would_refuse() {
        let p = policy(r#""mode": "dry-run","#);
        let seen = run(
            &p,
            Direction::Response,
            &[
                Headers(JSON, false),
                Chunk(r#"{"password":"#, false),
                Trailers(AUTH),
            ],
        );
        assert_eq!(seen.forwarded, r#"{"password":"#);
        assert_eq!(seen.refused, None);
        assert_eq!(seen.skipped, Some(Reason::MalformedJson));
        assert!(seen.edits.is_empty());
    }

    #[test]
    fn the_query_string_is_masked_in_the_path_only() {
        let seen = run(
            &policy(""),
            Direction::Request,
            &[Headers(
                &[(
                    ":path",
                    "/a/ann@example.com?user[password]=x&q=ann@example.com&ok=1",
                )],
                true,
            )],
        );
        assert_eq!(
            seen.edits,
            ["/a/ann@example.com?user[password]=%5BREDACTED%5D&q=%5BREDACTED%5D&ok=1"]
                .map(|p| format!(":path={p}"))
        );
    }
}
