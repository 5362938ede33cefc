//! The compiled identity policy: built once in `on_configure`, then evaluated
//! per request without parsing, allocation aside from one small candidate list.

use hashbrown::HashMap;

use super::config::{
    Action, DetailLevel, IdentityConfig, Mode, RuleConfig, TlsVersionConfig, UnusableIdentityAction,
};
use super::decision::{DecidedBy, Decision, Reason};
use super::facts::{IdentitySource, Peer, RequestInfo, TlsVersion, Transport, UnusableIdentity};
use super::index::KeyIndex;
use super::xfcc;
use crate::config::{check_config_version, check_len, parse_json, ConfigError, UniqueNames};
use crate::path::{canonicalize, PathOptions, PathRejection};
use crate::pattern::{GlobSegment, PathPattern, StringPattern};
use crate::scope::{
    compile_condition, compile_scope_with, namespace_pattern, principal_pattern, scope_lists,
    trust_domain_pattern, Condition, RequestScope, RequestView, ScopeLists, MAX_LIST_ENTRIES,
};
use crate::spiffe::SpiffeId;

/// Most rules a policy may hold.
pub const MAX_RULES: usize = 50_000;
pub use crate::config::MAX_NAME_LEN;

/// What [`IdentityPolicy::judge`] decided about one request.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub peer: Peer,
    pub decision: Decision,
    /// The canonical `:path` to forward when it differs from the one received.
    pub forwarded_path: Option<String>,
}

/// Decides who the caller is. `read_xfcc` is called for a direct mTLS peer;
/// it returns the XFCC header and this proxy's own URI SAN. The header's last
/// element, which this proxy appended about the peer, must establish that the
/// peer certificate carries exactly one URI SAN (the host reports only the
/// first): when it cannot ([`xfcc::PeerUris`]), the identity is unusable.
/// The header names the caller only when `is_trusted_gateway` says the
/// direct peer is a trusted gateway. A plaintext caller can never name an
/// identity this way; on a waypoint the HBONE peer's identity comes from
/// filter state, which carries every URI SAN itself.
pub fn resolve_peer<F>(
    transport: Transport,
    read_xfcc: F,
    is_trusted_gateway: impl Fn(&SpiffeId) -> bool,
) -> Peer
where
    F: FnOnce() -> (Option<String>, Option<String>),
{
    let direct = match &transport {
        Transport::Mtls {
            identity: Some(id), ..
        } => id.clone(),
        Transport::Plaintext
        | Transport::Tls { .. }
        | Transport::Mtls { identity: None, .. }
        | Transport::Hbone { .. } => return Peer::from_certificate(transport),
    };
    let (header, local) = read_xfcc();
    match xfcc::peer_certificate_uris(header.as_deref(), direct.as_str(), local.as_deref()) {
        xfcc::PeerUris::One => {}
        xfcc::PeerUris::Several | xfcc::PeerUris::Unknown => {
            return Peer {
                transport,
                identity: None,
                source: IdentitySource::Certificate,
                unusable: Some(UnusableIdentity::PeerCertificate),
            }
        }
    }
    if !is_trusted_gateway(&direct) {
        return Peer::from_certificate(transport);
    }
    let (identity, unusable) =
        match xfcc::identity_from_gateway(header.as_deref(), &direct, local.as_deref()) {
            Ok(id) => (Some(id), None),
            Err(e) => (None, Some(UnusableIdentity::Gateway(e))),
        };
    Peer {
        transport,
        identity,
        source: IdentitySource::Gateway(direct),
        unusable,
    }
}

