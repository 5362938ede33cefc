//! `meshguard audit`: checks audit records and signed audit headers offline,
//! with the audit filter's own engine (`meshguard_core::audit`).

use std::borrow::Cow;
use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use meshguard_core::audit::config::{DEFAULT_KEY_ENV, DEFAULT_KEY_ID};
use meshguard_core::audit::policy::is_valid_key_id;
use meshguard_core::audit::{
    decode_key, parse_public_key, verify_header_with_keys, verify_records_in, AuditStamp,
    ChainReport, Keyring, Order, VerifyReport, RECORD_PREFIX,
};
use meshguard_core::canonical::hex;
use meshguard_core::integrity::IntegrityEnv;
use meshguard_core::request::RequestInfo;
use serde_json::{json, Value};

use crate::output::Output;
use crate::policy_file::PolicyFile;

/// Exit status when a chain is broken, no record is found, a header is
/// invalid or its command hash differs from the request's.
const FAIL_EXIT: u8 = 2;

/// Verify audit records and signed audit headers (docs/audit.md).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when everything verifies; 2 when a chain is broken, no record \
                  is found, a header does not verify or its command hash differs; \
                  1 on errors (bad arguments, unreadable file, invalid key or config)."
)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    Verify(VerifyArgs),
    VerifyHeader(HeaderArgs),
    VerifyRequest(RequestArgs),
}

pub fn run(args: &Args, output: Output) -> anyhow::Result<ExitCode> {
    match &args.command {
        AuditCommand::Verify(args) => verify(args, output.is_json()),
        AuditCommand::VerifyHeader(args) => verify_header(args, output.is_json()),
        AuditCommand::VerifyRequest(args) => verify_request(args, output.is_json()),
    }
}

/// The keys to verify with, by key id (several across a rotation): HMAC
/// secrets and Ed25519 public keys.
#[derive(Debug, clap::Args)]
struct KeyArgs {
    /// An HMAC key: its key id (the `kid` of headers and records), `=`, and the
    /// key in base64, as in the filter's environment variable. Repeat it for the
    /// keys of a rotation. A key on the command line is visible to other local
    /// users (`ps`); prefer --key-env.
    #[arg(long = "key", value_name = "KID=BASE64")]
    keys: Vec<String>,
    /// An Ed25519 public key: its key id, `=`, and a file holding it (the
    /// `KID.pub.pem` of `meshguard keygen --for audit`, any SPKI PEM, or the
    /// key in base64). Repeat it for the keys of a rotation.
    #[arg(long = "public-key", value_name = "KID=FILE")]
    public_keys: Vec<String>,
    /// Also read an HMAC key from this environment variable (base64, as the
    /// filter reads it) [default: MESHGUARD_AUDIT_KEY, used when set]. Named
    /// explicitly, the variable must be set.
    #[arg(long, value_name = "VAR")]
    key_env: Option<String>,
    /// The key id of the --key-env key.
    #[arg(long, value_name = "KID", default_value = DEFAULT_KEY_ID)]
    key_env_kid: String,
}

