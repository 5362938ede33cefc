//! `meshguard mask`: masks one message (body and headers) with the masking
//! filter's own engine (`meshguard_core::masking`), taking the decisions the
//! Envoy adapter (`filters/masking/src/lib.rs`) takes: which rules apply, when
//! a body is forwarded unmasked and when the message is refused.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use meshguard_core::config::Mode;
use meshguard_core::integrity::IntegrityEnv;
use meshguard_core::masking::{
    body_kind, BodyKind, CompressedAction, Direction, HeaderEdit, MalformedJsonAction, MaskError,
    MaskingPolicy, OversizeAction, RuleHits, Selection, UnsupportedAction,
};
use meshguard_core::request::RequestInfo;
use meshguard_core::spiffe::{normalize_principal_text, SpiffeId};

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
Output: on standard output, the masked body (with --header: the headers as the filter
forwards them, `NAME: VALUE` lines, a blank line, then the body). On standard error,
`masked N values: RULE=COUNT, ...` (dry-run: `dry-run: would mask N values: ...`),
preceded by `forwarded unmasked: REASON (...)` when the body cannot be masked but is
let through; or only `refused: REASON (the filter would answer STATUS)` (or, for a
response refused once its headers have been forwarded, `(the filter would reset the
response stream ...)`). Reasons: oversize, compressed, unsupported_content_type,
malformed_json, too_deep, not_utf8. Statuses: 413 (oversize), 400 (malformed_json,
too_deep), 415 (compressed, unsupported_content_type) for a request; 502 for a response.

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
    /// Change nothing, as in dry-run mode: print the message as given and
    /// report what the policy would mask or refuse.
    #[arg(long)]
    dry_run_report: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.config == "-" {
        bail!("the policy cannot be read from standard input: `mask` reads the body there");
    }
    let headers = parse_headers(&args.headers)?;
    let file = PolicyFile::read(&args.config)?;
    // The filter's load without an integrity environment: the signature and
    // integrity sections are split off, not enforced (`meshguard validate` does).
    let policy = match file.load_masking(&IntegrityEnv::default(), process_var) {
        Ok((_, policy)) => policy,
        Err(error) => {
            eprintln!("{}", file.invalid(&error));
            return Ok(ExitCode::FAILURE);
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
        content_type: Some(&content_type),
        body: &body,
        dry_run: args.dry_run_report || policy.mode() == Mode::DryRun,
    };
    let outcome = simulate(&policy, message);

    if let BodyOutcome::Refused { reason, answer } = &outcome.body {
        eprintln!("refused: {reason} ({})", answer.describe(outcome.direction));
        return Ok(ExitCode::from(REFUSED_EXIT));
    }
    let mut out = std::io::stdout().lock();
    if !args.headers.is_empty() {
        for (name, value) in &outcome.headers {
            writeln!(out, "{name}: {value}")?;
        }
        out.write_all(b"\n")?;
    }
    match &outcome.body {
        BodyOutcome::Masked(Some(masked)) if !outcome.dry_run => out.write_all(masked)?,
        _ => out.write_all(&body)?,
    }
    out.flush()?;
    eprint!("{}", summary(&policy, &outcome));
    Ok(ExitCode::SUCCESS)
}

