//! The compiled masking policy: built once in `on_configure`, then used per
//! request without parsing anything from the configuration again.

use hashbrown::HashMap;
use regex_lite::{Regex, RegexBuilder};

use super::charset;
use super::config::{
    BinaryPartAction, CompressedAction, GrpcAction, MalformedJsonAction, MaskRuleConfig,
    MaskingConfig, Mode, NotUtf8Action, OversizeAction, StrategyKind, UnsupportedAction,
    UpgradeAction, DEFAULT_KEEP_LAST, DEFAULT_REDACT_TOKEN, MAX_KEEP_LAST, MAX_MAX_BODY_BYTES,
    MAX_MAX_JSON_DEPTH,
};
use super::detect::Detector;
use super::paths::{PathPattern, State};
use super::strategy::{HashKey, Strategy, MIN_HASH_KEY_LEN};
use super::stream::{Fed, StreamError, Streamer};
use super::{
    form, json, text, BodyKind, Direction, HeaderEdit, HeaderEdits, MaskError, Masked, RuleHits,
    Selection,
};
use crate::config::{
    check_config_version, check_env_name, check_len, is_token_char, parse_json, ConfigError,
    UniqueNames,
};
use crate::path::PathOptions;
use crate::pattern::StringPattern;
use crate::request::RequestInfo;
use crate::scope::{
    compile_principals, compile_scope_with, principal_matches, scope_lists, RequestScope,
    RequestView,
};
use crate::spiffe::SpiffeId;

/// Most rules in a policy (rule indices are kept in a 256-bit set per request).
pub const MAX_RULES: usize = 256;
pub use crate::config::MAX_NAME_LEN;
/// Most `json_paths` entries in one rule.
pub const MAX_JSON_PATHS: usize = 256;
/// Most `json_keys` entries in one rule.
pub const MAX_JSON_KEYS: usize = 1024;
/// Most `patterns` in one rule.
pub const MAX_PATTERNS: usize = 32;
/// Most `headers` in one rule.
pub const MAX_HEADERS: usize = 64;
/// Longest `patterns[].regex`, in bytes.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled size limit of one regex (bounds its per-byte matching cost).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Most entries in a rule's `detectors` list (there are twelve detectors).
const MAX_DETECTOR_ENTRIES: usize = 64;

/// A validated, compiled masking policy.
#[derive(Debug)]
pub struct MaskingPolicy {
    config_version: Option<String>,
    mode: Mode,
    /// How request paths are canonicalized before rule scopes match.
    path_options: PathOptions,
    max_body_bytes: usize,
    max_json_depth: usize,
    max_record_bytes: usize,
    on_oversize: OversizeAction,
    on_malformed_json: MalformedJsonAction,
    on_compressed_request: CompressedAction,
    on_unsupported_content_type: UnsupportedAction,
    on_not_utf8: NotUtf8Action,
    on_grpc: GrpcAction,
    on_binary_part: BinaryPartAction,
    on_upgrade: UpgradeAction,
    scan_all_headers: bool,
    hash_key_env: String,
    rules: Vec<Rule>,
    /// Every rule's `json_paths`, in rule order.
    paths: Vec<PathPattern>,
    /// Lower-cased `json_keys` → rules listing them, ascending.
    keys: HashMap<Box<str>, Vec<u16>>,
    /// Lower-cased header names → rules listing them, ascending.
    headers: HashMap<Box<str>, Vec<u16>>,
    hash_key: Option<HashKey>,
}

#[derive(Debug)]
struct Rule {
    name: Box<str>,
    /// Bits of [`Direction::bit`].
    directions: u8,
    scope: RequestScope,
    except_principals: Box<[StringPattern]>,
    has_paths: bool,
    has_keys: bool,
    /// Bits of [`Detector::bit`].
    detectors: u16,
    patterns: Box<[Regex]>,
    has_headers: bool,
    strategy: Strategy,
}

impl Rule {
    /// Detectors or patterns: what `scan_all_headers` runs over header values.
    fn scans(&self) -> bool {
        self.detectors != 0 || !self.patterns.is_empty()
    }

    fn masks_bodies(&self) -> bool {
        self.has_paths || self.has_keys || self.detectors != 0 || !self.patterns.is_empty()
    }
}

/// A set of rule indices (at most [`MAX_RULES`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RuleSet([u64; 4]);

impl RuleSet {
    fn insert(&mut self, rule: u16) {
        let r = usize::from(rule);
        if let Some(word) = self.0.get_mut(r / 64) {
            *word |= 1u64 << (r % 64);
        }
    }

    fn contains(&self, rule: u16) -> bool {
        let r = usize::from(rule);
        self.0
            .get(r / 64)
            .is_some_and(|word| word & (1u64 << (r % 64)) != 0)
    }
}