impl KeyArgs {
    /// Decodes every key; any problem is an error (exit 1). The key itself is
    /// never printed.
    fn load(&self) -> anyhow::Result<Keyring> {
        let mut keys = Keyring::new();
        let check_kid = |kid: &str, source: &str| -> anyhow::Result<()> {
            if !is_valid_key_id(kid) {
                bail!("{source}: {kid:?} is not a key id (letters, digits, `.`, `_`, `-`; 1 to 64 bytes)");
            }
            Ok(())
        };
        for entry in &self.keys {
            let Some((kid, text)) = entry.split_once('=') else {
                bail!("--key expects KID=BASE64 (for example --key 2024-06=$(cat audit.key)), not a bare key");
            };
            let source = format!("--key {kid}");
            check_kid(kid, &source)?;
            let key = decode_key(text).with_context(|| source.clone())?;
            keys.add_secret(kid, key).with_context(|| source.clone())?;
        }
        for entry in &self.public_keys {
            let Some((kid, path)) = entry.split_once('=') else {
                bail!("--public-key expects KID=FILE (for example --public-key 2024-06=keys/2024-06.pub.pem)");
            };
            let source = format!("--public-key {kid}");
            check_kid(kid, &source)?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{source}: cannot read {path}"))?;
            let key = parse_public_key(&text).with_context(|| format!("{source}: {path}"))?;
            keys.add_public(kid, key).with_context(|| source.clone())?;
        }
        let var = self.key_env.as_deref().unwrap_or(DEFAULT_KEY_ENV);
        match std::env::var(var) {
            Ok(text) => {
                let source = format!("environment variable {var}");
                check_kid(&self.key_env_kid, &source)?;
                let key = decode_key(&text).with_context(|| source.clone())?;
                keys.add_secret(&self.key_env_kid, key)
                    .with_context(|| source.clone())?;
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("environment variable {var}: the key is not valid UTF-8 text")
            }
            Err(std::env::VarError::NotPresent) if self.key_env.is_some() => {
                bail!("--key-env {var}: the environment variable is not set")
            }
            Err(std::env::VarError::NotPresent) => {}
        }
        if keys.is_empty() {
            bail!("no key: set {DEFAULT_KEY_ENV} (the key for key id {DEFAULT_KEY_ID:?}), or give --key KID=BASE64, --key-env VAR or --public-key KID=FILE");
        }
        Ok(keys)
    }
}

/// Verify the audit records of an Envoy log or a collector's files.
///
/// A line holding `meshguard-audit-record: ` followed by a JSON object with a
/// `chain` is a record (whatever precedes the marker, such as Envoy's log
/// prefix); a line that is a bare JSON record, as a collector stores them
/// (NDJSON), is one too. Other lines are ignored, including JSON lines without
/// `chain` or `mac` (JSON access logs); lines holding the marker without a
/// record after it are reported as foreign, without failing the check.
/// Records are grouped by chain and each chain is checked in file order (or
/// by seq with --by-seq): MAC, contiguous `seq`, `prev` links. Only the first
/// break of a chain is reported: nothing after it can be trusted.
///
/// Deleting the newest records of a chain (truncation) leaves a valid, shorter
/// chain: compare record counts with the collector's or the filter's metrics.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Output: one line per chain, `chain ID: N records ok (seq A..=B)` or \
                  `chain ID: BROKEN at line L (seq S): KIND: MESSAGE`, then one line per \
                  foreign line, then `verified: C chains, R records, B broken`.\n\n\
                  Exit status: 0 when every chain verifies; 2 when a chain is broken or no \
                  record is found (unless --allow-empty); 1 on errors (bad arguments, unreadable file, \
                  invalid key).\n\n\
                  Examples:\n  \
                  MESHGUARD_AUDIT_KEY=$(cat audit.key) meshguard audit verify envoy.log\n  \
                  kubectl logs deploy/orders -c istio-proxy | meshguard audit verify - \
                  --key-env AUDIT_KEY --key-env-kid 2024-06\n  \
                  meshguard audit verify records.ndjson --key 2024-05=\"$OLD\" --key 2024-06=\"$NEW\""
)]
struct VerifyArgs {
    /// Envoy log or collector NDJSON file; `-` reads standard input.
    file: String,
    #[command(flatten)]
    keys: KeyArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Check each chain in seq order rather than file order: for a collector's
    /// files, where concurrent deliveries may land out of order. Gaps,
    /// duplicates, edits and broken links are still found.
    #[arg(long)]
    by_seq: bool,
    /// Exit 0 on an input without any record (a quiet period, an empty
    /// rotation); by default zero records is a failure, since nothing verifies.
    #[arg(long)]
    allow_empty: bool,
}

