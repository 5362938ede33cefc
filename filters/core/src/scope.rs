//! Conditions shared by every filter's rules: `X` / `not_X` lists over request
//! attributes (paths, methods, hosts) and peer attributes (principals...), and
//! the compilers that turn config text into them with precise errors.

use std::borrow::Cow;

use crate::config::{check_len, is_token_char, ConfigError};
use crate::path::{escape_non_ascii, match_path, non_canonical_pattern, PathOptions};
use crate::pattern::{PathPattern, PatternError, StringPattern};
use crate::request::RequestInfo;
use crate::spiffe::{check_prefix, normalize_principal_text, parse_trust_domain, SpiffeId};

/// Most entries in one list of a rule.
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// A list of accepted values and a list of excluded ones. `any_of: None` means
/// the attribute is not constrained.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Condition<T> {
    pub any_of: Option<Box<[T]>>,
    pub none_of: Box<[T]>,
}

impl<T> Default for Condition<T> {
    fn default() -> Self {
        Self {
            any_of: None,
            none_of: Box::new([]),
        }
    }
}

impl<T> Condition<T> {
    /// An absent value (no identity, no namespace) never satisfies `any_of` and
    /// is never excluded by `none_of`, as in Istio's `notPrincipals`.
    pub fn check<V: Copy>(&self, value: Option<V>, matches: impl Fn(&T, V) -> bool) -> bool {
        match value {
            None => self.any_of.is_none(),
            Some(v) => {
                self.any_of
                    .as_deref()
                    .is_none_or(|list| list.iter().any(|p| matches(p, v)))
                    && !self.none_of.iter().any(|p| matches(p, v))
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RequestScope {
    pub paths: Condition<PathPattern>,
    /// Upper-case method names, compared ASCII case-insensitively: an upstream
    /// framework that accepts `delete` must not slip past a `DELETE` rule.
    pub methods: Condition<Box<str>>,
    /// Lower-case host patterns, compared ASCII case-insensitively.
    pub hosts: Condition<StringPattern>,
}

/// The request attributes in the form rules compare against.
#[derive(Debug, Clone)]
pub struct RequestView<'a> {
    /// The canonical path without query and `;` parameters (lowercase when
    /// the policy matches paths case-insensitively): [`crate::path`].
    pub path: Cow<'a, str>,
    pub method: &'a str,
    pub host: &'a str,
}

impl RequestScope {
    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        self.paths.check(Some(&*r.path), |p, v| p.matches(v))
            && self
                .methods
                .check(Some(r.method), |m, v| m.eq_ignore_ascii_case(v))
            && self
                .hosts
                .check(Some(r.host), |p, v| p.matches_ignore_case(v))
    }
}

impl<'a> RequestView<'a> {
    /// The view rules compare against under the default path options.
    pub fn of(request: &RequestInfo<'a>) -> Self {
        Self::with(request, &PathOptions::default())
    }

    /// The view rules compare against: `request.path` is already canonical
    /// (the filter canonicalized and forwards it); query, `;` parameters and
    /// port are stripped, case folded where configured.
    pub fn with(request: &RequestInfo<'a>, options: &PathOptions) -> Self {
        let path = match_path(request.path, options.normalization);
        let path = if options.case_insensitive && path.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(path.to_ascii_lowercase())
        } else {
            path
        };
        Self {
            path,
            method: request.method,
            host: request.host_without_port(),
        }
    }
}

/// Scope lists as every config type spells them.
#[derive(Debug, Clone, Copy)]
pub struct ScopeLists<'a> {
    pub paths: &'a Option<Vec<String>>,
    pub not_paths: &'a Option<Vec<String>>,
    pub methods: &'a Option<Vec<String>>,
    pub not_methods: &'a Option<Vec<String>>,
    pub hosts: &'a Option<Vec<String>>,
    pub not_hosts: &'a Option<Vec<String>>,
}