/// What one message is masked with: the selected rules, resolved once per
/// `mask_body` call into the work to do.
#[derive(Debug)]
pub(crate) struct Plan<'p> {
    policy: &'p MaskingPolicy,
    selected: RuleSet,
    /// Each detector once, attributed to the first selected rule using it.
    pub(crate) detectors: Vec<(Detector, u16)>,
    pub(crate) patterns: Vec<(u16, &'p Regex)>,
    /// Initial path states of the selected rules' `json_paths`.
    pub(crate) roots: Vec<State>,
    /// Some selected rule has `json_keys`.
    pub(crate) keys: bool,
    /// Text that is not UTF-8 was scanned run by run.
    scanned_bytes: std::cell::Cell<bool>,
}

impl<'p> Plan<'p> {
    fn new(policy: &'p MaskingPolicy, selection: &Selection) -> Self {
        let mut selected = RuleSet::default();
        let mut detectors_seen = 0u16;
        let mut detectors = Vec::new();
        let mut patterns = Vec::new();
        let mut keys = false;
        for &r in &selection.rules {
            let Some(rule) = policy.rules.get(usize::from(r)) else {
                continue;
            };
            selected.insert(r);
            keys |= rule.has_keys;
            for d in Detector::ALL {
                if rule.detectors & d.bit() != 0 && detectors_seen & d.bit() == 0 {
                    detectors_seen |= d.bit();
                    detectors.push((d, r));
                }
            }
            patterns.extend(rule.patterns.iter().map(|re| (r, re)));
        }
        let roots = policy
            .paths
            .iter()
            .enumerate()
            .filter(|(_, p)| selected.contains(p.rule))
            .filter_map(|(i, p)| Some((u32::try_from(i).ok()?, p.start())))
            .collect();
        Self {
            policy,
            selected,
            detectors,
            patterns,
            roots,
            keys,
            scanned_bytes: std::cell::Cell::new(false),
        }
    }

    /// Detectors or patterns run over string values.
    pub(crate) fn scans(&self) -> bool {
        !self.detectors.is_empty() || !self.patterns.is_empty()
    }

    /// `on_not_utf8: mask_bytes`: bytes that are not UTF-8 are scanned run
    /// by run instead of refusing the message.
    pub(crate) fn masks_bytes(&self) -> bool {
        let allowed = self.policy.on_not_utf8 == NotUtf8Action::MaskBytes;
        // Asked only on text that is not UTF-8: remember it was met.
        self.scanned_bytes.set(self.scanned_bytes.get() || allowed);
        allowed
    }

    pub(crate) fn max_json_depth(&self) -> usize {
        self.policy.max_json_depth
    }

    /// `on_malformed_json: mask_as_text`.
    pub(crate) fn json_falls_back_to_text(&self) -> bool {
        self.policy.on_malformed_json == MalformedJsonAction::MaskAsText
    }

    /// `on_binary_part: pass`.
    pub(crate) fn passes_binary_parts(&self) -> bool {
        self.policy.on_binary_part == BinaryPartAction::Pass
    }

    pub(crate) fn paths(&self) -> &'p [PathPattern] {
        &self.policy.paths
    }

    /// The first selected rule listing `key` in `json_keys` (case-insensitively).
    /// `buf` is scratch space for the lower-cased key.
    pub(crate) fn key_rule(&self, key: &str, buf: &mut String) -> Option<u16> {
        if !self.keys {
            return None;
        }
        lowercase_into(key, buf);
        self.policy
            .keys
            .get(buf.as_str())?
            .iter()
            .copied()
            .find(|&r| self.selected.contains(r))
    }

    pub(crate) fn is_remove(&self, rule: u16) -> bool {
        self.policy
            .rules
            .get(usize::from(rule))
            .is_some_and(|r| r.strategy == Strategy::Remove)
    }

    /// Appends the masked form of `value` under `rule`'s strategy.
    pub(crate) fn write_masked(&self, rule: u16, value: &str, out: &mut String) {
        match self.policy.rules.get(usize::from(rule)) {
            Some(r) => r.strategy.write(value, self.policy.hash_key.as_ref(), out),
            None => out.push_str(DEFAULT_REDACT_TOKEN),
        }
    }
}

/// Lower-cases `key` into `buf` (character by character, so that config keys
/// and document keys are folded the same way).
pub(crate) fn lowercase_into(key: &str, buf: &mut String) {
    buf.clear();
    if key.is_ascii() {
        buf.push_str(key);
        buf.make_ascii_lowercase();
    } else {
        buf.extend(key.chars().flat_map(char::to_lowercase));
    }
}