fn verify(args: &VerifyArgs, json: bool) -> anyhow::Result<ExitCode> {
    let keys = args.keys.load()?;
    let input = PolicyFile::read(&args.file)?;
    let text = String::from_utf8_lossy(&input.bytes);
    let order = if args.by_seq { Order::Seq } else { Order::File };
    let report = verify_records_in(&text, &keys, order);
    let summary = Summary::of(&report);

    let mut out = std::io::stdout().lock();
    if args.json || json {
        writeln!(out, "{}", report_json(&report, &summary))?;
    } else {
        write!(out, "{}", report_text(&report, &summary))?;
    }
    out.flush()?;
    if summary.records == 0 {
        eprintln!(
            "{}: no audit record found (lines holding {RECORD_PREFIX:?} or bare JSON records): nothing verifies",
            input.name
        );
        if args.allow_empty {
            return Ok(ExitCode::SUCCESS);
        }
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAIL_EXIT)
    })
}

/// The counts of the summary line.
struct Summary {
    chains: usize,
    records: usize,
    broken: usize,
    foreign: usize,
    unreadable: usize,
}

impl Summary {
    fn of(report: &VerifyReport) -> Self {
        Self {
            chains: report.chains.len(),
            records: report.record_count(),
            broken: report.chains.iter().filter(|c| !c.is_ok()).count(),
            foreign: report.foreign.len(),
            unreadable: report.unreadable.len(),
        }
    }
}

/// A value read from the input, printed as is when it is plain visible ASCII,
/// quoted otherwise (so a crafted chain id cannot write to the terminal).
fn shown(text: &str) -> Cow<'_, str> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic()) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("{text:?}"))
    }
}

fn chain_text(c: &ChainReport) -> String {
    let id = shown(&c.chain);
    match &c.first_break {
        None => {
            let range = match (c.first_seq, c.last_seq) {
                (Some(0), Some(last)) => format!(" (seq 0..={last})"),
                (Some(first), Some(last)) => format!(
                    " (seq {first}..={last}; the chain's beginning, seq 0 to {}, is not in the input)",
                    first - 1
                ),
                _ => String::new(),
            };
            format!("chain {id}: {} records ok{range}", c.records)
        }
        Some(b) => {
            let seq = b.seq.map(|s| format!(" (seq {s})")).unwrap_or_default();
            format!(
                "chain {id}: BROKEN at line {}{seq}: {}: {}",
                b.line,
                b.kind.as_str(),
                b.message
            )
        }
    }
}

fn report_text(report: &VerifyReport, summary: &Summary) -> String {
    let mut text = String::new();
    for c in &report.chains {
        text.push_str(&chain_text(c));
        text.push('\n');
    }
    for p in &report.unreadable {
        text.push_str(&format!("line {}: unreadable: {}\n", p.line, p.message));
    }
    for p in &report.foreign {
        text.push_str(&format!("line {}: foreign: {}\n", p.line, p.message));
    }
    text.push_str(&format!(
        "verified: {} chains, {} records, {} broken",
        summary.chains, summary.records, summary.broken
    ));
    if summary.unreadable > 0 {
        text.push_str(&format!(", {} unreadable", summary.unreadable));
    }
    if summary.foreign > 0 {
        text.push_str(&format!(", {} foreign lines ignored", summary.foreign));
    }
    text.push('\n');
    text
}

fn report_json(report: &VerifyReport, summary: &Summary) -> Value {
    let chains: Vec<Value> = report
        .chains
        .iter()
        .map(|c| {
            json!({
                "chain": c.chain,
                "ok": c.is_ok(),
                "records": c.records,
                "verified": c.verified,
                "first_seq": c.first_seq,
                "last_seq": c.last_seq,
                "break": c.first_break.as_ref().map(|b| json!({
                    "line": b.line,
                    "seq": b.seq,
                    "kind": b.kind.as_str(),
                    "message": b.message,
                })),
            })
        })
        .collect();
    let unreadable: Vec<Value> = report
        .unreadable
        .iter()
        .map(|p| json!({"line": p.line, "message": p.message}))
        .collect();
    let foreign: Vec<Value> = report
        .foreign
        .iter()
        .map(|p| json!({"line": p.line, "message": p.message}))
        .collect();
    json!({
        "ok": report.is_ok(),
        "chains": chains,
        "foreign": foreign,
        "unreadable": unreadable,
        "summary": {
            "chains": summary.chains,
            "records": summary.records,
            "broken": summary.broken,
            "foreign": summary.foreign,
            "unreadable": summary.unreadable,
        },
    })
}

