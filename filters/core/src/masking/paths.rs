//! `json_paths`: JSON Pointers (RFC 6901) with two wildcards, compiled once and
//! matched while walking a document, without building the path of each value.
//!
//! - `/a/b`: member `b` of member `a` of the root (`~0` is `~`, `~1` is `/`);
//!   a segment that is a decimal index (`0`, `12`) also matches that array
//!   element;
//! - `*`: any single member name or array index;
//! - `**`: any number of levels, zero included (`**/password`, `/data/**/token`).
//!
//! Matching is a small NFA per pattern: the set of positions reached is a bit
//! mask (patterns have at most [`MAX_SEGMENTS`] segments), advanced one level
//! per member or element.

use crate::config::ConfigError;

/// Longest `json_paths` entry, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Most segments in one `json_paths` entry.
pub const MAX_SEGMENTS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A member name; `index` is set when the name is also a canonical array index.
    Name {
        name: Box<str>,
        index: Option<usize>,
    },
    /// `*`
    Any,
    /// `**`
    AnyDepth,
}

/// One compiled `json_paths` entry of one rule.
#[derive(Debug, Clone)]
pub(crate) struct PathPattern {
    pub rule: u16,
    segments: Box<[Segment]>,
    /// Bit of the accepting position (`segments.len()`).
    accept: u128,
    /// Bits of the `**` positions.
    any_depth: u128,
}

/// What a child value is reached through.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step<'k> {
    Member(&'k str),
    Element(usize),
}

/// Active NFA state of one pattern: (pattern index, positions mask).
pub(crate) type State = (u32, u128);

fn bit(p: usize) -> u128 {
    u32::try_from(p)
        .ok()
        .and_then(|p| 1u128.checked_shl(p))
        .unwrap_or(0)
}

impl PathPattern {
    pub(crate) fn parse(at: &str, text: &str, rule: u16) -> Result<Self, ConfigError> {
        if text.is_empty() {
            return Err(ConfigError::invalid(at, "is empty"));
        }
        if text.len() > MAX_PATH_LEN {
            return Err(ConfigError::invalid(
                at,
                format!("is longer than {MAX_PATH_LEN} bytes"),
            ));
        }
        let raw: Vec<&str> = if let Some(rest) = text.strip_prefix('/') {
            rest.split('/').collect()
        } else if text == "**" || text.starts_with("**/") {
            text.split('/').collect()
        } else {
            return Err(ConfigError::invalid(
                at,
                format!("{text:?} must start with `/` (a JSON Pointer) or with `**`"),
            ));
        };
        let mut segments: Vec<Segment> = Vec::with_capacity(raw.len());
        for seg in raw {
            let parsed = match seg {
                "**" => Segment::AnyDepth,
                "*" => Segment::Any,
                s if s.contains('*') => {
                    return Err(ConfigError::invalid(
                        at,
                        format!(
                            "{text:?}: `*` and `**` must be whole segments (`/users/*/ssn`), \
                             not part of a name"
                        ),
                    ))
                }
                s => {
                    let name = unescape(s).ok_or_else(|| {
                        ConfigError::invalid(
                            at,
                            format!(
                                "{text:?} has a `~` that is not `~0` (for `~`) or `~1` (for `/`)"
                            ),
                        )
                    })?;
                    let index = array_index(&name);
                    Segment::Name {
                        name: name.into(),
                        index,
                    }
                }
            };
            // `**/**` means the same as `**`.
            if parsed == Segment::AnyDepth && segments.last() == Some(&Segment::AnyDepth) {
                continue;
            }
            segments.push(parsed);
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(ConfigError::invalid(
                at,
                format!("has more than {MAX_SEGMENTS} segments"),
            ));
        }
        if segments.iter().all(|s| *s == Segment::AnyDepth) {
            return Err(ConfigError::invalid(
                at,
                format!(
                    "{text:?} would select the whole document; name a member (`**/password`) \
                     or use `/*` for every top-level member"
                ),
            ));
        }
        let any_depth = segments
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == Segment::AnyDepth)
            .fold(0u128, |m, (p, _)| m | bit(p));
        Ok(Self {
            rule,
            accept: bit(segments.len()),
            any_depth,
            segments: segments.into(),
        })
    }

    /// The positions reached before reading anything (the root).
    pub(crate) fn start(&self) -> u128 {
        self.close(1)
    }

    /// Follows `**` positions, which also match zero levels.
    fn close(&self, mut mask: u128) -> u128 {
        let mut todo = mask & self.any_depth;
        while todo != 0 {
            let p = todo.trailing_zeros() as usize;
            todo ^= bit(p);
            // p < 128; bit(128) is 0.
            let next = bit(p.saturating_add(1));
            if mask & next == 0 {
                mask |= next;
                if self.any_depth & next != 0 {
                    todo |= next;
                }
            }
        }
        mask
    }

    /// The positions reached after reading one more level.
    fn advance(&self, mask: u128, step: Step<'_>) -> u128 {
        let mut next = 0u128;
        let mut todo = mask & !self.accept;
        while todo != 0 {
            let p = todo.trailing_zeros() as usize;
            todo ^= bit(p);
            // p < 128; bit(128) is 0.
            let after = bit(p.saturating_add(1));
            match self.segments.get(p) {
                Some(Segment::AnyDepth) => next |= bit(p),
                Some(Segment::Any) => next |= after,
                Some(Segment::Name { name, index }) => {
                    let hit = match step {
                        Step::Member(key) => **name == *key,
                        Step::Element(i) => *index == Some(i),
                    };
                    if hit {
                        next |= after;
                    }
                }
                None => {}
            }
        }
        self.close(next)
    }
}