/// Adds one hit for `rule`.
pub(crate) fn count_hit(hits: &mut [u32], rule: u16) {
    if let Some(h) = hits.get_mut(usize::from(rule)) {
        *h = h.saturating_add(1);
    }
}

fn collect_hits(hits: &[u32]) -> Vec<RuleHits> {
    hits.iter()
        .enumerate()
        .filter(|(_, &count)| count > 0)
        .map(|(rule, &count)| RuleHits { rule, count })
        .collect()
}

impl MaskingPolicy {
    /// Parses and compiles plugin JSON. `hash_key` is the value of the
    /// environment variable named by `hash_key_env` (read by the adapter from
    /// the VM's environment); it is needed only by rules using `hash`.
    pub fn from_json(bytes: &[u8], hash_key: Option<&[u8]>) -> Result<Self, ConfigError> {
        Self::compile(parse_json(bytes)?, hash_key)
    }

    /// Parses plugin JSON and reads the hash key from the environment variable
    /// the config names (`hash_key_env`) through `env`: what the filter does
    /// with the VM's environment and the CLI with the process's.
    pub fn from_json_with_env(
        bytes: &[u8],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let config: MaskingConfig = parse_json(bytes)?;
        let key = env(&config.hash_key_env).filter(|k| !k.is_empty());
        Self::compile(config, key.as_deref().map(str::as_bytes))
    }

    pub fn compile(config: MaskingConfig, hash_key: Option<&[u8]>) -> Result<Self, ConfigError> {
        check_config_version(config.config_version.as_deref())?;
        if !(1..=MAX_MAX_BODY_BYTES).contains(&config.max_body_bytes) {
            return Err(ConfigError::invalid(
                "max_body_bytes",
                format!(
                    "{} is out of range: between 1 and {MAX_MAX_BODY_BYTES} (64 MiB)",
                    config.max_body_bytes
                ),
            ));
        }
        let max_body_bytes = usize::try_from(config.max_body_bytes).map_err(|_| {
            ConfigError::invalid("max_body_bytes", "does not fit this platform's memory")
        })?;
        if !(1..=MAX_MAX_JSON_DEPTH).contains(&config.max_json_depth) {
            return Err(ConfigError::invalid(
                "max_json_depth",
                format!(
                    "{} is out of range: between 1 and {MAX_MAX_JSON_DEPTH}",
                    config.max_json_depth
                ),
            ));
        }
        let max_json_depth = usize::try_from(config.max_json_depth).unwrap_or(64);
        if !(1..=MAX_MAX_BODY_BYTES).contains(&config.max_record_bytes) {
            return Err(ConfigError::invalid(
                "max_record_bytes",
                format!(
                    "{} is out of range: between 1 and {MAX_MAX_BODY_BYTES} (64 MiB)",
                    config.max_record_bytes
                ),
            ));
        }
        let max_record_bytes = usize::try_from(config.max_record_bytes).map_err(|_| {
            ConfigError::invalid("max_record_bytes", "does not fit this platform's memory")
        })?;
        check_env_name("hash_key_env", &config.hash_key_env, MAX_NAME_LEN)?;

        if config.rules.is_empty() {
            return Err(ConfigError::invalid(
                "rules",
                "is empty: a masking policy needs at least one rule",
            ));
        }
        check_len("rules", &config.rules, MAX_RULES)?;
        let mut compiler = Compiler {
            path_options: PathOptions {
                normalization: config.path_normalization.unwrap_or_default(),
                case_insensitive: config.path_case_insensitive,
            },
            ..Compiler::default()
        };
        let mut names = UniqueNames::new("rules");
        let mut rules = Vec::with_capacity(config.rules.len());
        let mut first_hash_rule = None;
        for (i, rc) in config.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            names.check(i, &rc.name)?;
            let index =
                u16::try_from(i).map_err(|_| ConfigError::invalid(&at, "too many rules"))?;
            if rc.strategy == StrategyKind::Hash && first_hash_rule.is_none() {
                first_hash_rule = Some(i);
            }
            rules.push(compiler.rule(&at, index, rc)?);
        }

        let hash_key = match first_hash_rule {
            None => None,
            Some(i) => Some(compile_hash_key(i, &config.hash_key_env, hash_key)?),
        };

