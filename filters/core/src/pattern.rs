//! String and path patterns, compiled once from config.
//!
//! Wildcards follow Istio's AuthorizationPolicy where Istio has one (`*`, `prefix*`,
//! `*suffix`) so policies port over unchanged; paths add a segment glob.

/// Longest pattern accepted in config. Bounds per-request matching work.
pub const MAX_PATTERN_LEN: usize = 1024;

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_PATTERN_LEN} bytes")]
    TooLong,
    #[error("has `*` in the middle; only `*`, `prefix*` and `*suffix` are supported here")]
    InnerWildcard,
    #[error("must start with `/` (or be a `*` pattern)")]
    NotAbsolute,
    #[error("uses `**` inside a segment; `**` must be a whole path segment")]
    DoubleStarInSegment,
}

/// A string pattern: exact, prefix (`abc*`), suffix (`*abc`) or any (`*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StringPattern {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl StringPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong);
        }
        if text == "*" {
            return Ok(Self::Any);
        }
        let pattern = if let Some(rest) = text.strip_prefix('*') {
            Self::Suffix(rest.into())
        } else if let Some(rest) = text.strip_suffix('*') {
            Self::Prefix(rest.into())
        } else {
            Self::Exact(text.into())
        };
        match &pattern {
            Self::Exact(s) | Self::Prefix(s) | Self::Suffix(s) if s.contains('*') => {
                Err(PatternError::InnerWildcard)
            }
            _ => Ok(pattern),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => value == &**s,
            Self::Prefix(s) => value.starts_with(&**s),
            Self::Suffix(s) => value.ends_with(&**s),
        }
    }

    /// ASCII case-insensitive match; the pattern must already be lowercase.
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        let v = value.as_bytes();
        match self {
            Self::Any => true,
            Self::Exact(s) => v.eq_ignore_ascii_case(s.as_bytes()),
            Self::Prefix(s) => v
                .get(..s.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(s.as_bytes())),
            Self::Suffix(s) => v
                .len()
                .checked_sub(s.len())
                .and_then(|start| v.get(start..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(s.as_bytes())),
        }
    }

    /// Applies `f` to the literal part, keeping the wildcard shape.
    pub fn map_literal(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            Self::Any => Self::Any,
            Self::Exact(s) => Self::Exact(f(&s).into()),
            Self::Prefix(s) => Self::Prefix(f(&s).into()),
            Self::Suffix(s) => Self::Suffix(f(&s).into()),
        }
    }
}

/// A request-path pattern.
///
/// - `/exact` matches that path only;
/// - `/api/*` (a single trailing `*`) matches every path starting with `/api/`, as in Istio;
/// - `*.png` (a single leading `*`) matches by suffix, as in Istio; `*` matches any path;
/// - anything else with wildcards is a segment glob: `*` matches within one segment,
///   a `**` segment matches any number of segments: `/users/*/orders/**`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathPattern {
    Simple(StringPattern),
    Glob(Box<[GlobSegment]>),
}

/// One `/`-separated segment of a path glob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GlobSegment {
    /// `**`: zero or more whole segments.
    AnySegments,
    /// A segment text where `*` matches any run of characters other than `/`.
    Pattern(Box<str>),
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong);
        }
        if let Ok(simple) = StringPattern::parse(text) {
            if !matches!(simple, StringPattern::Any | StringPattern::Suffix(_))
                && !text.starts_with('/')
            {
                return Err(PatternError::NotAbsolute);
            }
            return Ok(Self::Simple(simple));
        }
        if !text.starts_with('/') {
            return Err(PatternError::NotAbsolute);
        }
        let segments = text
            .split('/')
            .skip(1)
            .map(|segment| match segment {
                "**" => Ok(GlobSegment::AnySegments),
                s if s.contains("**") => Err(PatternError::DoubleStarInSegment),
                s => Ok(GlobSegment::Pattern(s.into())),
            })
            .collect::<Result<Box<[_]>, _>>()?;
        Ok(Self::Glob(segments))
    }

    /// The same pattern with its literal text ASCII-lowercased, for policies
    /// that match paths case-insensitively (request paths are folded too).
    pub fn to_ascii_lowercase(&self) -> Self {
        match self {
            Self::Simple(p) => Self::Simple(p.clone().map_literal(str::to_ascii_lowercase)),
            Self::Glob(segments) => Self::Glob(
                segments
                    .iter()
                    .map(|s| match s {
                        GlobSegment::AnySegments => GlobSegment::AnySegments,
                        GlobSegment::Pattern(t) => {
                            GlobSegment::Pattern(t.to_ascii_lowercase().into())
                        }
                    })
                    .collect(),
            ),
        }
    }

    /// The exact path this pattern matches, if it matches only one.
    pub fn as_exact(&self) -> Option<&str> {
        match self {
            Self::Simple(StringPattern::Exact(s)) => Some(s),
            _ => None,
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Simple(p) => p.matches(path),
            Self::Glob(segments) => match path.strip_prefix('/') {
                Some(rest) => glob_segments_match(segments, rest),
                None => false,
            },
        }
    }
}

