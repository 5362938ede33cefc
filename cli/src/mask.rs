//! `meshguard mask`: masks one message (headers, query string, body and
//! trailers) with the masking filter's own engine and its own per-message
//! state machine (`meshguard_core::masking::Gate`), driven through the same
//! callbacks as in Envoy: headers, the body, then the trailers. What it says
//! is forwarded, masked or refused is what the filter does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use meshguard_core::config::Mode;
use meshguard_core::integrity::IntegrityEnv;
use meshguard_core::masking::{
    wants_identity_response, Answer, Direction, Gate, HeaderEdit, MaskingPolicy, Reason, Report,
    RuleHits, Verdict,
};
use meshguard_core::request::RequestInfo;
use meshguard_core::spiffe::{normalize_principal_text, SpiffeId};

use crate::output::{print_json, refused, Output};
use crate::policy_file::{process_var, PolicyFile};

/// Exit status when the filter would refuse the message.
const REFUSED_EXIT: u8 = 3;

/// The body's content type when neither --content-type nor a `content-type`
/// --header names one.
const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// Mask a message body read from standard input, as the masking filter would.
///
/// The rules are selected as the filter selects them (direction, caller,
/// route), headers given with --header are masked, and the body is masked by
/// its kind (from the content type), JSON falling back to text under
/// `on_malformed_json: mask_as_text`. The masked body is printed on standard
/// output (the original bytes when nothing changed), preceded by the headers
/// as the filter forwards them when --header is given. A summary (rule names
/// and counts, never values) goes to standard error.
///
/// A message the filter would refuse (body over `max_body_bytes`, malformed or
/// too deep JSON, compressed body or unsupported content type under `reject`)
/// prints nothing on standard output and `refused: REASON (...)` on standard
/// error. In dry-run mode (the policy's, or --dry-run-report) the message is
/// printed unchanged and the summary says what would be masked or refused.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Output: on standard output, the masked body (with --header, or when the query string
was masked: `:path: NEW` first, then the headers as the filter forwards them, `NAME:
VALUE` lines, a blank line, then the body; with --trailer: a blank line and the
trailers after the body). On standard error, `masked N values: RULE=COUNT, ...`
(dry-run: `dry-run: would mask N values: ...`), preceded by `forwarded unmasked: REASON
(...)` when the body cannot be masked but is let through; or only `refused: REASON
(the filter would answer STATUS)` (or, for a response refused once its headers have
been forwarded, `(the filter would reset the response stream ...)`). Reasons:
oversize, compressed, unsupported_content_type, grpc, malformed_json, too_deep,
not_utf8. Statuses: 413 (oversize), 400 (malformed_json, too_deep, not_utf8), 415
(compressed, grpc, unsupported_content_type) for a request; 502 for a response.

Exit status: 0 when the message is masked or forwarded (dry-run included); 3 when the
filter would refuse it (nothing is printed on standard output); 1 on errors (invalid
policy, bad arguments, unreadable file).

The policy's `signature` and `integrity` sections are accepted but not checked here
(`meshguard validate --filter masking` checks them). The `hash` key is read from the
environment variable named by `hash_key_env` (default MESHGUARD_MASK_HASH_KEY).

Examples:
  echo '{\"user\":{\"ssn\":\"123-45-6789\"}}' | meshguard mask pii.json --path /users/42
  meshguard mask pii.json --response --path /v1/orders < response.json
  MESHGUARD_MASK_HASH_KEY=$(cat hash.key) meshguard mask pii.json --path /api/login \\
      --header 'authorization: Bearer abc' < login.json
  meshguard mask pii.json --content-type text/plain --dry-run-report < ticket.txt")]
pub struct Args {
    /// Masking policy (the plugin JSON). The body is read from standard
    /// input, so the policy must be a file.
    config: String,
    /// Mask a response (selected by the request's --path, --method, --host and
    /// --peer, as the filter selects responses) instead of a request.
    #[arg(long)]
    response: bool,
    /// The body's content type [default: the `content-type` --header, else
    /// application/json].
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// The caller's SPIFFE ID, as its client certificate's URI SAN
    /// (`spiffe://TD/ns/NS/sa/SA` or Istio's `TD/ns/NS/sa/SA`). Without it the
    /// caller has no identity, and no `except_principals` exempts it.
    #[arg(long, value_name = "ID")]
    peer: Option<String>,
    /// The request's `:path`.
    #[arg(long, value_name = "P", default_value = "/")]
    path: String,
    /// The request's `:method`.
    #[arg(long, value_name = "M", default_value = "POST")]
    method: String,
    /// The request's `:authority`.
    #[arg(long, value_name = "H", default_value = "localhost")]
    host: String,
    /// A header of the message being masked (the request's, or with
    /// --response the response's), `NAME:VALUE`; repeat it for several. A
    /// `content-encoding` other than identity makes the body compressed, a
    /// `content-length` is the size announced before the body.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// A trailer of the message, `NAME:VALUE` (repeatable): the body then
    /// ends with trailers, as in HTTP/2, gRPC or chunked HTTP/1.1, and they
    /// are printed after the body.
    #[arg(long = "trailer", value_name = "NAME:VALUE")]
    trailers: Vec<String>,
    /// Change nothing, as in dry-run mode: print the message as given and
    /// report what the policy would mask or refuse.
    #[arg(long)]
    dry_run_report: bool,
}