        Ok(Self {
            config_version: config.config_version,
            mode: config.mode,
            path_options: compiler.path_options,
            max_body_bytes,
            max_json_depth,
            max_record_bytes,
            on_oversize: config.on_oversize,
            on_malformed_json: config.on_malformed_json,
            on_compressed_request: config.on_compressed_request,
            on_unsupported_content_type: config.on_unsupported_content_type,
            on_not_utf8: config.on_not_utf8,
            on_grpc: config.on_grpc,
            on_binary_part: config.on_binary_part,
            on_upgrade: config.on_upgrade,
            scan_all_headers: config.scan_all_headers,
            hash_key_env: config.hash_key_env,
            rules,
            paths: compiler.paths,
            keys: compiler.keys,
            headers: compiler.headers,
            hash_key,
        })
    }

    /// How this policy canonicalizes request paths.
    pub fn path_options(&self) -> &PathOptions {
        &self.path_options
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn config_version(&self) -> Option<&str> {
        self.config_version.as_deref()
    }

    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    pub fn max_json_depth(&self) -> usize {
        self.max_json_depth
    }

    pub fn on_oversize(&self) -> OversizeAction {
        self.on_oversize
    }

    pub fn on_malformed_json(&self) -> MalformedJsonAction {
        self.on_malformed_json
    }

    pub fn on_compressed_request(&self) -> CompressedAction {
        self.on_compressed_request
    }

    pub fn on_unsupported_content_type(&self) -> UnsupportedAction {
        self.on_unsupported_content_type
    }

    pub fn on_not_utf8(&self) -> NotUtf8Action {
        self.on_not_utf8
    }

    pub fn on_grpc(&self) -> GrpcAction {
        self.on_grpc
    }

    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    pub fn on_binary_part(&self) -> BinaryPartAction {
        self.on_binary_part
    }

    pub fn on_upgrade(&self) -> UpgradeAction {
        self.on_upgrade
    }

    pub fn scan_all_headers(&self) -> bool {
        self.scan_all_headers
    }

    /// The vmConfig environment variable the adapter reads the hash key from.
    pub fn hash_key_env(&self) -> &str {
        &self.hash_key_env
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn rule_name(&self, rule: usize) -> Option<&str> {
        self.rules.get(rule).map(|r| &*r.name)
    }

    /// Rules that apply to this direction, caller and route, in policy order.
    /// Empty => the adapter does nothing for this message (and does not buffer).
    pub fn select(
        &self,
        direction: Direction,
        caller: Option<&SpiffeId>,
        request: &RequestInfo<'_>,
    ) -> Selection {
        let view = RequestView::with(request, &self.path_options);
        let mut selection = Selection::default();
        for (i, rule) in self.rules.iter().enumerate() {
            let Ok(index) = u16::try_from(i) else { break };
            if rule.directions & direction.bit() == 0
                || !rule.scope.matches(&view)
                || principal_matches(&rule.except_principals, caller)
            {
                continue;
            }
            selection.rules.push(index);
            selection.body |= rule.masks_bodies();
            // Name rules also select `cookie` and `set-cookie` pairs.
            selection.headers |= rule.has_headers
                || rule.has_keys
                || rule.has_paths
                || (self.scan_all_headers && rule.scans());
        }
        selection
    }

    /// Masks a whole (buffered) UTF-8 body. `Ok` with `body: None` means
    /// "forward the original bytes". Bodies of kind [`BodyKind::Other`] are
    /// never changed.
    pub fn mask_body(
        &self,
        selection: &Selection,
        kind: BodyKind,
        body: &[u8],
    ) -> Result<Masked, MaskError> {
        self.mask_body_in(selection, kind, None, body)
    }

    /// [`Self::mask_body`] for a body in `charset` (the content type's
    /// parameter): a BOM, the charset or NUL-interleaved bytes say how it is
    /// encoded; text in another encoding than UTF-8 is transcoded to be
    /// masked and written back in its own.
    pub fn mask_body_in(
        &self,
        selection: &Selection,
        kind: BodyKind,
        charset: Option<&str>,
        body: &[u8],
    ) -> Result<Masked, MaskError> {
        if !selection.needs_body()
            || !matches!(kind, BodyKind::Json | BodyKind::Text | BodyKind::Form)
        {
            return Ok(Masked::default());
        }
        let plan = Plan::new(self, selection);
        let mut hits = vec![0u32; self.rules.len()];
        let decoded = charset::decode(body, charset).map_err(|_| MaskError::Charset)?;
        let masked = match kind {
            BodyKind::Json => {
                json::mask_json(&plan, &decoded.bytes, self.max_json_depth, &mut hits)?
            }
            BodyKind::Text => {
                // A UTF-8 BOM must not hide JSON sent as text.
                let bytes: &[u8] = &decoded.bytes;
                let (bom, text) = match bytes.strip_prefix(charset::UTF8_BOM) {
                    Some(rest) => (bytes.get(..3).unwrap_or_default(), rest),
                    None => (&b""[..], bytes),
                };
                crate::masking::stream::mask_text_bytes(&plan, text, plan.roots.clone(), &mut hits)?
                    .map(|m| [bom, m.as_slice()].concat())
            }
            BodyKind::Form => form::mask_form(&plan, &decoded.bytes, &mut hits)?,
            _ => None,
        };
        let masked = match masked {
            Some(m) => Some(decoded.encode(&m).map_err(|_| MaskError::Charset)?),
            None => None,
        };
        Ok(Masked {
            body: masked,
            hits: collect_hits(&hits),
            scanned_bytes: plan.scanned_bytes.get(),
        })
    }

    /// Feeds received bytes of a streamed body to its cutter: the records
    /// they complete, masked, with their hits.
    pub(crate) fn feed_stream(
        &self,
        selection: &Selection,
        streamer: &mut Streamer,
        input: &[u8],
        end: bool,
    ) -> Result<(Fed, Vec<RuleHits>, bool), StreamError> {
        let plan = Plan::new(self, selection);
        let mut hits = vec![0u32; self.rules.len()];
        let fed = streamer.feed(&plan, input, end, &mut hits)?;
        Ok((fed, collect_hits(&hits), plan.scanned_bytes.get()))
    }

    /// Masks the query string of a request's `:path` as a form (parameter
    /// names matched like JSON keys, values scanned). `Ok` with `body: Some`
    /// holds the new `:path`: the part before `?` byte for byte, then the
    /// masked query.
    pub fn mask_query(&self, selection: &Selection, path: &str) -> Result<Masked, MaskError> {
        let Some((head, query)) = path.split_once('?') else {
            return Ok(Masked::default());
        };
        if !selection.needs_body() || query.is_empty() {
            return Ok(Masked::default());
        }
        let plan = Plan::new(self, selection);
        let mut hits = vec![0u32; self.rules.len()];
        let masked = form::mask_form(&plan, query.as_bytes(), &mut hits)?;
        Ok(Masked {
            body: masked.map(|q| {
                let mut p =
                    Vec::with_capacity(head.len().saturating_add(1).saturating_add(q.len()));
                p.extend_from_slice(head.as_bytes());
                p.push(b'?');
                p.extend_from_slice(&q);
                p
            }),
            hits: collect_hits(&hits),
            scanned_bytes: plan.scanned_bytes.get(),
        })
    }

    /// Header edits for the selected rules. `headers` are (name, value) pairs
    /// as the host returns them (names are compared case-insensitively).
    ///
    /// One edit per header name: `Remove` for `remove`; otherwise `Replace`
    /// with the masked value. A name present several times yields one
    /// `Replace` whose value is the masked values joined with `, ` (`; ` for
    /// `cookie`), as RFC 9110 allows (and, for `redact`, the token once).
    pub fn mask_headers(&self, selection: &Selection, headers: &[(String, String)]) -> HeaderEdits {
        if !selection.needs_headers() {
            return HeaderEdits::default();
        }
        let mut selected = RuleSet::default();
        for &r in &selection.rules {
            selected.insert(r);
        }
        struct Group<'h> {
            name: String,
            rule: u16,
            values: Vec<&'h str>,
        }
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut lower = String::new();
        for (name, value) in headers {
            lower.clear();
            lower.push_str(name);
            lower.make_ascii_lowercase();
            let Some(rule) = self
                .headers
                .get(lower.as_str())
                .and_then(|rules| rules.iter().copied().find(|&r| selected.contains(r)))
            else {
                continue;
            };
            match groups.iter_mut().find(|g| g.name == lower) {
                Some(g) => g.values.push(value),
                None => groups.push(Group {
                    name: lower.clone(),
                    rule,
                    values: vec![value.as_str()],
                }),
            }
        }
        let mut hits = vec![0u32; self.rules.len()];
        let mut edits = Vec::with_capacity(groups.len());
        let named: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
        let scanned = self.scan_headers(selection, headers, &named, &mut hits);
        for g in groups {
            let Some(rule) = self.rules.get(usize::from(g.rule)) else {
                continue;
            };
            for _ in &g.values {
                count_hit(&mut hits, g.rule);
            }
            let edit = match &rule.strategy {
                Strategy::Remove => HeaderEdit::Remove { name: g.name },
                Strategy::Redact(token) => HeaderEdit::Replace {
                    name: g.name,
                    value: token.to_string(),
                },
                strategy => {
                    let separator = if g.name == "cookie" { "; " } else { ", " };
                    let mut value = String::new();
                    for (k, v) in g.values.iter().enumerate() {
                        if k > 0 {
                            value.push_str(separator);
                        }
                        strategy.write(v, self.hash_key.as_ref(), &mut value);
                    }
                    HeaderEdit::Replace {
                        name: g.name,
                        value,
                    }
                }
            };
            edits.push(edit);
        }
        edits.extend(scanned);
        HeaderEdits {
            edits,
            hits: collect_hits(&hits),
        }
    }

    /// The headers no `headers` rule names, masked where they can be in
    /// part: `cookie` and `set-cookie` pairs whose name `json_keys` or a
    /// single-level `json_paths` entry selects (their value masked, or the
    /// pair removed), then, under `scan_all_headers`, detector and pattern
    /// matches in every value, and every header whose *name* holds a match
    /// removed. Pseudo-headers are left alone. One edit per changed name.
    fn scan_headers(
        &self,
        selection: &Selection,
        headers: &[(String, String)],
        named: &[String],
        hits: &mut [u32],
    ) -> Vec<HeaderEdit> {
        let plan = Plan::new(self, selection);
        let names = plan.keys || !plan.roots.is_empty();
        let scan = self.scan_all_headers && plan.scans();
        if !names && !scan {
            return Vec::new();
        }
        // (lower-case name, value, changed, removed)
        let mut current: Vec<(String, String, bool, bool)> = Vec::new();
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            if lower.starts_with(':') || named.contains(&lower) {
                continue;
            }
            current.push((lower, value.clone(), false, false));
        }
        if names {
            for entry in &mut current {
                let cookie = match entry.0.as_str() {
                    "cookie" => mask_cookie_pairs(&plan, &entry.1, false, hits),
                    "set-cookie" => mask_cookie_pairs(&plan, &entry.1, true, hits),
                    _ => None,
                };
                match cookie {
                    Some(Some(value)) => {
                        entry.1 = value;
                        entry.2 = true;
                    }
                    Some(None) => entry.3 = true,
                    None => {}
                }
            }
        }
        if scan {
            let mut spans = Vec::new();
            let mut found_in_name: Vec<String> = Vec::new();
            for entry in &mut current {
                if entry.3 {
                    continue;
                }
                if found_in_name.contains(&entry.0)
                    || text::mask_text(&plan, &entry.0, &mut spans, hits).is_some()
                {
                    // A value in a header name: the header cannot be kept.
                    if !found_in_name.contains(&entry.0) {
                        found_in_name.push(entry.0.clone());
                    }
                    entry.3 = true;
                    continue;
                }
                if let Some(masked) = text::mask_text(&plan, &entry.1, &mut spans, hits) {
                    entry.1 = masked;
                    entry.2 = true;
                }
            }
        }
        let mut edits = Vec::new();
        let mut done: Vec<&str> = Vec::new();
        for (name, ..) in &current {
            if done.contains(&name.as_str()) {
                continue;
            }
            done.push(name);
            let all: Vec<&(String, String, bool, bool)> =
                current.iter().filter(|e| &e.0 == name).collect();
            if !all.iter().any(|e| e.2 || e.3) {
                continue;
            }
            let kept: Vec<String> = all.iter().filter(|e| !e.3).map(|e| e.1.clone()).collect();
            edits.push(if kept.is_empty() {
                HeaderEdit::Remove { name: name.clone() }
            } else if name == "set-cookie" {
                HeaderEdit::Values {
                    name: name.clone(),
                    values: kept,
                }
            } else {
                let separator = if name == "cookie" { "; " } else { ", " };
                HeaderEdit::Replace {
                    name: name.clone(),
                    value: kept.join(separator),
                }
            });
        }
        edits
    }
}