/// The [`ScopeLists`] of a config struct with the six fields `paths`,
/// `not_paths`, `methods`, `not_methods`, `hosts` and `not_hosts`: each rule
/// type repeats them (serde's `flatten` does not work with
/// `deny_unknown_fields`), this reads them alike from any of them.
macro_rules! scope_lists {
    ($config:expr) => {
        $crate::scope::ScopeLists {
            paths: &$config.paths,
            not_paths: &$config.not_paths,
            methods: &$config.methods,
            not_methods: &$config.not_methods,
            hosts: &$config.hosts,
            not_hosts: &$config.not_hosts,
        }
    };
}
pub(crate) use scope_lists;

/// Compiles a set of principal patterns (`spiffe://...`, Istio's form, `*`...).
pub fn compile_principals(at: &str, list: &[String]) -> Result<Box<[StringPattern]>, ConfigError> {
    check_len(at, list, MAX_LIST_ENTRIES)?;
    list.iter()
        .enumerate()
        .map(|(i, text)| principal_pattern(&format!("{at}[{i}]"), text))
        .collect()
}

/// Whether an identity matches any of `patterns`.
pub fn principal_matches(patterns: &[StringPattern], identity: Option<&SpiffeId>) -> bool {
    identity.is_some_and(|id| patterns.iter().any(|p| p.matches(id.as_str())))
}

pub fn principal_pattern(at: &str, text: &str) -> Result<StringPattern, ConfigError> {
    if text.is_empty() {
        return Err(ConfigError::BadPattern {
            at: at.into(),
            value: text.into(),
            source: PatternError::Empty,
        });
    }
    let normalized = normalize_principal_text(text);
    let pattern = StringPattern::parse(&normalized).map_err(|source| ConfigError::BadPattern {
        at: at.into(),
        value: text.into(),
        source,
    })?;
    let bad_id = |source| ConfigError::BadSpiffeId {
        at: at.into(),
        value: text.into(),
        source,
    };
    match &pattern {
        StringPattern::Exact(s) => {
            SpiffeId::parse_uri(s).map_err(bad_id)?;
        }
        StringPattern::Prefix(s) => {
            check_prefix(s).map_err(bad_id)?;
        }
        StringPattern::Suffix(_) | StringPattern::Any => {}
    }
    Ok(pattern)
}

pub fn plain_pattern(at: &str, text: &str) -> Result<StringPattern, ConfigError> {
    StringPattern::parse(text).map_err(|source| ConfigError::BadPattern {
        at: at.into(),
        value: text.into(),
        source,
    })
}

pub fn trust_domain_pattern(at: &str, text: &str) -> Result<StringPattern, ConfigError> {
    let pattern = plain_pattern(at, text)?;
    if let StringPattern::Exact(s) = &pattern {
        parse_trust_domain(s).map_err(|source| ConfigError::BadSpiffeId {
            at: at.into(),
            value: text.into(),
            source,
        })?;
    }
    Ok(pattern)
}

pub fn path_pattern(at: &str, text: &str) -> Result<PathPattern, ConfigError> {
    PathPattern::parse(text).map_err(|source| ConfigError::BadPattern {
        at: at.into(),
        value: text.into(),
        source,
    })
}

pub fn method_name(at: &str, text: &str) -> Result<Box<str>, ConfigError> {
    if text.is_empty() || !text.chars().all(is_token_char) || text.contains('*') {
        return Err(ConfigError::invalid(
            at,
            format!("{text:?} is not an HTTP method name (wildcards are not supported here)"),
        ));
    }
    Ok(text.to_ascii_uppercase().into())
}

pub fn host_pattern(at: &str, text: &str) -> Result<StringPattern, ConfigError> {
    if text.contains(':') {
        return Err(ConfigError::invalid(
            at,
            format!("{text:?}: hosts are matched without their port, so a pattern with `:` never matches; remove the port"),
        ));
    }
    Ok(plain_pattern(at, text)?.map_literal(str::to_ascii_lowercase))
}

