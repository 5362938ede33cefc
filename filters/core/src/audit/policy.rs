//! The compiled audit policy: built once in `on_configure`, then used per
//! request without parsing.

use super::config::{
    AuditConfig, CollectorConfig, CollectorFormat, CommandConfig, PartConfig, UpstreamSignature,
    DEFAULT_COLLECTOR_PATH, DEFAULT_OTLP_PATH,
};
use super::hash::{CommandHasher, HashError, Part};
use super::httpsig::{is_valid_label, is_valid_tag, MAX_LABEL_LEN};
use super::keys::{Algorithm, KeyError, SealKey};
use super::outbox::OutboxLimits;
use super::record::RECORD_BOUND_WITHOUT_PATH;
use crate::config::{
    check_config_version, check_env_name, check_len, is_token_char, parse_json, ConfigError,
    UniqueNames,
};
use crate::path::{canonicalize, PathOptions};
use crate::request::RequestInfo;
use crate::scope::{compile_scope_with, scope_lists, RequestScope, RequestView};

/// Most commands a policy may define.
pub const MAX_COMMANDS: usize = 1000;
/// Most parts in one command.
pub const MAX_PARTS: usize = 32;
pub use crate::config::MAX_NAME_LEN;
/// Longest JSON pointer.
pub const MAX_POINTER_LEN: usize = 1024;
/// Longest header name, key env var name, collector cluster and authority.
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest key id (it is written into every header and record).
pub const MAX_KEY_ID_LEN: usize = 64;
/// Largest `max_body_bytes`.
pub const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;
/// Bounds of `collector.max_queue_bytes`: at least a few of the largest records.
pub const MIN_QUEUE_BYTES: u64 = 64 * 1024;
pub const MAX_QUEUE_BYTES: u64 = 1024 * 1024 * 1024;
/// Bounds of `max_record_path_bytes`.
pub const MIN_RECORD_PATH: u64 = 16;
pub const MAX_RECORD_PATH: u64 = 16 * 1024;
/// The command used when no configured command matches.
pub const DEFAULT_COMMAND_NAME: &str = "default";

/// Request headers the filter may not be told to write: overwriting them would
/// change how the request is routed, framed or authenticated.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "authorization",
    "cookie",
    "x-request-id",
    "signature",
    "signature-input",
    "content-digest",
];

/// Longest `signature_expires_seconds`: a day.
pub const MAX_SIGNATURE_EXPIRES_SECONDS: u64 = 86_400;

/// Which command a request is: a configured one (by index) or the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandRef(Option<usize>);

impl CommandRef {
    /// The default command (`["method", "path", "query"]`, named `default`).
    pub const DEFAULT: Self = Self(None);

    /// Index into `commands`, or `None` for the default command.
    pub fn index(self) -> Option<usize> {
        self.0
    }

    pub fn is_default(self) -> bool {
        self.0.is_none()
    }
}

#[derive(Debug)]
struct Command {
    name: Box<str>,
    scope: RequestScope,
    parts: Box<[Part]>,
}

/// Where records are POSTed, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collector {
    /// Envoy cluster name.
    pub cluster: String,
    /// How records are POSTed.
    pub format: CollectorFormat,
    /// Request path, starts with `/`.
    pub path: String,
    /// `:authority` of the collector requests.
    pub authority: String,
    pub timeout_ms: u32,
    /// Most records waiting for delivery; older ones are dropped beyond it.
    pub max_queue: usize,
    pub max_retries: u32,
    /// Most records per request to the collector.
    pub batch_size: usize,
    /// Most bytes of record lines waiting or in flight.
    pub max_queue_bytes: usize,
    /// Most deliveries in flight at once.
    pub max_in_flight: usize,
}

/// A validated audit policy.
#[derive(Debug)]
pub struct AuditPolicy {
    config_version: Option<String>,
    key_env: String,
    key_id: String,
    command_header: String,
    audit_header: String,
    id_header: String,
    max_body_bytes: usize,
    commands: Vec<Command>,
    paths: PathOptions,
    default_command: Command,
    log_records: bool,
    collector: Option<Collector>,
    fail_closed: bool,
    max_record_path_bytes: usize,
    algorithm: Algorithm,
    upstream_signature: UpstreamSignature,
    signature_label: String,
    signature_tag: String,
    signature_expires_seconds: Option<u64>,
    fingerprint: Option<String>,
    warnings: Vec<String>,
}