/// A `cookie` header (`a=1; password=x`) or a `set-cookie` one (its first
/// pair; the attributes after it are no cookies) with the pairs whose name
/// is selected masked (or removed). `None`: unchanged; `Some(None)`: nothing
/// left (a `set-cookie` whose cookie was removed).
fn mask_cookie_pairs(
    plan: &Plan<'_>,
    value: &str,
    set_cookie: bool,
    hits: &mut [u32],
) -> Option<Option<String>> {
    let mut states = plan.roots.clone();
    let root = (0, states.len());
    let mut lower = String::new();
    let mut out: Vec<String> = Vec::new();
    let mut changed = false;
    for (k, pair) in value.split(';').enumerate() {
        let attribute = set_cookie && k > 0;
        let trimmed = pair.trim_start();
        let selected = match trimmed.split_once('=') {
            Some((name, _)) if !attribute => {
                form::select_name(plan, &mut states, root, name.trim(), &mut lower)
            }
            _ => None,
        };
        let Some(rule) = selected else {
            out.push(pair.to_owned());
            continue;
        };
        count_hit(hits, rule);
        changed = true;
        if plan.is_remove(rule) {
            if set_cookie {
                return Some(None);
            }
            continue;
        }
        let (name, cookie) = trimmed.split_once('=').unwrap_or((trimmed, ""));
        let mut masked = String::new();
        plan.write_masked(rule, cookie, &mut masked);
        let lead = pair.len().saturating_sub(trimmed.len());
        out.push(format!("{}{name}={masked}", pair.get(..lead).unwrap_or("")));
    }
    if !changed {
        return None;
    }
    let joined = out.join(";");
    Some(Some(joined.trim_start().to_owned()))
}