pub fn run(args: &Args, output: Output) -> anyhow::Result<ExitCode> {
    if args.config == "-" {
        bail!("the policy cannot be read from standard input: `mask` reads the body there");
    }
    let headers = parse_headers(&args.headers, "--header")?;
    let trailers = parse_headers(&args.trailers, "--trailer")?;
    let file = PolicyFile::read(&args.config)?;
    // The filter's load without an integrity environment: the signature and
    // integrity sections are split off, not enforced (`meshguard validate` does).
    let policy = match file.load_masking(&IntegrityEnv::default(), process_var) {
        Ok((_, policy)) => policy,
        Err(error) => {
            return refused(output, &file, &error);
        }
    };
    let peer = args.peer.as_deref().map(normalize_principal_text);
    let caller = match peer.as_deref().map(SpiffeId::parse_uri) {
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            eprintln!(
                "note: --peer is not a valid SPIFFE ID (it {e}): the filter sees a caller without identity"
            );
            None
        }
        None => None,
    };
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("cannot read the body from standard input")?;

    let content_type = args
        .content_type
        .clone()
        .or_else(|| header(&headers, "content-type").map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
    let message = Message {
        direction: if args.response {
            Direction::Response
        } else {
            Direction::Request
        },
        caller: caller.as_ref(),
        request: RequestInfo {
            path: &args.path,
            method: &args.method,
            host: &args.host,
        },
        headers,
        content_type: &content_type,
        body: &body,
        trailers,
        dry_run: args.dry_run_report || policy.mode() == Mode::DryRun,
    };
    let outcome = simulate(&policy, message);

    if output.is_json() {
        print_json(&outcome_json(&outcome, &body))?;
    }
    if let BodyOutcome::Refused { reason, answer } = &outcome.body {
        eprintln!(
            "refused: {} ({})",
            reason.as_str(),
            describe(*answer, outcome.direction)
        );
        return Ok(ExitCode::from(REFUSED_EXIT));
    }
    if output.is_json() {
        eprint!("{}", summary(&policy, &outcome));
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if !args.headers.is_empty() || outcome.path.is_some() {
        if let Some(path) = &outcome.path {
            writeln!(out, ":path: {path}")?;
        }
        for (name, value) in &outcome.headers {
            writeln!(out, "{name}: {value}")?;
        }
        out.write_all(b"\n")?;
    }
    match &outcome.body {
        BodyOutcome::Masked(Some(masked)) if !outcome.dry_run => out.write_all(masked)?,
        _ => out.write_all(&body)?,
    }
    if !args.trailers.is_empty() {
        out.write_all(b"\n\n")?;
        for (name, value) in &outcome.trailers {
            writeln!(out, "{name}: {value}")?;
        }
    }
    out.flush()?;
    eprint!("{}", summary(&policy, &outcome));
    Ok(ExitCode::SUCCESS)
}

/// `--output json`: what the filter would forward (or that it refuses), the
/// body as text (lossy for bytes that are not UTF-8).
fn outcome_json(outcome: &Outcome, original: &[u8]) -> serde_json::Value {
    let (verdict, reason, body) = match &outcome.body {
        BodyOutcome::Refused { reason, .. } => ("refused", Some(reason.as_str()), None),
        BodyOutcome::Masked(Some(masked)) if !outcome.dry_run => {
            ("masked", None, Some(&masked[..]))
        }
        _ => ("unchanged", None, Some(original)),
    };
    serde_json::json!({
        "verdict": verdict,
        "reason": reason,
        "dry_run": outcome.dry_run,
        "path": outcome.path,
        "headers": outcome.headers,
        "body": body.map(String::from_utf8_lossy),
        "trailers": outcome.trailers,
    })
}

/// `NAME:VALUE` arguments as (name, value) pairs, the value without its
/// surrounding blanks. Values are never echoed in errors (they may be secrets).
fn parse_headers(args: &[String], flag: &str) -> anyhow::Result<Vec<(String, String)>> {
    args.iter()
        .enumerate()
        .map(|(i, arg)| {
            let Some((name, value)) = arg.split_once(':') else {
                bail!(
                    "{flag} expects NAME:VALUE (for example {flag} 'authorization: Bearer x'); \
                     {flag} number {} has no `:`",
                    i + 1
                );
            };
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                bail!(
                    "{flag} number {}: {name:?} is not a header name (pseudo-headers such as \
                     `:path` are given with --path, --method and --host)",
                    i + 1
                );
            }
            Ok((name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// The first value of header `name` (case-insensitive), as the host returns it.
fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Sets `name` to a single `value` (at the place of its first occurrence), or
/// removes every value of it, as the host's header replacement does.
fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    let mut done = false;
    headers.retain_mut(|(n, v)| {
        if !n.eq_ignore_ascii_case(name) {
            return true;
        }
        match value {
            Some(value) if !done => {
                done = true;
                value.clone_into(v);
                true
            }
            _ => false,
        }
    });
    if let (Some(value), false) = (value, done) {
        headers.push((name.to_owned(), value.to_owned()));
    }
}

/// One message, as the filter would see it.
struct Message<'a> {
    direction: Direction,
    caller: Option<&'a SpiffeId>,
    request: RequestInfo<'a>,
    headers: Vec<(String, String)>,
    content_type: &'a str,
    body: &'a [u8],
    trailers: Vec<(String, String)>,
    /// Nothing is changed or refused: the policy's dry-run mode, or --dry-run-report.
    dry_run: bool,
}

/// How the filter answers a refusal, in words.
fn describe(answer: Answer, direction: Direction) -> String {
    match answer {
        Answer::Status(status) => format!("the filter would answer {status}"),
        Answer::Reset => format!(
            "the filter would reset the {} stream: its headers have already been forwarded",
            direction.as_str()
        ),
    }
}

/// What becomes of the body.
#[derive(Debug)]
enum BodyOutcome {
    /// Masked; `None` when nothing changed (or the filter does not look at it).
    Masked(Option<Vec<u8>>),
    /// Forwarded unmasked (counted by the filter as skipped).
    Forwarded { reason: Reason, why: String },
    /// Refused.
    Refused { reason: Reason, answer: Answer },
}

#[derive(Debug)]
struct Outcome {
    direction: Direction,
    /// Whether some rule applies to the message.
    selected: bool,
    dry_run: bool,
    /// The new `:path` when the query string was masked.
    path: Option<String>,
    /// The headers as the filter forwards them.
    headers: Vec<(String, String)>,
    trailers: Vec<(String, String)>,
    body: BodyOutcome,
    /// Values masked (or, in dry-run, found), by rule index.
    hits: BTreeMap<usize, u32>,
    /// `on_malformed_json: mask_as_text` masked the JSON body as text.
    text_fallback: Option<Reason>,
}

impl Outcome {
    fn count(&mut self, hits: &[RuleHits]) {
        for h in hits {
            let count = self.hits.entry(h.rule).or_default();
            *count = count.saturating_add(h.count);
        }
    }

    /// Counts a report and records a skip; edits go to `headers` or `trailers`.
    fn report(&mut self, report: &Report) {
        self.count(&report.hits);
        if let Some(skip) = &report.skipped {
            let why = match (skip.setting, skip.would_refuse) {
                (Some(setting), _) => setting.to_owned(),
                (None, Some(answer)) => {
                    format!(
                        "dry-run: in enforce mode {}",
                        describe(answer, self.direction)
                    )
                }
                (None, None) => String::new(),
            };
            self.body = BodyOutcome::Forwarded {
                reason: skip.reason,
                why,
            };
        }
        self.text_fallback = self.text_fallback.or(report.text_fallback);
    }

    /// The body verdict of the gate.
    fn verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Continue | Verdict::Hold | Verdict::HoldReplaced(_) => {}
            Verdict::Replace(body) => self.body = BodyOutcome::Masked(Some(body)),
            Verdict::Refuse { reason, answer } => {
                self.body = BodyOutcome::Refused { reason, answer };
            }
        }
    }
}

/// What the host does with the bytes it holds after a verdict.
fn release(held: &mut Vec<u8>, released: &mut Vec<u8>, verdict: &Verdict) {
    match verdict {
        Verdict::Continue => released.append(held),
        Verdict::Replace(bytes) => {
            released.extend_from_slice(bytes);
            held.clear();
        }
        Verdict::HoldReplaced(bytes) => *held = bytes.clone(),
        Verdict::Hold | Verdict::Refuse { .. } => {}
    }
}

fn apply(headers: &mut Vec<(String, String)>, path: &mut Option<String>, edits: &[HeaderEdit]) {
    for edit in edits {
        match edit {
            HeaderEdit::Replace { name, value } if name == ":path" => *path = Some(value.clone()),
            HeaderEdit::Replace { name, value } => set_header(headers, name, Some(value)),
            HeaderEdit::Remove { name } => set_header(headers, name, None),
            HeaderEdit::Values { name, values } => {
                set_header(headers, name, None);
                headers.extend(values.iter().map(|v| (name.clone(), v.clone())));
            }
        }
    }
}

/// The filter's callbacks for one message, through the same [`Gate`]:
/// headers, the whole body as one chunk, then the trailers if any.
fn simulate(policy: &MaskingPolicy, message: Message<'_>) -> Outcome {
    let Message {
        direction,
        caller,
        request,
        mut headers,
        content_type,
        body,
        mut trailers,
        dry_run,
    } = message;
    let selection = policy.select(direction, caller, &request);
    if direction == Direction::Request
        && !dry_run
        && wants_identity_response(
            policy,
            &policy.select(Direction::Response, caller, &request),
        )
    {
        // A compressed response cannot be masked: the filter asks for identity.
        set_header(&mut headers, "accept-encoding", Some("identity"));
    }
    let mut outcome = Outcome {
        direction,
        selected: !selection.is_empty(),
        dry_run: dry_run || policy.mode() == Mode::DryRun,
        path: None,
        headers: Vec::new(),
        trailers: Vec::new(),
        body: BodyOutcome::Masked(None),
        hits: BTreeMap::new(),
        text_fallback: None,
    };
    // What the host shows the filter: pseudo-headers and the content type.
    let mut seen = headers.clone();
    if direction == Direction::Request {
        seen.push((":path".into(), request.path.to_owned()));
    }
    if header(&seen, "content-type").is_none() {
        seen.push(("content-type".into(), content_type.to_owned()));
    }
    // An empty body without trailers ends the stream with the headers.
    let end_of_stream = body.is_empty() && trailers.is_empty();
    let (mut gate, step) =
        Gate::headers(policy, direction, selection, &seen, end_of_stream, dry_run);
    outcome.report(&step.report);
    apply(&mut headers, &mut outcome.path, &step.edits);
    outcome.verdict(step.verdict);
    if !end_of_stream && !matches!(outcome.body, BodyOutcome::Refused { .. }) {
        // What the host holds and what it released: a streamed body leaves
        // record by record, the rest at the trailers.
        let mut held = body.to_vec();
        let mut released: Vec<u8> = Vec::new();
        let (verdict, report) = gate.body(policy, held.len(), trailers.is_empty(), || held.clone());
        outcome.report(&report);
        release(&mut held, &mut released, &verdict);
        outcome.verdict(verdict);
        if !trailers.is_empty() && !matches!(outcome.body, BodyOutcome::Refused { .. }) {
            let step = gate.trailers(policy, &trailers, || held.clone());
            outcome.report(&step.report);
            let mut no_path = None;
            apply(&mut trailers, &mut no_path, &step.edits);
            release(&mut held, &mut released, &step.verdict);
            outcome.verdict(step.verdict);
        }
        if !matches!(outcome.body, BodyOutcome::Refused { .. }) && released != body {
            outcome.body = BodyOutcome::Masked(Some(released));
        }
    }
    outcome.headers = headers;
    outcome.trailers = trailers;
    outcome
}

/// The standard error report: rule names and counts, never values.
fn summary(policy: &MaskingPolicy, outcome: &Outcome) -> String {
    let mut text = String::new();
    if let BodyOutcome::Forwarded { reason, why } = &outcome.body {
        text.push_str(&format!(
            "forwarded unmasked: {} ({why})\n",
            reason.as_str()
        ));
    }
    match outcome.text_fallback {
        Some(Reason::NotUtf8) => {
            text.push_str("scanned as bytes: not_utf8 (on_not_utf8: mask_bytes)\n");
        }
        Some(reason) => text.push_str(&format!(
            "masked as text: {} (on_malformed_json: mask_as_text)\n",
            reason.as_str()
        )),
        None => {}
    }
    let total: u64 = outcome.hits.values().map(|&c| u64::from(c)).sum();
    text.push_str(&format!(
        "{} {total} {}",
        if outcome.dry_run {
            "dry-run: would mask"
        } else {
            "masked"
        },
        if total == 1 { "value" } else { "values" }
    ));
    if !outcome.selected {
        text.push_str(&format!(
            " (no rule applies to this {})",
            outcome.direction.as_str()
        ));
    }
    let rules: Vec<String> = outcome
        .hits
        .iter()
        .map(|(&rule, count)| format!("{}={count}", policy.rule_name(rule).unwrap_or("?")))
        .collect();
    if !rules.is_empty() {
        text.push_str(": ");
        text.push_str(&rules.join(", "));
    }
    text.push('\n');
    text
}