impl AuditPolicy {
    /// Parses and compiles plugin JSON: the whole validation, shared by the
    /// filter and `meshguard validate`. Also computes [`Self::config_fingerprint`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut policy = Self::compile(parse_json(bytes)?)?;
        // The fingerprint the filter's load computes (strict parse, RFC 8785,
        // `signature` left out), so the CLI and the filter name one config alike.
        policy.fingerprint = Some(crate::integrity::fingerprint(bytes)?);
        Ok(policy)
    }

    /// Compiles an already parsed configuration (no fingerprint).
    pub fn compile(config: AuditConfig) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        let paths = PathOptions {
            normalization: config.path_normalization.unwrap_or_default(),
            case_insensitive: config.path_case_insensitive,
        };
        check_config_version(config.config_version.as_deref())?;
        check_env_name("key_env", &config.key_env, MAX_TOKEN_LEN)?;
        check_key_id("key_id", &config.key_id)?;
        let headers = [
            ("command_header", &config.command_header),
            ("audit_header", &config.audit_header),
            ("id_header", &config.id_header),
        ];
        for (i, (at, name)) in headers.iter().enumerate() {
            check_header_name(at, name)?;
            if let Some((other, _)) = headers.iter().take(i).find(|(_, n)| n == name) {
                return Err(ConfigError::Contradiction {
                    at: (*at).into(),
                    other: (*other).into(),
                    problem: format!("both name the header {name:?}; each needs its own"),
                });
            }
        }
        if !(1..=MAX_BODY_LIMIT).contains(&config.max_body_bytes) {
            return Err(ConfigError::invalid(
                "max_body_bytes",
                format!(
                    "{} is out of range: 1 to {MAX_BODY_LIMIT} (64 MiB)",
                    config.max_body_bytes
                ),
            ));
        }
        let max_body_bytes = usize::try_from(config.max_body_bytes).map_err(|_| {
            ConfigError::invalid("max_body_bytes", "does not fit this platform's memory")
        })?;

        check_len("commands", &config.commands, MAX_COMMANDS)?;
        let mut names = UniqueNames::new("commands");
        let mut commands = Vec::with_capacity(config.commands.len());
        for (i, cc) in config.commands.iter().enumerate() {
            let at = format!("commands[{i}]");
            names.check(i, &cc.name)?;
            if cc.name == DEFAULT_COMMAND_NAME {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!(
                        "{DEFAULT_COMMAND_NAME:?} is reserved for the built-in command used when none matches"
                    ),
                ));
            }
            commands.push(compile_command(&at, cc, &paths)?);
        }
        let mut shadowing = commands
            .iter()
            .enumerate()
            .skip_while(|(_, c)| !is_unconstrained(&c.scope));
        if let (Some((i, all)), Some((j, next))) = (shadowing.next(), shadowing.next()) {
            warnings.push(format!(
                "commands[{i}] ({}) matches every request, so commands[{j}] ({}) and later ones never apply",
                all.name, next.name
            ));
        }

        if !(MIN_RECORD_PATH..=MAX_RECORD_PATH).contains(&config.max_record_path_bytes) {
            return Err(ConfigError::invalid(
                "max_record_path_bytes",
                format!(
                    "{} is out of range: {MIN_RECORD_PATH} to {MAX_RECORD_PATH}",
                    config.max_record_path_bytes
                ),
            ));
        }
        let max_record_path_bytes =
            usize::try_from(config.max_record_path_bytes).unwrap_or(usize::MAX);
        let collector = config
            .collector
            .as_ref()
            .map(compile_collector)
            .transpose()?;
        if config.fail_closed && collector.is_none() {
            return Err(ConfigError::invalid(
                "fail_closed",
                "is true but no collector is configured: fail_closed refuses requests whose record \
                 the collector did not accept, so it needs a `collector`",
            ));
        }
        if !config.log_records && collector.is_none() {
            warnings.push(
                "log_records is false and no collector is configured: records are written nowhere; \
                 only the request headers are added"
                    .into(),
            );
        }

        check_signature(&config)?;

        Ok(Self {
            paths,
            algorithm: config.algorithm,
            upstream_signature: config.upstream_signature,
            signature_label: config.signature_label,
            signature_tag: config.signature_tag,
            signature_expires_seconds: config.signature_expires_seconds,
            config_version: config.config_version,
            key_env: config.key_env,
            key_id: config.key_id,
            command_header: config.command_header,
            audit_header: config.audit_header,
            id_header: config.id_header,
            max_body_bytes,
            commands,
            default_command: Command {
                name: DEFAULT_COMMAND_NAME.into(),
                scope: RequestScope::default(),
                parts: Box::new([Part::Method, Part::Path, Part::Query]),
            },
            log_records: config.log_records,
            collector,
            fail_closed: config.fail_closed,
            max_record_path_bytes,
            fingerprint: None,
            warnings,
        })
    }

    /// The first configured command whose scope matches the request, or the
    /// default command. Paths are matched in canonical form (see
    /// [`crate::path`]), so `//admin/./run;x` is matched as `/admin/run`.
    pub fn command_for(&self, request: &RequestInfo<'_>) -> CommandRef {
        if self.commands.is_empty() {
            return CommandRef::DEFAULT;
        }
        // The filter hands over the canonical path already; the CLI may not.
        let canonical = canonicalize(request.path, &self.paths).ok().flatten();
        let request = RequestInfo {
            path: canonical.as_deref().unwrap_or(request.path),
            ..*request
        };
        let view = RequestView::with(&request, &self.paths);
        CommandRef(self.commands.iter().position(|c| c.scope.matches(&view)))
    }

    /// A reference from another policy (out of range) resolves to the default.
    fn command(&self, c: CommandRef) -> &Command {
        c.0.and_then(|i| self.commands.get(i))
            .unwrap_or(&self.default_command)
    }

    pub fn command_name(&self, c: CommandRef) -> &str {
        &self.command(c).name
    }

    /// The parts hashed for this command, in order.
    pub fn command_parts(&self, c: CommandRef) -> &[Part] {
        &self.command(c).parts
    }

    /// Whether the hash needs the request body (a `body` or `json_pointer` part).
    pub fn needs_body(&self, c: CommandRef) -> bool {
        self.command(c).parts.iter().any(Part::uses_body)
    }

    /// Whether the body can be hashed chunk by chunk, never buffered: a `body`
    /// part and no `json_pointer` part.
    pub fn streams_body(&self, c: CommandRef) -> bool {
        let parts = &self.command(c).parts;
        parts.contains(&Part::Body) && !parts.iter().any(|p| matches!(p, Part::JsonPointer(_)))
    }

    /// Starts hashing a request as command `c`; the parts that do not depend on
    /// the body are hashed now.
    pub fn hasher(&self, c: CommandRef, request: &RequestInfo<'_>) -> CommandHasher {
        CommandHasher::new(
            &self.command(c).parts,
            request,
            self.max_body_bytes,
            self.upstream_signature.rfc9421(),
        )
    }

    /// The hash of a request as command `c` with its whole body: exactly what
    /// [`Self::hasher`] gives when fed the same body in any chunks.
    pub fn command_hash(
        &self,
        c: CommandRef,
        request: &RequestInfo<'_>,
        body: &[u8],
    ) -> Result<[u8; 32], HashError> {
        let mut hasher = self.hasher(c, request);
        if self.needs_body(c) {
            hasher.update_body(body)?;
        }
        hasher.finish()
    }

    /// Picks the command and hashes a whole request: what the filter computes
    /// for it (`path` is `:path`, query included; `host` is `:authority`).
    pub fn hash_request(
        &self,
        method: &str,
        path: &str,
        host: &str,
        body: &[u8],
    ) -> Result<[u8; 32], HashError> {
        let request = RequestInfo { path, method, host };
        self.command_hash(self.command_for(&request), &request, body)
    }

    pub fn config_version(&self) -> Option<&str> {
        self.config_version.as_deref()
    }

    /// Lower-case hex SHA-256 of the canonical JSON of the plugin configuration,
    /// when compiled with [`Self::from_json`].
    pub fn config_fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    pub fn key_env(&self) -> &str {
        &self.key_env
    }

    /// The proxy's audit key, read through `env` from the variable
    /// [`Self::key_env`] names, as [`Self::algorithm`] reads it: what the
    /// filter does with its VM's environment, and `meshguard validate --env`
    /// with a proxy's.
    pub fn key_from_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SealKey, ConfigError> {
        let text = env(&self.key_env).unwrap_or_default();
        SealKey::from_env_text(&text, self.algorithm).map_err(|e| {
            let hint = match e {
                KeyError::PrivateKeyAsSecret | KeyError::NotPkcs8 => "",
                _ => " (set it in the WasmPlugin's vmConfig.env, valueFrom HOST)",
            };
            ConfigError::invalid(format!("env {}", self.key_env), format!("{e}{hint}"))
        })
    }

    /// What signs headers and seals records.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Which signed headers the upstream receives.
    pub fn upstream_signature(&self) -> UpstreamSignature {
        self.upstream_signature
    }

    /// The RFC 9421 label of meshguard's members.
    pub fn signature_label(&self) -> &str {
        &self.signature_label
    }

    /// The RFC 9421 `tag` parameter.
    pub fn signature_tag(&self) -> &str {
        &self.signature_tag
    }

    /// Seconds from `created` to `expires`, when set.
    pub fn signature_expires_seconds(&self) -> Option<u64> {
        self.signature_expires_seconds
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn command_header(&self) -> &str {
        &self.command_header
    }

    pub fn audit_header(&self) -> &str {
        &self.audit_header
    }

    pub fn id_header(&self) -> &str {
        &self.id_header
    }

    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    pub fn log_records(&self) -> bool {
        self.log_records
    }

    pub fn collector(&self) -> Option<&Collector> {
        self.collector.as_ref()
    }

    /// Most bytes of the canonical path a record keeps.
    pub fn max_record_path_bytes(&self) -> usize {
        self.max_record_path_bytes
    }

    /// The most bytes one record line can take (see [`super::RecordFields::cap`]).
    pub fn record_bound(&self) -> usize {
        RECORD_BOUND_WITHOUT_PATH.saturating_add(self.max_record_path_bytes)
    }

    /// The collector outbox's bounds, when there is a collector: under
    /// `otlp_json` an entry is the exported log record, larger than the record.
    pub fn outbox_limits(&self) -> Option<OutboxLimits> {
        self.collector.as_ref().map(|c| OutboxLimits {
            max_records: c.max_queue,
            max_bytes: c.max_queue_bytes,
            batch_size: c.batch_size,
            max_in_flight: c.max_in_flight,
            max_retries: c.max_retries,
            record_bound: match c.format {
                CollectorFormat::Ndjson => self.record_bound(),
                CollectorFormat::OtlpJson => super::otlp::log_record_bound(self.record_bound()),
            },
            fail_closed: self.fail_closed,
        })
    }

    /// How the collector's deliveries are put together, when there is a collector.
    pub fn outbox_framing(&self) -> Option<super::outbox::Framing> {
        self.collector.as_ref().map(|c| match c.format {
            CollectorFormat::Ndjson => super::outbox::Framing::Lines,
            CollectorFormat::OtlpJson => {
                let (head, tail) = super::otlp::export_framing();
                super::outbox::Framing::Json { head, tail }
            }
        })
    }

    /// How this policy canonicalizes request paths.
    pub fn path_options(&self) -> &PathOptions {
        &self.paths
    }

    pub fn fail_closed(&self) -> bool {
        self.fail_closed
    }

    /// Number of configured commands (the default command not counted).
    pub fn command_count(&self) -> usize {
        self.commands.len()
    }

    /// Things that are legal but probably not what the author meant.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

fn is_unconstrained(scope: &RequestScope) -> bool {
    scope.paths.any_of.is_none()
        && scope.paths.none_of.is_empty()
        && scope.methods.any_of.is_none()
        && scope.methods.none_of.is_empty()
        && scope.hosts.any_of.is_none()
        && scope.hosts.none_of.is_empty()
}

fn compile_command(
    at: &str,
    cc: &CommandConfig,
    paths: &PathOptions,
) -> Result<Command, ConfigError> {
    let scope = compile_scope_with(at, scope_lists!(cc), paths)?;
    let parts_at = format!("{at}.parts");
    if cc.parts.is_empty() {
        return Err(ConfigError::invalid(
            parts_at,
            "is an empty list: a command hashes at least one part \
             (\"method\", \"path\", \"query\", \"body\" or {\"json_pointer\": ...})",
        ));
    }
    check_len(&parts_at, &cc.parts, MAX_PARTS)?;
    let mut parts: Vec<Part> = Vec::with_capacity(cc.parts.len());
    for (j, pc) in cc.parts.iter().enumerate() {
        let part = match pc {
            PartConfig::Method => Part::Method,
            PartConfig::Path => Part::Path,
            PartConfig::Query => Part::Query,
            PartConfig::Body => Part::Body,
            PartConfig::JsonPointer(p) => {
                check_pointer(&format!("{parts_at}[{j}].json_pointer"), p)?;
                Part::JsonPointer(p.as_str().into())
            }
        };
        if let Some(k) = parts.iter().position(|q| *q == part) {
            return Err(ConfigError::Contradiction {
                at: format!("{parts_at}[{j}]"),
                other: format!("{parts_at}[{k}]"),
                problem: format!("the part {:?} is listed twice", part.frame_name()),
            });
        }
        parts.push(part);
    }
    Ok(Command {
        name: cc.name.as_str().into(),
        scope,
        parts: parts.into_boxed_slice(),
    })
}

fn compile_collector(cc: &CollectorConfig) -> Result<Collector, ConfigError> {
    check_text("collector.cluster", &cc.cluster, MAX_TOKEN_LEN)?;
    check_text("collector.authority", &cc.authority, MAX_TOKEN_LEN)?;
    let path = cc.path.clone().unwrap_or_else(|| {
        match cc.format {
            CollectorFormat::Ndjson => DEFAULT_COLLECTOR_PATH,
            CollectorFormat::OtlpJson => DEFAULT_OTLP_PATH,
        }
        .to_owned()
    });
    check_text("collector.path", &path, 1024)?;
    if !path.starts_with('/') {
        return Err(ConfigError::invalid(
            "collector.path",
            format!("{path:?} must start with `/`"),
        ));
    }
    let range = |at: &str, value: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::invalid(
                at,
                format!("{value} is out of range: {min} to {max}"),
            ))
        }
    };
    let timeout_ms = range("collector.timeout_ms", cc.timeout_ms, 1, 60_000)?;
    let max_queue = range("collector.max_queue", cc.max_queue, 1, 100_000)?;
    let max_retries = range("collector.max_retries", cc.max_retries, 0, 10)?;
    let batch_size = range("collector.batch_size", cc.batch_size, 1, 1000)?;
    let max_queue_bytes = range(
        "collector.max_queue_bytes",
        cc.max_queue_bytes,
        MIN_QUEUE_BYTES,
        MAX_QUEUE_BYTES,
    )?;
    let max_in_flight = range("collector.max_in_flight", cc.max_in_flight, 1, 64)?;
    if batch_size > max_queue {
        return Err(ConfigError::Contradiction {
            at: "collector.batch_size".into(),
            other: "collector.max_queue".into(),
            problem: format!(
                "a batch of {batch_size} records is larger than the queue of {max_queue}"
            ),
        });
    }
    // The ranges above fit every integer type used here.
    let small = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    Ok(Collector {
        cluster: cc.cluster.clone(),
        format: cc.format,
        path,
        authority: cc.authority.clone(),
        timeout_ms: small(timeout_ms),
        max_queue: size(max_queue),
        max_retries: small(max_retries),
        batch_size: size(batch_size),
        max_queue_bytes: size(max_queue_bytes),
        max_in_flight: size(max_in_flight),
    })
}