fn compile_hash_key(rule: usize, env: &str, key: Option<&[u8]>) -> Result<HashKey, ConfigError> {
    let at = format!("rules[{rule}].strategy");
    let key = key.ok_or_else(|| {
        ConfigError::invalid(
            &at,
            format!(
                "\"hash\" needs a secret key, but the environment variable {env} \
                 (named by hash_key_env) is not set in the plugin's vmConfig"
            ),
        )
    })?;
    if key.len() < MIN_HASH_KEY_LEN {
        return Err(ConfigError::invalid(
            &at,
            format!(
                "\"hash\" needs a key of at least {MIN_HASH_KEY_LEN} bytes, but the environment \
                 variable {env} (named by hash_key_env) holds {} bytes",
                key.len()
            ),
        ));
    }
    HashKey::new(key).ok_or_else(|| ConfigError::invalid(&at, "the hash key was refused"))
}

/// Accumulates the policy-wide indexes while rules are compiled.
#[derive(Default)]
struct Compiler {
    path_options: PathOptions,
    paths: Vec<PathPattern>,
    keys: HashMap<Box<str>, Vec<u16>>,
    headers: HashMap<Box<str>, Vec<u16>>,
}

/// Refuses a present but empty list of a selector.
fn non_empty<'a, T>(
    at: &str,
    list: &'a Option<Vec<T>>,
    max: usize,
) -> Result<Option<&'a [T]>, ConfigError> {
    match list.as_deref() {
        None => Ok(None),
        Some([]) => Err(ConfigError::invalid(
            at,
            "is an empty list, which would select nothing; omit the key instead",
        )),
        Some(items) => {
            check_len(at, items, max)?;
            Ok(Some(items))
        }
    }
}