/// A validated, indexed identity policy.
#[derive(Debug)]
pub struct IdentityPolicy {
    config_version: Option<String>,
    mode: Mode,
    default_action: Action,
    transport: TransportRequirement,
    overrides: Vec<TransportOverride>,
    trusted_gateways: Vec<StringPattern>,
    on_unusable_identity: UnusableIdentityAction,
    paths: PathOptions,
    deny_status: u16,
    detail: DetailLevel,
    rules: Vec<Rule>,
    index: RuleIndex,
    warnings: Vec<String>,
    shadow: Option<Box<IdentityPolicy>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TransportRequirement {
    require_mtls: bool,
    min_tls_version: Option<TlsVersion>,
}

#[derive(Debug)]
struct TransportOverride {
    name: Box<str>,
    scope: RequestScope,
    requirement: TransportRequirement,
}

#[derive(Debug)]
struct Rule {
    name: Box<str>,
    action: Action,
    peer: PeerMatch,
    scope: RequestScope,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct PeerMatch {
    principals: Condition<StringPattern>,
    namespaces: Condition<StringPattern>,
    trust_domains: Condition<StringPattern>,
}

impl PeerMatch {
    fn matches(&self, identity: Option<&SpiffeId>) -> bool {
        self.principals
            .check(identity.map(SpiffeId::as_str), |p, v| p.matches(v))
            && self
                .namespaces
                .check(identity.and_then(SpiffeId::namespace), |p, v| p.matches(v))
            && self
                .trust_domains
                .check(identity.map(SpiffeId::trust_domain), |p, v| p.matches(v))
    }
}

#[derive(Debug, Default)]
struct RuleIndex {
    principal: KeyIndex,
    namespace: KeyIndex,
    trust_domain: KeyIndex,
    path: KeyIndex,
    /// Rules whose path globs all start with a literal segment, by that
    /// segment (`/internal/*/secret/**` under `internal`).
    first_segment: HashMap<Box<str>, Vec<u32>>,
    /// Rules with no indexable attribute: checked for every request.
    unindexed: Vec<u32>,
}

impl IdentityPolicy {
    /// Parses and compiles plugin JSON. This is the whole validation: the filter
    /// and `meshguard validate` both call it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::compile(parse_json(bytes)?)
    }