/// A Kubernetes namespace pattern: DNS-label characters around the wildcard.
pub fn namespace_pattern(at: &str, text: &str) -> Result<StringPattern, ConfigError> {
    let pattern = plain_pattern(at, text)?;
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '*'))
    {
        return Err(ConfigError::invalid(
            at,
            format!("{text:?} is not a namespace pattern: {c:?} is not allowed (lowercase letters, digits, '-')"),
        ));
    }
    Ok(pattern)
}

/// Compiles a `X` / `not_X` pair, refusing empty lists and entries that are
/// both required and excluded.
pub fn compile_condition<T: PartialEq>(
    at: &str,
    field: &str,
    any_of: &Option<Vec<String>>,
    none_of: &Option<Vec<String>>,
    compile: impl Fn(&str, &str) -> Result<T, ConfigError>,
) -> Result<Condition<T>, ConfigError> {
    let compile_list = |name: &str, list: &[String]| -> Result<Box<[T]>, ConfigError> {
        let list_at = format!("{at}.{name}");
        if list.is_empty() {
            return Err(ConfigError::invalid(
                list_at,
                "is an empty list, which would match nothing; omit the key to leave it unconstrained",
            ));
        }
        check_len(&list_at, list, MAX_LIST_ENTRIES)?;
        list.iter()
            .enumerate()
            .map(|(j, text)| compile(&format!("{list_at}[{j}]"), text))
            .collect()
    };
    let not_field = format!("not_{field}");
    let any_of = any_of
        .as_deref()
        .map(|l| compile_list(field, l))
        .transpose()?;
    let none_of = match none_of.as_deref() {
        Some(l) => compile_list(&not_field, l)?,
        None => Box::new([]),
    };
    if let Some(list) = &any_of {
        for (j, excluded) in none_of.iter().enumerate() {
            if let Some(k) = list.iter().position(|p| p == excluded) {
                return Err(ConfigError::Contradiction {
                    at: format!("{at}.{not_field}[{j}]"),
                    other: format!("{at}.{field}[{k}]"),
                    problem: "the same entry is both required and excluded".into(),
                });
            }
        }
    }
    Ok(Condition { any_of, none_of })
}

/// Compiles a rule's scope under the default path options.
pub fn compile_scope(at: &str, lists: ScopeLists<'_>) -> Result<RequestScope, ConfigError> {
    compile_scope_with(at, lists, &PathOptions::default())
}

/// Compiles a rule's scope. Path patterns must be written in the canonical
/// form requests are matched in (a pattern that no canonical path can match
/// would silently never apply); they are lowercased for case-insensitive
/// matching.
pub fn compile_scope_with(
    at: &str,
    lists: ScopeLists<'_>,
    options: &PathOptions,
) -> Result<RequestScope, ConfigError> {
    let paths = |at: &str, text: &str| {
        let escaped = escape_non_ascii(text, options.normalization);
        let text = escaped.as_ref();
        if let Some(canonical) = non_canonical_pattern(text, options) {
            return Err(ConfigError::invalid(
                at,
                format!(
                    "{text:?} is not a canonical path, so no request could match it (paths are matched after {} normalization, without `;` parameters); write {canonical}",
                    options.normalization.as_str()
                ),
            ));
        }
        let pattern = path_pattern(at, text)?;
        Ok(if options.case_insensitive {
            pattern.to_ascii_lowercase()
        } else {
            pattern
        })
    };
    Ok(RequestScope {
        paths: compile_condition(at, "paths", lists.paths, lists.not_paths, paths)?,
        methods: compile_condition(at, "methods", lists.methods, lists.not_methods, method_name)?,
        hosts: compile_condition(at, "hosts", lists.hosts, lists.not_hosts, host_pattern)?,
    })
}