/// Verify a signed `x-meshguard-audit` header, as an upstream service does.
///
/// The signature is checked with the key its `kid` names, then the fields are
/// printed. Given the audit filter's configuration and the request as the
/// upstream received it (--config, --method, --path, and --host and
/// --body-file when they matter), the command hash is recomputed exactly as the
/// filter computes it and compared with the header's `cmd`: a match means the
/// request being executed is the command that was audited.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Upstream verification recipe (what a service receiving audited requests does):
  1. take the `x-meshguard-audit` request header (the filter's `audit_header`);
  2. check its signature with the key named by its `kid`: a bad signature means the
     header was forged or altered after the proxy;
  3. recompute the command hash of the request you are about to execute, with the
     same configuration (method, path with its query, host, body), and compare it
     with `cmd`: a difference means the request is not the command that was audited;
  4. if replays matter, check that `ts` is recent and `id` not seen before.
This command does steps 2 and 3; docs/audit.md specifies them for re-implementation.

Output: `valid audit header` and the fields (kid, id, ts, peer, cfg, cmd); with --config,
the command the request is (`command: NAME`), `command hash: matches` or
`command hash: MISMATCH (header X, request Y)`, and whether `cfg` is the fingerprint
of --config (informational: a configuration change alone does not fail the check). An invalid header prints
`INVALID audit header: REASON`.

Exit status: 0 when the header verifies (and, with --config, the command hash matches);
2 when it does not verify or the command hash differs; 1 on errors (bad arguments,
unreadable file, invalid key or config).

Examples:
  MESHGUARD_AUDIT_KEY=$(cat audit.key) meshguard audit verify-header \"$HEADER\"
  meshguard audit verify-header \"$HEADER\" --key-env AUDIT_KEY --key-env-kid 2024-06 \\
      --config audit.json --method POST --path '/v1/orders/42?dry_run=true' \\
      --host shop.example.com --body-file body.json")]
struct HeaderArgs {
    /// The header's value (`v=1;kid=...;sig=...`), optionally preceded by the
    /// header name and `:`; `-` reads standard input.
    value: String,
    #[command(flatten)]
    keys: KeyArgs,
    /// The audit filter's plugin JSON (its `signature` and `integrity` sections
    /// are accepted but not checked): recompute the request's command hash.
    #[arg(long, value_name = "CONFIG", requires_all = ["method", "path"])]
    config: Option<String>,
    /// The request's `:method`.
    #[arg(long, value_name = "M", requires = "config")]
    method: Option<String>,
    /// The request's `:path`, query included (the hash covers the query).
    #[arg(long, value_name = "P", requires = "config")]
    path: Option<String>,
    /// The request's `:authority` (only chooses the command, when commands
    /// select by host) [default: empty].
    #[arg(long, value_name = "H", requires = "config")]
    host: Option<String>,
    /// File holding the request body, byte for byte; `-` reads standard input
    /// [default: empty body].
    #[arg(long, value_name = "F", requires = "config")]
    body_file: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What the command hash check found.
enum CommandCheck {
    Matches { command: String },
    Mismatch { command: String, request: String },
    Unhashable { command: String, error: String },
}

fn verify_header(args: &HeaderArgs, json: bool) -> anyhow::Result<ExitCode> {
    if args.value == "-" && args.body_file.as_deref() == Some("-") {
        bail!("the header value and --body-file cannot both be read from standard input");
    }
    let keys = args.keys.load()?;
    let value = if args.value == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        text
    } else {
        args.value.clone()
    };
    let value = header_value(&value);
    // The request and the configuration are read before the verdict, so a
    // usage error is never reported as a valid header.
    let request = match &args.config {
        Some(config) => Some(load_request(args, config)?),
        None => None,
    };

    let mut out = std::io::stdout().lock();
    let stamp = match verify_header_with_keys(value, &keys) {
        Ok(stamp) => stamp,
        Err(error) => {
            if args.json || json {
                let v = json!({"valid": false, "error": error.to_string()});
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "INVALID audit header: {error}")?;
            }
            out.flush()?;
            return Ok(ExitCode::from(FAIL_EXIT));
        }
    };
    let cmd = hex(&stamp.command_sha256);
    let check = request.as_ref().map(|r| r.check(&cmd));
    // Compared only when the header names a configuration.
    let cfg = request
        .as_ref()
        .filter(|_| stamp.config_fingerprint.is_some())
        .map(|r| {
            (
                stamp.config_fingerprint.as_deref() == Some(r.fingerprint.as_str()),
                r.fingerprint.as_str(),
            )
        });
    if args.json || json {
        writeln!(out, "{}", header_json(&stamp, &cmd, check.as_ref(), cfg))?;
    } else {
        write!(out, "{}", header_text(&stamp, &cmd, check.as_ref(), cfg))?;
    }
    out.flush()?;
    Ok(match check {
        None | Some(CommandCheck::Matches { .. }) => ExitCode::SUCCESS,
        Some(_) => ExitCode::from(FAIL_EXIT),
    })
}