fn add_rule(index: &mut HashMap<Box<str>, Vec<u16>>, key: &str, rule: u16) {
    let rules = index.entry(key.into()).or_default();
    if rules.last() != Some(&rule) {
        rules.push(rule);
    }
}

impl Compiler {
    fn rule(&mut self, at: &str, index: u16, rc: &MaskRuleConfig) -> Result<Rule, ConfigError> {
        let directions =
            match rc.directions.as_deref() {
                None => Direction::Request.bit() | Direction::Response.bit(),
                Some([]) => return Err(ConfigError::invalid(
                    format!("{at}.directions"),
                    "is an empty list, which would mask nothing; omit the key for both directions",
                )),
                Some(list) => list.iter().fold(0, |bits, d| bits | d.bit()),
            };
        let scope = compile_scope_with(at, scope_lists!(rc), &self.path_options)?;
        let except_at = format!("{at}.except_principals");
        let except_principals = match rc.except_principals.as_deref() {
            None => Box::default(),
            Some([]) => {
                return Err(ConfigError::invalid(
                    except_at,
                    "is an empty list, which would except nobody; omit the key instead",
                ))
            }
            Some(list) => compile_principals(&except_at, list)?,
        };

        let paths_at = format!("{at}.json_paths");
        let json_paths = non_empty(&paths_at, &rc.json_paths, MAX_JSON_PATHS)?;
        for (j, text) in json_paths.unwrap_or_default().iter().enumerate() {
            let pattern = PathPattern::parse(&format!("{paths_at}[{j}]"), text, index)?;
            self.paths.push(pattern);
        }

        let keys_at = format!("{at}.json_keys");
        let json_keys = non_empty(&keys_at, &rc.json_keys, MAX_JSON_KEYS)?;
        let mut lower = String::new();
        for (j, key) in json_keys.unwrap_or_default().iter().enumerate() {
            if key.is_empty() {
                return Err(ConfigError::invalid(format!("{keys_at}[{j}]"), "is empty"));
            }
            if key.len() > MAX_NAME_LEN {
                return Err(ConfigError::invalid(
                    format!("{keys_at}[{j}]"),
                    format!("is longer than {MAX_NAME_LEN} bytes"),
                ));
            }
            lowercase_into(key, &mut lower);
            add_rule(&mut self.keys, &lower, index);
        }

        let detectors_at = format!("{at}.detectors");
        let detectors = non_empty(&detectors_at, &rc.detectors, MAX_DETECTOR_ENTRIES)?
            .unwrap_or_default()
            .iter()
            .fold(0u16, |bits, d| bits | d.bit());

        let patterns_at = format!("{at}.patterns");
        let mut patterns = Vec::new();
        let mut pattern_names = UniqueNames::within_rule(&patterns_at);
        for (j, p) in non_empty(&patterns_at, &rc.patterns, MAX_PATTERNS)?
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            pattern_names.check(j, &p.name)?;
            patterns.push(compile_regex(
                &format!("{patterns_at}[{j}].regex"),
                &p.regex,
            )?);
        }