/// Matches path segments against glob segments; `**` is the only multi-segment
/// wildcard, so the classic greedy algorithm with one backtrack point is exact and
/// runs in O(segments × pattern segments) at worst.
fn glob_segments_match(pattern: &[GlobSegment], path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    let (mut p, mut s) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while s < segments.len() {
        match (pattern.get(p), segments.get(s)) {
            (Some(GlobSegment::AnySegments), _) => {
                backtrack = Some((p, s));
                p = p.saturating_add(1);
            }
            (Some(GlobSegment::Pattern(g)), Some(seg)) if wildcard_match(g, seg) => {
                p = p.saturating_add(1);
                s = s.saturating_add(1);
            }
            _ => match backtrack {
                Some((bp, bs)) => {
                    p = bp.saturating_add(1);
                    s = bs.saturating_add(1);
                    backtrack = Some((bp, s));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|g| *g == GlobSegment::AnySegments))
}

/// `*` matches any run of bytes within one segment (greedy with one backtrack
/// point: linear in practice, O(n·m) at worst, both bounded by config and headers).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match (p.get(pi), t.get(ti)) {
            (Some(b'*'), _) => {
                star = Some((pi, ti));
                pi = pi.saturating_add(1);
            }
            (Some(pc), Some(tc)) if pc == tc => {
                pi = pi.saturating_add(1);
                ti = ti.saturating_add(1);
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp.saturating_add(1);
                    ti = st.saturating_add(1);
                    star = Some((sp, ti));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_patterns_match_as_istio_does() {
        let cases = [
            ("*", "anything", true),
            ("frontend", "frontend", true),
            ("frontend", "frontend2", false),
            ("front*", "frontend", true),
            ("front*", "back", false),
            ("*end", "frontend", true),
            ("*end", "endpoint", false),
        ];
        for (pattern, value, want) in cases {
            let p = StringPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(value), want, "{pattern} vs {value}");
        }
    }

    #[test]
    fn case_insensitive_matching_compares_ascii_only() {
        let p = StringPattern::parse("*.example.com").unwrap();
        assert!(p.matches_ignore_case("API.Example.COM"));
        assert!(!p.matches_ignore_case("example.com"));
        let p = StringPattern::parse("api.*").unwrap();
        assert!(p.matches_ignore_case("API.internal"));
        assert!(!p.matches_ignore_case("ap"));
    }

    #[test]
    fn bad_string_patterns_are_refused() {
        assert_eq!(StringPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(
            StringPattern::parse("a*b"),
            Err(PatternError::InnerWildcard)
        );
        assert_eq!(StringPattern::parse("**"), Err(PatternError::InnerWildcard));
        assert_eq!(
            StringPattern::parse(&"a".repeat(MAX_PATTERN_LEN + 1)),
            Err(PatternError::TooLong)
        );
    }

    #[test]
    fn path_patterns_match_exact_prefix_suffix_and_glob() {
        let cases = [
            ("/healthz", "/healthz", true),
            ("/healthz", "/healthz/x", false),
            ("/api/*", "/api/v1/users", true),
            ("/api/*", "/apix", false),
            ("*.png", "/img/a.png", true),
            ("*", "/", true),
            ("/users/*/orders", "/users/42/orders", true),
            ("/users/*/orders", "/users/42/43/orders", false),
            ("/users/*/orders", "/users//orders", true),
            ("/static/**/*.js", "/static/a/b/c.js", true),
            ("/static/**/*.js", "/static/c.js", true),
            ("/static/**/*.js", "/static/a/c.css", false),
            ("/**/admin", "/admin", true),
            ("/**/admin", "/x/y/admin", true),
            ("/**/admin", "/x/y/admin/z", false),
            ("/v*/items/*", "/v2/items/9", true),
            ("/v*/items/*", "/v2/items/9/x", false),
            ("/a/**", "/a", true),
            ("/a/**", "/a/b/c", true),
            ("/a/**", "/b", false),
        ];
        for (pattern, path, want) in cases {
            let p = PathPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(path), want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn bad_path_patterns_are_refused() {
        assert_eq!(PathPattern::parse("api/*"), Err(PatternError::NotAbsolute));
        assert_eq!(PathPattern::parse("api"), Err(PatternError::NotAbsolute));
        assert_eq!(
            PathPattern::parse("/a/x**/b"),
            Err(PatternError::DoubleStarInSegment)
        );
        assert_eq!(PathPattern::parse(""), Err(PatternError::Empty));
    }

    #[test]
    fn pathological_globs_finish() {
        let p = PathPattern::parse("/**/a*a*a*a*a*b/**/c").unwrap();
        let path = format!("/{}", ["aaaaaaaaaaaaaaaaaaaaaaaa"; 200].join("/"));
        assert!(!p.matches(&path));
    }
}