    pub fn compile(mut config: IdentityConfig) -> Result<Self, ConfigError> {
        let shadow = match config.shadow.take() {
            None => None,
            Some(candidate) if candidate.shadow.is_some() => {
                return Err(ConfigError::invalid(
                    "shadow.shadow",
                    "a shadow policy cannot have a shadow of its own",
                ))
            }
            Some(mut candidate) => {
                // One reading of every request: the shadow judges the path the
                // enforced policy canonicalized, so it cannot canonicalize another way.
                let enforced = config.path_normalization.unwrap_or_default();
                match candidate.path_normalization {
                    Some(shadow) if shadow != enforced => {
                        return Err(ConfigError::invalid(
                            "shadow.path_normalization",
                            format!(
                                "{} differs from the enforced policy's {}: both judge one canonical path",
                                shadow.as_str(),
                                enforced.as_str()
                            ),
                        ))
                    }
                    _ => candidate.path_normalization = Some(enforced),
                }
                Some(Box::new(
                    Self::compile(*candidate).map_err(|e| e.within("shadow"))?,
                ))
            }
        };
        let mut warnings = Vec::new();
        check_config_version(config.config_version.as_deref())?;
        let paths = PathOptions {
            normalization: config.path_normalization.unwrap_or_default(),
            case_insensitive: config.path_case_insensitive,
        };
        let transport = TransportRequirement {
            require_mtls: config.transport.require_mtls,
            min_tls_version: config.transport.min_tls_version.map(tls_version),
        };
        check_len(
            "transport.overrides",
            &config.transport.overrides,
            MAX_LIST_ENTRIES,
        )?;
        let mut override_names = UniqueNames::new("transport.overrides");
        let mut overrides = Vec::with_capacity(config.transport.overrides.len());
        for (i, o) in config.transport.overrides.iter().enumerate() {
            let at = format!("transport.overrides[{i}]");
            override_names.check(i, &o.name)?;
            if o.require_mtls.is_none() && o.min_tls_version.is_none() {
                return Err(ConfigError::invalid(
                    at,
                    "sets neither require_mtls nor min_tls_version, so it changes nothing",
                ));
            }
            overrides.push(TransportOverride {
                name: o.name.as_str().into(),
                scope: compile_scope_with(
                    &at,
                    ScopeLists {
                        paths: &o.paths,
                        not_paths: &None,
                        methods: &o.methods,
                        not_methods: &None,
                        hosts: &o.hosts,
                        not_hosts: &None,
                    },
                    &paths,
                )?,
                requirement: TransportRequirement {
                    require_mtls: o.require_mtls.unwrap_or(transport.require_mtls),
                    min_tls_version: o
                        .min_tls_version
                        .map(tls_version)
                        .or(transport.min_tls_version),
                },
            });
        }

        check_len(
            "identity.trusted_gateways",
            &config.identity.trusted_gateways,
            MAX_LIST_ENTRIES,
        )?;
        let trusted_gateways = config
            .identity
            .trusted_gateways
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let at = format!("identity.trusted_gateways[{i}]");
                match principal_pattern(&at, text)? {
                    StringPattern::Any => Err(ConfigError::invalid(
                        at,
                        "\"*\" would let every mTLS peer name any caller through XFCC; list the gateway identities",
                    )),
                    p => Ok(p),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;

        if !(400..=599).contains(&config.deny_response.status) {
            return Err(ConfigError::invalid(
                "deny_response.status",
                format!(
                    "{} is not an HTTP error status (400-599)",
                    config.deny_response.status
                ),
            ));
        }

        check_len("rules", &config.rules, MAX_RULES)?;
        let mut rules = Vec::with_capacity(config.rules.len());
        let mut names = UniqueNames::new("rules");
        for (i, rc) in config.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            names.check(i, &rc.name)?;
            rules.push(compile_rule(&at, rc, &paths)?);
        }
        check_rule_conflicts(&rules, &mut warnings)?;
        let plaintext_somewhere =
            !transport.require_mtls || overrides.iter().any(|o| !o.requirement.require_mtls);
        if plaintext_somewhere {
            for (i, r) in rules.iter().enumerate() {
                if r.action == Action::Deny && r.peer.has_positive_identity_condition() {
                    warnings.push(format!(
                        "rules[{i}] ({:?}): denies by peer identity while plaintext is accepted \
                         (transport.require_mtls or an override is false); a plaintext caller has \
                         no identity and is not matched by this rule",
                        r.name
                    ));
                }
            }
        }

        let on_unusable_identity = config.identity.on_unusable_identity;
        if on_unusable_identity == UnusableIdentityAction::TreatAsAnonymous {
            for (i, r) in rules.iter().enumerate() {
                if r.action == Action::Deny && r.peer.has_positive_identity_condition() {
                    warnings.push(format!(
                        "rules[{i}] ({:?}): denies by peer identity while \
                         identity.on_unusable_identity is treat_as_anonymous; a caller whose \
                         certificate or gateway XFCC is unusable has no identity and is not \
                         matched by this rule",
                        r.name
                    ));
                }
            }
        }
        if paths.normalization == crate::path::PathNormalization::None {
            warnings.push(
                "path_normalization is NONE: rules match the raw path, so `//`, `..`, `%2e` or `;` \
                 spellings of a denied path are not caught; use it only for upstreams that \
                 resolve nothing"
                    .into(),
            );
        }

        if let Some(candidate) = &shadow {
            warnings.extend(candidate.warnings().iter().map(|w| format!("shadow: {w}")));
        }

        let index = build_index(&rules);
        Ok(Self {
            config_version: config.config_version,
            mode: config.mode,
            default_action: config.default_action,
            transport,
            overrides,
            trusted_gateways,
            on_unusable_identity,
            paths,
            deny_status: config.deny_response.status,
            detail: config.deny_response.detail,
            rules,
            index,
            warnings,
            shadow,
        })
    }

    /// The candidate policy evaluated beside this one, never enforced.
    pub fn shadow(&self) -> Option<&IdentityPolicy> {
        self.shadow.as_deref()
    }

    /// The rule names, in policy order (for per-rule counters).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.name)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How this policy canonicalizes request paths.
    pub fn path_options(&self) -> &PathOptions {
        &self.paths
    }