        let headers_at = format!("{at}.headers");
        let headers = non_empty(&headers_at, &rc.headers, MAX_HEADERS)?;
        for (j, name) in headers.unwrap_or_default().iter().enumerate() {
            let name = header_name(&format!("{headers_at}[{j}]"), name)?;
            add_rule(&mut self.headers, &name, index);
        }

        if json_paths.is_none()
            && json_keys.is_none()
            && detectors == 0
            && patterns.is_empty()
            && headers.is_none()
        {
            return Err(ConfigError::invalid(
                at,
                "selects nothing: set at least one of json_paths, json_keys, detectors, patterns or headers",
            ));
        }

        Ok(Rule {
            name: rc.name.as_str().into(),
            directions,
            scope,
            except_principals,
            has_paths: json_paths.is_some(),
            has_keys: json_keys.is_some(),
            detectors,
            patterns: patterns.into(),
            has_headers: headers.is_some(),
            strategy: compile_strategy(at, rc)?,
        })
    }
}

fn compile_strategy(at: &str, rc: &MaskRuleConfig) -> Result<Strategy, ConfigError> {
    let kind = rc.strategy;
    if kind != StrategyKind::Redact && rc.redact_token.is_some() {
        return Err(ConfigError::invalid(
            format!("{at}.redact_token"),
            format!(
                "only applies to strategy \"redact\", but this rule's strategy is {:?}",
                kind.as_str()
            ),
        ));
    }
    if kind != StrategyKind::Partial && rc.keep_last.is_some() {
        return Err(ConfigError::invalid(
            format!("{at}.keep_last"),
            format!(
                "only applies to strategy \"partial\", but this rule's strategy is {:?}{}",
                kind.as_str(),
                if kind == StrategyKind::Redact {
                    " (the default); set \"strategy\": \"partial\""
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(match kind {
        StrategyKind::Redact => {
            let token = rc.redact_token.as_deref().unwrap_or(DEFAULT_REDACT_TOKEN);
            let token_at = format!("{at}.redact_token");
            if token.is_empty() {
                return Err(ConfigError::invalid(
                    token_at,
                    "is empty; use strategy \"remove\" to delete values",
                ));
            }
            if token.len() > MAX_NAME_LEN {
                return Err(ConfigError::invalid(
                    token_at,
                    format!("is longer than {MAX_NAME_LEN} bytes"),
                ));
            }
            if token.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    token_at,
                    "contains control characters (it must be valid in a header value)",
                ));
            }
            Strategy::Redact(token.into())
        }
        StrategyKind::Partial => {
            let keep = rc.keep_last.unwrap_or(DEFAULT_KEEP_LAST);
            if keep > MAX_KEEP_LAST {
                return Err(ConfigError::invalid(
                    format!("{at}.keep_last"),
                    format!("{keep} is out of range: between 0 and {MAX_KEEP_LAST}"),
                ));
            }
            Strategy::Partial {
                keep_last: usize::try_from(keep).unwrap_or(0),
            }
        }
        StrategyKind::Hash => Strategy::Hash,
        StrategyKind::Remove => Strategy::Remove,
    })
}

fn compile_regex(at: &str, text: &str) -> Result<Regex, ConfigError> {
    if text.is_empty() {
        return Err(ConfigError::invalid(at, "is empty"));
    }
    if text.len() > MAX_REGEX_LEN {
        return Err(ConfigError::invalid(
            at,
            format!("is longer than {MAX_REGEX_LEN} bytes"),
        ));
    }
    let re = RegexBuilder::new(text)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            ConfigError::invalid(
                at,
                format!("is not a valid regex: {}", e.to_string().replace('\n', " ")),
            )
        })?;
    if re.is_match("") {
        return Err(ConfigError::invalid(
            at,
            "matches the empty string, so it would match everywhere",
        ));
    }
    Ok(re)
}

fn header_name(at: &str, text: &str) -> Result<String, ConfigError> {
    if text.is_empty() || !text.chars().all(is_token_char) {
        return Err(ConfigError::invalid(
            at,
            format!(
                "{text:?} is not an HTTP header name (an RFC 9110 token; pseudo-headers such as \
                 `:authority` cannot be masked)"
            ),
        ));
    }
    if text.len() > MAX_NAME_LEN {
        return Err(ConfigError::invalid(
            at,
            format!("is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    Ok(text.to_ascii_lowercase())
}