/// Verify the RFC 9421 signature meshguard added to a request, as an upstream
/// service does: the member under the label, its tag, the covered components
/// (the profile of docs/audit.md), the times, the key its keyid names, and
/// the content-digest against the body.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
REQUEST is a JSON file describing the request as the upstream received it:
  {\"method\": \"POST\", \"authority\": \"shop.example\", \"target\": \"/orders?dry_run=1\",
   \"headers\": [[\"signature-input\", \"meshguard=(...)...\"], [\"signature\", \"meshguard=:...:\"], ...],
   \"body_base64\": \"eyJhIjoxfQ==\"}
(`headers` lists every header line in order, repeats kept; `body_base64` may be left out
for an empty body.)

Output: `valid RFC 9421 signature` and what it covers (keyid, alg, created, expires,
id, cmd), or `INVALID RFC 9421 signature: REASON`.

Exit status: 0 when the signature verifies; 2 when it does not; 1 on errors (bad
arguments, unreadable file, invalid key).

Examples:
  meshguard audit verify-request request.json --public-key 2024-06=keys/2024-06.pub.pem
  meshguard audit verify-request request.json --key-env AUDIT_KEY --key-env-kid 2024-06")]
struct RequestArgs {
    /// The request, as JSON (see below); `-` reads standard input.
    request: String,
    #[command(flatten)]
    keys: KeyArgs,
    /// The label of meshguard's member (the filter's `signature_label`).
    #[arg(long, default_value = meshguard_core::audit::httpsig::DEFAULT_LABEL)]
    label: String,
    /// The tag it must carry (the filter's `signature_tag`).
    #[arg(long, default_value = meshguard_core::audit::httpsig::DEFAULT_TAG)]
    tag: String,
    /// The command-hash header it must cover (the filter's `command_header`).
    #[arg(long, default_value = meshguard_core::audit::config::DEFAULT_COMMAND_HEADER)]
    command_header: String,
    /// The audit-id header it must cover (the filter's `id_header`).
    #[arg(long, default_value = meshguard_core::audit::config::DEFAULT_ID_HEADER)]
    id_header: String,
    /// Verify at this time (Unix seconds) instead of now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    now: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn verify_request(args: &RequestArgs, json: bool) -> anyhow::Result<ExitCode> {
    use meshguard_cli::httpsig_verify::{verify, Profile, ReceivedRequest};
    let keys = args.keys.load()?;
    let file = PolicyFile::read(&args.request)?;
    let request: ReceivedRequest = serde_json::from_slice(&file.bytes)
        .with_context(|| format!("{}: not a request description", file.name))?;
    let body = request.body()?;
    let now = match args.now {
        Some(now) => now,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    };
    let profile = Profile {
        label: args.label.clone(),
        tag: args.tag.clone(),
        command_header: args.command_header.clone(),
        id_header: args.id_header.clone(),
    };
    let verdict = verify(&request, &body, &keys, &profile, now);
    let mut out = std::io::stdout().lock();
    match &verdict {
        Ok(v) if args.json || json => writeln!(
            out,
            "{}",
            json!({"valid": true, "keyid": v.keyid, "alg": v.alg, "created": v.created,
                   "expires": v.expires, "components": v.components, "id": v.audit_id,
                   "cmd": v.command_sha256, "body_covered": v.body_covered})
        )?,
        Ok(v) => write!(
            out,
            "valid RFC 9421 signature\nkeyid: {}\nalg: {}\ncreated: {}\nexpires: {}\ncovers: {}\nid: {}\ncmd: {}\n",
            v.keyid,
            v.alg,
            v.created,
            v.expires.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            v.components.join(" "),
            shown(&v.audit_id),
            shown(&v.command_sha256),
        )?,
        Err(e) if args.json || json => {
            writeln!(out, "{}", json!({"valid": false, "error": e.to_string()}))?
        }
        Err(e) => writeln!(out, "INVALID RFC 9421 signature: {e}")?,
    }
    out.flush()?;
    Ok(if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAIL_EXIT)
    })
}