/// The upstream signature settings: a label and tag RFC 8941 writes without
/// escapes, a bounded `expires`, and an algorithm the chosen headers support.
fn check_signature(config: &AuditConfig) -> Result<(), ConfigError> {
    if !is_valid_label(&config.signature_label) {
        return Err(ConfigError::invalid(
            "signature_label",
            format!(
                "{:?} is not an RFC 8941 key: a lower-case letter or `*`, then lower-case letters, \
                 digits, `_`, `-`, `.`, `*`; at most {MAX_LABEL_LEN} bytes",
                config.signature_label
            ),
        ));
    }
    if !is_valid_tag(&config.signature_tag) {
        return Err(ConfigError::invalid(
            "signature_tag",
            format!(
                "{:?} must be 1 to {MAX_LABEL_LEN} visible ASCII characters or spaces, without `\"` or `\\`",
                config.signature_tag
            ),
        ));
    }
    if let Some(expires) = config.signature_expires_seconds {
        if !(1..=MAX_SIGNATURE_EXPIRES_SECONDS).contains(&expires) {
            return Err(ConfigError::invalid(
                "signature_expires_seconds",
                format!("{expires} is out of range: 1 to {MAX_SIGNATURE_EXPIRES_SECONDS}"),
            ));
        }
    }
    if config.algorithm == Algorithm::Ed25519 && config.upstream_signature.v1() {
        return Err(ConfigError::Contradiction {
            at: "upstream_signature".into(),
            other: "algorithm".into(),
            problem: format!(
                "{:?} sends the v1 header, which is HMAC only; with ed25519 choose \"rfc9421\"",
                config.upstream_signature.as_str()
            ),
        });
    }
    Ok(())
}