    /// The decision for a request whose path could not be canonicalized.
    pub fn refuse_path(&self, rejection: PathRejection) -> Decision {
        Decision {
            reason: if rejection == PathRejection::InvalidHost {
                Reason::InvalidHost
            } else if rejection.is_ambiguous() {
                Reason::AmbiguousPath
            } else {
                Reason::InvalidPath
            },
            decided_by: DecidedBy::Path,
        }
    }

    pub fn config_version(&self) -> Option<&str> {
        self.config_version.as_deref()
    }

    pub fn deny_status(&self) -> u16 {
        self.deny_status
    }

    pub fn detail(&self) -> DetailLevel {
        self.detail
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Things that are legal but probably not what the author meant.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether a direct peer may vouch for callers through XFCC.
    pub fn is_trusted_gateway(&self, peer: &SpiffeId) -> bool {
        self.trusted_gateways
            .iter()
            .any(|p| p.matches(peer.as_str()))
    }

    pub fn has_trusted_gateways(&self) -> bool {
        !self.trusted_gateways.is_empty()
    }

    /// Decides who the caller is ([`resolve_peer`]) with this policy's
    /// trusted gateways.
    pub fn resolve_peer<F>(&self, transport: Transport, read_xfcc: F) -> Peer
    where
        F: FnOnce() -> (Option<String>, Option<String>),
    {
        resolve_peer(transport, read_xfcc, |direct| {
            self.is_trusted_gateway(direct)
        })
    }

    /// The whole decision for one request as received: its path canonicalized
    /// (or refused), the caller resolved, the policy evaluated. The filter and
    /// `meshguard explain` both call this, so they cannot disagree.
    /// `request.path` is the raw `:path`.
    pub fn judge<F>(
        &self,
        transport: Transport,
        read_xfcc: F,
        request: &RequestInfo<'_>,
    ) -> Judgement
    where
        F: FnOnce() -> (Option<String>, Option<String>),
    {
        let canonical = canonicalize(request.path, &self.paths);
        let peer = self.resolve_peer(transport, read_xfcc);
        match canonical {
            Ok(forwarded_path) => {
                let canonical_request = RequestInfo {
                    path: forwarded_path.as_deref().unwrap_or(request.path),
                    ..*request
                };
                let decision = self.evaluate(&peer, &canonical_request);
                Judgement {
                    peer,
                    decision,
                    forwarded_path,
                }
            }
            Err(rejection) => Judgement {
                peer,
                decision: self.refuse_path(rejection),
                forwarded_path: None,
            },
        }
    }

    /// The decision on a request whose path was already canonicalized (or
    /// refused) under this policy's path options: what a pipeline that reads
    /// the request once hands over.
    pub fn decide(&self, peer: &Peer, request: Result<RequestInfo<'_>, PathRejection>) -> Decision {
        match request {
            Ok(request) => self.evaluate(peer, &request),
            Err(rejection) => self.refuse_path(rejection),
        }
    }

    /// Evaluates a request: transport first, then deny rules, allow rules and
    /// the default action. Deny wins over allow regardless of rule order.
    pub fn evaluate(&self, peer: &Peer, request: &RequestInfo<'_>) -> Decision {
        let view = RequestView::with(request, &self.paths);
        let (requirement, source) = self
            .overrides
            .iter()
            .enumerate()
            .find(|(_, o)| o.scope.matches(&view))
            .map_or((self.transport, DecidedBy::Transport), |(i, o)| {
                (o.requirement, DecidedBy::TransportOverride(i))
            });
        if requirement.require_mtls && !peer.transport.is_mtls() {
            return Decision {
                reason: Reason::MtlsRequired,
                decided_by: source,
            };
        }
        // The floor applies to TLS connections; whether plaintext is acceptable
        // is `require_mtls`'s call alone (so a plaintext probe override works).
        if let (Some(min), Some(version)) =
            (requirement.min_tls_version, peer.transport.tls_version())
        {
            if version < min {
                return Decision {
                    reason: Reason::TlsVersionTooLow,
                    decided_by: source,
                };
            }
        }

        if let (Some(unusable), UnusableIdentityAction::Deny) =
            (peer.unusable, self.on_unusable_identity)
        {
            return Decision {
                reason: match unusable {
                    UnusableIdentity::PeerCertificate => Reason::PeerIdentityUnusable,
                    UnusableIdentity::Gateway(_) => Reason::GatewayIdentityUnusable,
                },
                decided_by: DecidedBy::IdentitySource,
            };
        }

        let identity = peer.identity.as_ref();
        let mut first_allow = None;
        for i in self.candidates(identity, &view.path) {
            let Some(rule) = self.rules.get(i as usize) else {
                continue;
            };
            if !(rule.peer.matches(identity) && rule.scope.matches(&view)) {
                continue;
            }
            match rule.action {
                Action::Deny => {
                    return Decision {
                        reason: Reason::DeniedByRule,
                        decided_by: DecidedBy::Rule(i as usize),
                    }
                }
                Action::Allow => {
                    first_allow.get_or_insert(i as usize);
                }
            }
        }
        match (first_allow, self.default_action) {
            (Some(i), _) => Decision {
                reason: Reason::AllowedByRule,
                decided_by: DecidedBy::Rule(i),
            },
            (None, Action::Allow) => Decision {
                reason: Reason::DefaultAllow,
                decided_by: DecidedBy::Default,
            },
            (None, Action::Deny) => Decision {
                reason: Reason::NoMatchingRule,
                decided_by: DecidedBy::Default,
            },
        }
    }

    /// Rules that could match, in policy order, each once.
    fn candidates(&self, identity: Option<&SpiffeId>, path: &str) -> Vec<u32> {
        let mut out = Vec::new();
        if let Some(id) = identity {
            self.index.principal.collect(id.as_str(), &mut out);
            if let Some(ns) = id.namespace() {
                self.index.namespace.collect(ns, &mut out);
            }
            self.index.trust_domain.collect(id.trust_domain(), &mut out);
        }
        self.index.path.collect(path, &mut out);
        if let Some(rules) = self.index.first_segment.get(first_segment(path)) {
            out.extend_from_slice(rules);
        }
        out.extend_from_slice(&self.index.unindexed);
        out.sort_unstable();
        out.dedup();
        out
    }

    #[cfg(test)]
    pub(crate) fn candidates_for_test(&self, identity: Option<&SpiffeId>, path: &str) -> Vec<u32> {
        self.candidates(identity, path)
    }

    /// A name for what decided, for logs and `meshguard explain`.
    pub fn describe(&self, by: DecidedBy) -> String {
        match by {
            DecidedBy::Rule(i) => match self.rules.get(i) {
                Some(r) => format!("rules[{i}] {:?}", r.name),
                None => format!("rules[{i}]"),
            },
            DecidedBy::TransportOverride(i) => match self.overrides.get(i) {
                Some(o) => format!("transport.overrides[{i}] {:?}", o.name),
                None => format!("transport.overrides[{i}]"),
            },
            DecidedBy::Transport => "transport".into(),
            DecidedBy::Default => "default_action".into(),
            DecidedBy::Path => "path_normalization".into(),
            DecidedBy::IdentitySource => "identity.on_unusable_identity".into(),
        }
    }

    /// The bare rule or override name, if a named entry decided.
    pub fn rule_name(&self, by: DecidedBy) -> Option<&str> {
        match by {
            DecidedBy::Rule(i) => self.rules.get(i).map(|r| &*r.name),
            DecidedBy::TransportOverride(i) => self.overrides.get(i).map(|o| &*o.name),
            DecidedBy::Transport
            | DecidedBy::Default
            | DecidedBy::Path
            | DecidedBy::IdentitySource => None,
        }
    }
}

impl PeerMatch {
    fn has_positive_identity_condition(&self) -> bool {
        self.principals.any_of.is_some()
            || self.namespaces.any_of.is_some()
            || self.trust_domains.any_of.is_some()
    }
}

fn tls_version(v: TlsVersionConfig) -> TlsVersion {
    match v {
        TlsVersionConfig::Tls10 => TlsVersion::Tls10,
        TlsVersionConfig::Tls11 => TlsVersion::Tls11,
        TlsVersionConfig::Tls12 => TlsVersion::Tls12,
        TlsVersionConfig::Tls13 => TlsVersion::Tls13,
    }
}

fn compile_rule(at: &str, rc: &RuleConfig, paths: &PathOptions) -> Result<Rule, ConfigError> {
    Ok(Rule {
        name: rc.name.as_str().into(),
        action: rc.action,
        peer: PeerMatch {
            principals: compile_condition(
                at,
                "principals",
                &rc.principals,
                &rc.not_principals,
                principal_pattern,
            )?,
            namespaces: compile_condition(
                at,
                "namespaces",
                &rc.namespaces,
                &rc.not_namespaces,
                namespace_pattern,
            )?,
            trust_domains: compile_condition(
                at,
                "trust_domains",
                &rc.trust_domains,
                &rc.not_trust_domains,
                trust_domain_pattern,
            )?,
        },
        scope: compile_scope_with(at, scope_lists!(rc), paths)?,
    })
}

/// Two rules with the same conditions: with opposite actions the allow rule is
/// dead (deny wins), which is a contradiction; with the same action, a warning.
fn check_rule_conflicts(rules: &[Rule], warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let mut seen: HashMap<(&PeerMatch, &RequestScope), usize> = HashMap::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let Some(first) = seen.insert((&rule.peer, &rule.scope), i) else {
            continue;
        };
        let Some(earlier) = rules.get(first) else {
            continue;
        };
        if earlier.action == rule.action {
            warnings.push(format!(
                "rules[{i}] ({:?}) repeats the conditions of rules[{first}] ({:?})",
                rule.name, earlier.name
            ));
        } else {
            return Err(ConfigError::Contradiction {
                at: format!("rules[{i}]"),
                other: format!("rules[{first}]"),
                problem: "the same conditions with the opposite action; deny always wins, so the allow rule could never apply"
                    .into(),
            });
        }
    }
    Ok(())
}

/// The first segment of a path: `internal` for `/internal/x`, `` for `/`.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or("")
}