/// The header value without a trailing newline or a leading `name:` copied
/// along with it (`x-meshguard-audit: v=1;...`).
fn header_value(text: &str) -> &str {
    let text = text.trim_end_matches(['\r', '\n']);
    match text.split_once(':') {
        Some((name, rest))
            if !name.is_empty()
                && !name.contains(['=', ';'])
                && rest.trim_start().starts_with("v=") =>
        {
            rest.trim_start()
        }
        _ => text,
    }
}

/// The request as the upstream received it, and the configuration to hash it with.
struct RequestToCheck {
    policy: meshguard_core::audit::AuditPolicy,
    fingerprint: String,
    method: String,
    path: String,
    host: String,
    body: Vec<u8>,
}

impl RequestToCheck {
    fn check(&self, header_cmd: &str) -> CommandCheck {
        let request = RequestInfo {
            path: &self.path,
            method: &self.method,
            host: &self.host,
        };
        let command = self
            .policy
            .command_name(self.policy.command_for(&request))
            .to_owned();
        match self
            .policy
            .hash_request(&self.method, &self.path, &self.host, &self.body)
        {
            Ok(hash) if hex(&hash) == header_cmd => CommandCheck::Matches { command },
            Ok(hash) => CommandCheck::Mismatch {
                command,
                request: hex(&hash),
            },
            Err(e) => CommandCheck::Unhashable {
                command,
                error: e.to_string(),
            },
        }
    }
}

fn load_request(args: &HeaderArgs, config: &str) -> anyhow::Result<RequestToCheck> {
    let file = PolicyFile::read(config)?;
    // The filter's load without an integrity environment: the signature and
    // integrity sections are split off, not enforced (`meshguard validate` does).
    let (loaded, policy) = file
        .load_audit(&IntegrityEnv::default())
        .map_err(|e| anyhow::anyhow!("{}", file.invalid(&e)))?;
    let body = match &args.body_file {
        Some(path) => PolicyFile::read(path)?.bytes,
        None => Vec::new(),
    };
    Ok(RequestToCheck {
        policy,
        fingerprint: loaded.fingerprint,
        method: args.method.clone().unwrap_or_default(),
        path: args.path.clone().unwrap_or_default(),
        host: args.host.clone().unwrap_or_default(),
        body,
    })
}