/// `NAME:VALUE` arguments as (name, value) pairs, the value without its
/// surrounding blanks. Values are never echoed in errors (they may be secrets).
fn parse_headers(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    args.iter()
        .enumerate()
        .map(|(i, arg)| {
            let Some((name, value)) = arg.split_once(':') else {
                bail!(
                    "--header expects NAME:VALUE (for example --header 'authorization: Bearer x'); \
                     --header number {} has no `:`",
                    i + 1
                );
            };
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                bail!(
                    "--header number {}: {name:?} is not a header name (pseudo-headers such as \
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
    content_type: Option<&'a str>,
    body: &'a [u8],
    /// Nothing is changed or refused: the policy's dry-run mode, or --dry-run-report.
    dry_run: bool,
}

/// How the filter would answer a refused message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A local reply with this status (for a response: replacing it, decided
    /// while its headers are held).
    Status(u16),
    /// The response's headers have already been forwarded: the stream is reset.
    Reset,
    /// A response body over the limit, the command line naming no
    /// `content-length`: 502 when the response announces its size, else a reset.
    StatusOrReset(u16),
}

impl Answer {
    fn describe(self, direction: Direction) -> String {
        match self {
            Self::Status(status) => format!("the filter would answer {status}"),
            Self::Reset => format!(
                "the filter would reset the {} stream: its headers have already been forwarded",
                direction.as_str()
            ),
            Self::StatusOrReset(status) => format!(
                "the filter would answer {status} when a content-length announces the size, \
                 and reset the {} stream otherwise",
                direction.as_str()
            ),
        }
    }
}

/// What becomes of the body.
#[derive(Debug)]
enum BodyOutcome {
    /// The filter does not look at the body: no body rule applies, or there is
    /// no body.
    Untouched,
    /// Masked; `None` when nothing changed.
    Masked(Option<Vec<u8>>),
    /// Forwarded unmasked (counted by the filter as skipped).
    Forwarded { reason: &'static str, why: String },
    /// Refused.
    Refused {
        reason: &'static str,
        answer: Answer,
    },
}

#[derive(Debug)]
struct Outcome {
    direction: Direction,
    /// Whether some rule applies to the message.
    selected: bool,
    dry_run: bool,
    /// The headers as the filter forwards them.
    headers: Vec<(String, String)>,
    body: BodyOutcome,
    /// Values masked (or, in dry-run, found), by rule index.
    hits: BTreeMap<usize, u32>,
}

impl Outcome {
    fn count(&mut self, hits: &[RuleHits]) {
        for h in hits {
            let count = self.hits.entry(h.rule).or_default();
            *count = count.saturating_add(h.count);
        }
    }
}

/// What the adapter does with one message: `on_http_request_headers` (or
/// `on_http_response_headers`), `start_body` and `on_body`, in that order.
fn simulate(policy: &MaskingPolicy, message: Message<'_>) -> Outcome {
    let Message {
        direction,
        caller,
        request,
        mut headers,
        content_type,
        body,
        dry_run,
    } = message;
    let selection = policy.select(direction, caller, &request);
    if direction == Direction::Request
        && !dry_run
        && policy
            .select(Direction::Response, caller, &request)
            .needs_body()
    {
        // A compressed response cannot be masked: the filter asks for identity.
        set_header(&mut headers, "accept-encoding", Some("identity"));
    }
    let mut outcome = Outcome {
        direction,
        selected: !selection.is_empty(),
        dry_run,
        headers: Vec::new(),
        body: BodyOutcome::Untouched,
        hits: BTreeMap::new(),
    };
    if selection.needs_headers() {
        let edits = policy.mask_headers(&selection, &headers);
        outcome.count(&edits.hits);
        if !dry_run {
            for edit in &edits.edits {
                match edit {
                    HeaderEdit::Replace { name, value } => {
                        set_header(&mut headers, name, Some(value));
                    }
                    HeaderEdit::Remove { name } => set_header(&mut headers, name, None),
                }
            }
        }
    }
    // An empty body ends the stream with the headers: the filter never sees it.
    if selection.needs_body() && !body.is_empty() {
        let adapter = Adapter {
            policy,
            direction,
            dry_run,
        };
        let (result, hits) = adapter.body(&selection, &mut headers, content_type, body);
        outcome.count(&hits);
        outcome.body = result;
    }
    outcome.headers = headers;
    outcome
}

/// The adapter's body decisions for one message.
struct Adapter<'p> {
    policy: &'p MaskingPolicy,
    direction: Direction,
    dry_run: bool,
}

impl Adapter<'_> {
    /// `start_body` then `on_body` with the whole body: the outcome, and the
    /// hits of the body's masking.
    fn body(
        &self,
        selection: &Selection,
        headers: &mut Vec<(String, String)>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (BodyOutcome, Vec<RuleHits>) {
        let policy = self.policy;
        // Decided from the headers, while the filter still holds them.
        let at_headers = |request_status| match self.direction {
            Direction::Request => Answer::Status(request_status),
            Direction::Response => Answer::Status(502),
        };
        let encoding = header(headers, "content-encoding")
            .filter(|e| !e.trim().eq_ignore_ascii_case("identity"));
        if encoding.is_some() {
            let reject = policy.on_compressed_request() == CompressedAction::Reject;
            let outcome = self.cannot_mask(
                "compressed",
                reject,
                at_headers(415),
                "on_compressed_request: pass_unmasked",
            );
            return (outcome, Vec::new());
        }
        let kind = body_kind(content_type);
        if kind == BodyKind::Other {
            let reject = policy.on_unsupported_content_type() == UnsupportedAction::Reject;
            let outcome = self.cannot_mask(
                "unsupported_content_type",
                reject,
                at_headers(415),
                "on_unsupported_content_type: pass",
            );
            return (outcome, Vec::new());
        }
        let oversize = |answer| {
            let reject = policy.on_oversize() == OversizeAction::Reject;
            let outcome =
                self.cannot_mask("oversize", reject, answer, "on_oversize: pass_unmasked");
            (outcome, Vec::new())
        };
        let declared =
            header(headers, "content-length").and_then(|l| l.trim().parse::<usize>().ok());
        if declared.is_some_and(|len| len > policy.max_body_bytes()) {
            return oversize(at_headers(413));
        }
        if !self.dry_run {
            // The body may change length: the filter lets Envoy re-frame it.
            set_header(headers, "content-length", None);
        }
        if body.len() > policy.max_body_bytes() {
            // Found while buffering: a response's headers have left by then.
            return oversize(match (self.direction, declared) {
                (Direction::Request, _) => Answer::Status(413),
                (Direction::Response, Some(_)) => Answer::Reset,
                (Direction::Response, None) => Answer::StatusOrReset(502),
            });
        }
        let masked = match policy.mask_body(selection, kind, body) {
            Err(MaskError::MalformedJson { .. } | MaskError::TooDeep { .. })
                if policy.on_malformed_json() == MalformedJsonAction::MaskAsText =>
            {
                policy.mask_body(selection, BodyKind::Text, body)
            }
            other => other,
        };
        match masked {
            Ok(masked) => (BodyOutcome::Masked(masked.body), masked.hits),
            Err(MaskError::NotUtf8) => (
                BodyOutcome::Forwarded {
                    reason: "not_utf8",
                    why: "a text body that is not UTF-8 is never masked".into(),
                },
                Vec::new(),
            ),
            Err(e) => {
                // Found once the whole body is buffered.
                let answer = match self.direction {
                    Direction::Request => Answer::Status(400),
                    Direction::Response => Answer::Reset,
                };
                (self.cannot_mask(e.as_code(), true, answer, ""), Vec::new())
            }
        }
    }

    /// A body that cannot be masked: refused under `reject` in enforce mode,
    /// forwarded unmasked otherwise (`setting` says why, when not `reject`).
    fn cannot_mask(
        &self,
        reason: &'static str,
        reject: bool,
        answer: Answer,
        setting: &str,
    ) -> BodyOutcome {
        if !reject {
            BodyOutcome::Forwarded {
                reason,
                why: setting.to_owned(),
            }
        } else if self.dry_run {
            BodyOutcome::Forwarded {
                reason,
                why: format!(
                    "dry-run: in enforce mode {}",
                    answer.describe(self.direction)
                ),
            }
        } else {
            BodyOutcome::Refused { reason, answer }
        }
    }
}

/// The standard error report: rule names and counts, never values.
fn summary(policy: &MaskingPolicy, outcome: &Outcome) -> String {
    let mut text = String::new();
    if let BodyOutcome::Forwarded { reason, why } = &outcome.body {
        text.push_str(&format!("forwarded unmasked: {reason} ({why})\n"));
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