/// Where a rule's path patterns can be looked up: a string pattern in the
/// path index, a glob under its literal first segment. `None` when one of
/// them starts with a wildcard segment (then the rule is checked for every
/// request).
enum PathKey<'a> {
    Pattern(&'a StringPattern),
    FirstSegment(&'a str),
}

fn path_key(pattern: &PathPattern) -> Option<PathKey<'_>> {
    match pattern {
        PathPattern::Simple(s) => Some(PathKey::Pattern(s)),
        PathPattern::Glob(segments) => match segments.first() {
            Some(GlobSegment::Pattern(first)) if !first.contains('*') => {
                Some(PathKey::FirstSegment(first))
            }
            _ => None,
        },
    }
}

/// Indexes each rule by its most selective positive attribute.
fn build_index(rules: &[Rule]) -> RuleIndex {
    let mut index = RuleIndex::default();
    for (i, rule) in rules.iter().enumerate() {
        let id = i as u32;
        let path_keys = rule
            .scope
            .paths
            .any_of
            .as_deref()
            .and_then(|paths| paths.iter().map(path_key).collect::<Option<Vec<_>>>());
        let (target, patterns): (&mut KeyIndex, Vec<&StringPattern>) =
            if let Some(list) = rule.peer.principals.any_of.as_deref() {
                (&mut index.principal, list.iter().collect())
            } else if let Some(list) = rule.peer.namespaces.any_of.as_deref() {
                (&mut index.namespace, list.iter().collect())
            } else if let Some(list) = rule.peer.trust_domains.any_of.as_deref() {
                (&mut index.trust_domain, list.iter().collect())
            } else if let Some(keys) = path_keys {
                for key in keys {
                    match key {
                        PathKey::Pattern(p) => index.path.insert(p, id),
                        PathKey::FirstSegment(segment) => {
                            let rules = index.first_segment.entry(segment.into()).or_default();
                            if rules.last() != Some(&id) {
                                rules.push(id);
                            }
                        }
                    }
                }
                continue;
            } else {
                index.unindexed.push(id);
                continue;
            };
        for p in patterns {
            target.insert(p, id);
        }
    }
    index
}