/// Advances every state of `frame` (a range of `states`) by one level, pushing
/// the child's states at the end of `states`. Returns the lowest rule index of
/// a pattern that selects the child itself.
pub(crate) fn step(
    patterns: &[PathPattern],
    states: &mut Vec<State>,
    frame: (usize, usize),
    step: Step<'_>,
) -> Option<u16> {
    let mut selected: Option<u16> = None;
    for i in frame.0..frame.1 {
        let Some(&(index, mask)) = states.get(i) else {
            break;
        };
        let Some(pattern) = patterns.get(index as usize) else {
            continue;
        };
        let next = pattern.advance(mask, step);
        if next & pattern.accept != 0 {
            selected = Some(selected.map_or(pattern.rule, |r| r.min(pattern.rule)));
        }
        if next & !pattern.accept != 0 {
            states.push((index, next));
        }
    }
    selected
}

/// RFC 6901 unescaping; `None` for a `~` not followed by `0` or `1`.
fn unescape(segment: &str) -> Option<String> {
    if !segment.contains('~') {
        return Some(segment.to_owned());
    }
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `0` or a decimal without leading zeros, as RFC 6901 writes array indices.
fn array_index(name: &str) -> Option<usize> {
    let canonical = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_digit())
        && (name == "0" || !name.starts_with('0'));
    if canonical {
        name.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pattern` selects the value at `path` (a list of steps).
    fn selects(pattern: &str, path: &[Step<'_>]) -> bool {
        let p = PathPattern::parse("p", pattern, 0).unwrap();
        let patterns = [p];
        let mut states = vec![(0u32, patterns[0].start())];
        let mut frame = (0, 1);
        for (k, s) in path.iter().enumerate() {
            let selected = step(&patterns, &mut states, frame, *s);
            if selected.is_some() {
                return k + 1 == path.len();
            }
            frame = (frame.1, states.len());
        }
        false
    }

    use Step::{Element as E, Member as M};

    #[test]
    fn wildcards_match_keys_indices_and_any_depth() {
        let cases: &[(&str, &[Step<'_>], bool)] = &[
            ("/a/b", &[M("a"), M("b")], true),
            ("/a/b", &[M("a"), M("c")], false),
            ("/a/b", &[M("a")], false),
            ("/users/*/ssn", &[M("users"), E(3), M("ssn")], true),
            ("/users/*/ssn", &[M("users"), M("x"), M("ssn")], true),
            ("/users/*/ssn", &[M("users"), E(3), M("x"), M("ssn")], false),
            ("/users/1/ssn", &[M("users"), E(1), M("ssn")], true),
            ("/users/1/ssn", &[M("users"), E(2), M("ssn")], false),
            ("/users/01/ssn", &[M("users"), E(1), M("ssn")], false),
            ("**/password", &[M("password")], true),
            ("**/password", &[M("a"), E(0), M("b"), M("password")], true),
            ("/**/password", &[M("a"), M("password")], true),
            ("/data/**/token", &[M("data"), M("token")], true),
            (
                "/data/**/token",
                &[M("data"), E(1), M("x"), M("token")],
                true,
            ),
            ("/data/**/token", &[M("other"), M("token")], false),
            ("/a/**", &[M("a")], true),
            ("**/a/**/b", &[M("x"), M("a"), M("y"), M("z"), M("b")], true),
            ("/a~1b/c~0d", &[M("a/b"), M("c~d")], true),
            ("/*", &[M("anything")], true),
            ("/*", &[E(0)], true),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(selects(pattern, path), *want, "{pattern} vs {path:?}");
        }
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        let cases = [
            ("", "is empty"),
            ("a/b", "must start with `/`"),
            ("*/b", "must start with `/`"),
            ("/a*/b", "must be whole segments"),
            ("/a/***", "must be whole segments"),
            ("/a~2", "`~0`"),
            ("/a~", "`~0`"),
            ("**", "whole document"),
            ("/**/**", "whole document"),
        ];
        for (text, want) in cases {
            let err = PathPattern::parse("rules[0].json_paths[0]", text, 0)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("rules[0].json_paths[0]: ") && err.contains(want),
                "{text:?}: {err}"
            );
        }
        let long = format!("/{}", "a/".repeat(MAX_SEGMENTS));
        assert!(PathPattern::parse("p", &long, 0).is_err());
    }
}