fn header_text(
    stamp: &AuditStamp,
    cmd: &str,
    check: Option<&CommandCheck>,
    cfg: Option<(bool, &str)>,
) -> String {
    let ts = match utc_text(stamp.ts_ms) {
        Some(t) => format!("{} ({t})", stamp.ts_ms),
        None => stamp.ts_ms.to_string(),
    };
    let mut text = format!(
        "valid audit header\nkid: {}\nid: {}\nts: {ts}\npeer: {}\ncfg: {}\ncmd: {cmd}\n",
        stamp.key_id,
        stamp.id,
        stamp.peer.as_deref().unwrap_or("-"),
        stamp.config_fingerprint.as_deref().unwrap_or("-"),
    );
    let line = match check {
        None => String::new(),
        Some(CommandCheck::Matches { command }) => {
            format!("command: {command}\ncommand hash: matches\n")
        }
        Some(CommandCheck::Mismatch { command, request }) => format!(
            "command: {command}\ncommand hash: MISMATCH (header {cmd}, request {request})\n"
        ),
        Some(CommandCheck::Unhashable { command, error }) => format!(
            "command: {command}\ncommand hash: MISMATCH (header {cmd}, request cannot be hashed: {error})\n"
        ),
    };
    text.push_str(&line);
    match cfg {
        None => {}
        Some((true, _)) => text.push_str("config fingerprint: matches --config\n"),
        Some((false, fingerprint)) => text.push_str(&format!(
            "config fingerprint: differs from --config ({fingerprint}): the request was audited under another configuration version\n"
        )),
    }
    text
}

fn header_json(
    stamp: &AuditStamp,
    cmd: &str,
    check: Option<&CommandCheck>,
    cfg: Option<(bool, &str)>,
) -> Value {
    let command = check.map(|c| match c {
        CommandCheck::Matches { command } => json!({
            "matches": true, "command": command, "request_sha256": cmd,
        }),
        CommandCheck::Mismatch { command, request } => json!({
            "matches": false, "command": command, "request_sha256": request,
        }),
        CommandCheck::Unhashable { command, error } => json!({
            "matches": false, "command": command, "request_sha256": null, "error": error,
        }),
    });
    json!({
        "valid": true,
        "kid": stamp.key_id,
        "id": stamp.id,
        "ts_ms": stamp.ts_ms,
        "ts": utc_text(stamp.ts_ms),
        "peer": stamp.peer,
        "cfg": stamp.config_fingerprint,
        "cmd": cmd,
        "command_hash": command,
        "config_fingerprint_matches": cfg.map(|(matches, _)| matches),
    })
}

/// `ms` (Unix milliseconds) as RFC 3339 UTC text, for years up to 9999.
fn utc_text(ms: u64) -> Option<String> {
    // 10000-01-01T00:00:00Z
    if ms >= 253_402_300_800_000 {
        return None;
    }
    let ms = i64::try_from(ms).ok()?;
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_shown_in_utc() {
        for (ms, want) in [
            (0, Some("1970-01-01T00:00:00.000Z")),
            (1_718_000_000_123, Some("2024-06-10T06:13:20.123Z")),
            (951_782_400_000, Some("2000-02-29T00:00:00.000Z")),
            (253_402_300_799_999, Some("9999-12-31T23:59:59.999Z")),
            (253_402_300_800_000, None),
            (u64::MAX, None),
        ] {
            assert_eq!(utc_text(ms).as_deref(), want, "{ms}");
        }
    }

    #[test]
    fn a_copied_header_name_is_dropped() {
        for (text, want) in [
            ("v=1;kid=a\n", "v=1;kid=a"),
            ("x-meshguard-audit: v=1;kid=a", "v=1;kid=a"),
            ("X-Audit:v=1;peer=spiffe://x", "v=1;peer=spiffe://x"),
            ("v=1;peer=spiffe://x", "v=1;peer=spiffe://x"),
            ("junk", "junk"),
        ] {
            assert_eq!(header_value(text), want, "{text:?}");
        }
    }
}