/// Non-empty, bounded, no whitespace or control characters.
fn check_text(at: &str, text: &str, max: usize) -> Result<(), ConfigError> {
    if text.is_empty() {
        return Err(ConfigError::invalid(at, "must not be empty"));
    }
    if text.len() > max {
        return Err(ConfigError::invalid(
            at,
            format!("is longer than {max} bytes"),
        ));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConfigError::invalid(
            at,
            format!("{text:?} contains whitespace or control characters"),
        ));
    }
    Ok(())
}

/// Key ids are written into headers and records: `A-Z a-z 0-9 . _ -`, 1 to 64 bytes.
pub fn is_valid_key_id(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KEY_ID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_key_id(at: &str, kid: &str) -> Result<(), ConfigError> {
    if is_valid_key_id(kid) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            at,
            format!(
                "{kid:?} is not a key id (letters, digits, `.`, `_` and `-`, 1 to {MAX_KEY_ID_LEN} bytes)"
            ),
        ))
    }
}

fn check_header_name(at: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_TOKEN_LEN {
        return Err(ConfigError::invalid(
            at,
            format!("must be a header name of 1 to {MAX_TOKEN_LEN} bytes"),
        ));
    }
    // RFC 9110 token characters, lower case (HTTP/2 and Envoy's header maps).
    if let Some(c) = name
        .chars()
        .find(|&c| !is_token_char(c) || c.is_ascii_uppercase())
    {
        let hint = if c.is_ascii_uppercase() {
            " (header names are written in lower case)"
        } else {
            ""
        };
        return Err(ConfigError::invalid(
            at,
            format!("{name:?} is not a lower-case HTTP header name: {c:?} is not allowed{hint}"),
        ));
    }
    if RESERVED_HEADERS.contains(&name) {
        return Err(ConfigError::invalid(
            at,
            format!(
                "{name:?} is a header the proxy or the application relies on; choose another name"
            ),
        ));
    }
    Ok(())
}

/// RFC 6901: empty (the whole document) or `/`-separated tokens in which `~`
/// is only `~0` (`~`) or `~1` (`/`).
fn check_pointer(at: &str, pointer: &str) -> Result<(), ConfigError> {
    if pointer.len() > MAX_POINTER_LEN {
        return Err(ConfigError::invalid(
            at,
            format!("is longer than {MAX_POINTER_LEN} bytes"),
        ));
    }
    let problem = if !pointer.is_empty() && !pointer.starts_with('/') {
        Some("it must be empty (the whole body) or start with `/`")
    } else if pointer.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        let mut chars = pointer.chars();
        let mut bad_escape = false;
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                bad_escape = true;
                break;
            }
        }
        bad_escape.then_some("`~` must be followed by `0` (for `~`) or `1` (for `/`)")
    };
    match problem {
        Some(p) => Err(ConfigError::invalid(
            at,
            format!("{pointer:?} is not a JSON pointer (RFC 6901): {p}"),
        )),
        None => Ok(()),
    }
}
