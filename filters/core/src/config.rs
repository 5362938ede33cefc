//! Loading plugin JSON: shared by every filter and by `meshguard validate`, so the
//! CLI and Envoy's log say the same thing about the same config.

use hashbrown::HashMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::pattern::PatternError;
use crate::spiffe::SpiffeIdError;

/// Largest plugin configuration accepted. Istio's `pluginConfig` lives in a CRD,
/// so anything near this size is a mistake rather than a policy.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
/// Whether a filter acts or only reports what it would have done.
pub enum Mode {
    #[default]
    Enforce,
    /// Never blocks; logs and counts what enforce mode would have denied.
    DryRun,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry-run",
        }
    }
}

/// Why a configuration was refused. The `Display` text is what Envoy's log and
/// `meshguard validate` print; `at` is a JSON path such as `rules[2].paths[0]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration is empty: this filter needs a JSON object")]
    Empty,
    #[error("the configuration is {size} bytes, over the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("{at}: {message}")]
    Malformed { at: String, message: String },
    #[error("{at}: {value:?} {source}")]
    BadPattern {
        at: String,
        value: String,
        source: PatternError,
    },
    #[error("{at}: {value:?} is not a valid SPIFFE ID: it {source}")]
    BadSpiffeId {
        at: String,
        value: String,
        source: SpiffeIdError,
    },
    #[error("{at}: {problem}")]
    Invalid { at: String, problem: String },
    #[error("{at}: contradicts {other}: {problem}")]
    Contradiction {
        at: String,
        other: String,
        problem: String,
    },
    #[error("{at}: has {count} entries, over the limit of {max}")]
    TooMany {
        at: String,
        count: usize,
        max: usize,
    },
}

impl ConfigError {
    pub fn invalid(at: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            at: at.into(),
            problem: problem.into(),
        }
    }

    /// The same error located inside the object at `prefix` (a nested
    /// configuration compiled on its own, such as an identity `shadow`).
    pub fn within(self, prefix: &str) -> Self {
        let nest = |at: String| {
            if at == "config" {
                prefix.to_string()
            } else {
                format!("{prefix}.{at}")
            }
        };
        match self {
            Self::Malformed { at, message } => Self::Malformed {
                at: nest(at),
                message,
            },
            Self::BadPattern { at, value, source } => Self::BadPattern {
                at: nest(at),
                value,
                source,
            },
            Self::BadSpiffeId { at, value, source } => Self::BadSpiffeId {
                at: nest(at),
                value,
                source,
            },
            Self::Invalid { at, problem } => Self::Invalid {
                at: nest(at),
                problem,
            },
            Self::Contradiction { at, other, problem } => Self::Contradiction {
                at: nest(at),
                other: nest(other),
                problem,
            },
            Self::TooMany { at, count, max } => Self::TooMany {
                at: nest(at),
                count,
                max,
            },
            other @ (Self::Empty | Self::TooLarge { .. }) => other,
        }
    }
}

/// Deserializes an optional key that, when present, must hold a value:
/// `null` is refused rather than read as absent (`#[serde(default,
/// deserialize_with = "present")]`).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Parses plugin JSON into a filter's config type, reporting the JSON path of
/// the first problem (unknown keys included: every config type refuses them).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::Empty);
    }
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            size: bytes.len(),
            max: MAX_CONFIG_BYTES,
        });
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError::Malformed {
            at: "config".into(),
            message: "expected a JSON object (`{...}`)".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A data error is located by its JSON path; its line/column would point
        // into the re-serialized config the filter parses, not the user's file.
        let mut message = inner.to_string();
        if inner.classify() == serde_json::error::Category::Data {
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
        }
        ConfigError::Malformed {
            at: if path == "." || path == "?" {
                "config".into()
            } else {
                path
            },
            message,
        }
    })?;
    de.end().map_err(|e| ConfigError::Malformed {
        at: "config".into(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// A JSON object parsed strictly: a key repeated in any object is an error
/// (`serde_json::Value` keeps the last one silently, so a reviewer reading the
/// first could approve a config that means something else).
#[derive(Debug, Clone, PartialEq)]
pub struct StrictObject(pub serde_json::Map<String, serde_json::Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_any(StrictVisitor)? {
            serde_json::Value::Object(map) => Ok(Self(map)),
            _ => Err(serde::de::Error::custom("expected a JSON object")),
        }
    }
}

struct StrictValue(serde_json::Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Self)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v)
            .map_or(serde_json::Value::Null, serde_json::Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {key:?} (JSON parsers disagree on which one counts)"
                )));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }
}

/// Longest name (rule, command, override) or `config_version` in any filter.
pub const MAX_NAME_LEN: usize = 256;

/// A rule or command name, or a `config_version`: not blank, bounded, no
/// control characters (they would corrupt log lines).
pub fn check_name(at: &str, name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(ConfigError::invalid(at, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ConfigError::invalid(
            at,
            format!("is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ConfigError::invalid(at, "contains control characters"));
    }
    Ok(())
}

/// The optional `config_version` every filter's configuration has: a name.
pub fn check_config_version(version: Option<&str>) -> Result<(), ConfigError> {
    version.map_or(Ok(()), |v| check_name("config_version", v))
}

/// The names of the entries of one list (rules, commands, overrides...),
/// checked entry by entry: each a valid name ([`check_name`]) and none the
/// name of an earlier entry.
#[derive(Debug)]
pub struct UniqueNames<'a> {
    /// JSON path of the list, such as `rules` or `rules[2].patterns`.
    list: String,
    /// Appended to the duplicate error: where names must be unique.
    within: &'static str,
    first: HashMap<&'a str, usize>,
}

impl<'a> UniqueNames<'a> {
    /// For a list whose names must be unique in the whole configuration.
    pub fn new(list: impl Into<String>) -> Self {
        Self {
            list: list.into(),
            within: "",
            first: HashMap::new(),
        }
    }

    /// For a list inside a rule, whose names need only be unique there.
    pub fn within_rule(list: impl Into<String>) -> Self {
        Self {
            within: " within a rule",
            ..Self::new(list)
        }
    }

    /// Checks `name`, the name of entry `i` of the list.
    pub fn check(&mut self, i: usize, name: &'a str) -> Result<(), ConfigError> {
        let at = format!("{}[{i}].name", self.list);
        check_name(&at, name)?;
        match self.first.insert(name, i) {
            None => Ok(()),
            Some(first) => Err(ConfigError::invalid(
                at,
                format!(
                    "{name:?} is already the name of {}[{first}]; names must be unique{}",
                    self.list, self.within
                ),
            )),
        }
    }
}

/// An RFC 9110 `tchar`: the characters of a method or header name.
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// The name of an environment variable (of the VM's `vmConfig.env`), at most
/// `max` bytes.
pub fn check_env_name(at: &str, name: &str, max: usize) -> Result<(), ConfigError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= max;
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            at,
            format!(
                "{name:?} is not an environment variable name (letters, digits and `_`, not \
                 starting with a digit, at most {max} bytes)"
            ),
        ))
    }
}

/// Rejects lists longer than `max`: per-request work and memory stay bounded.
pub fn check_len<T>(at: &str, items: &[T], max: usize) -> Result<(), ConfigError> {
    if items.len() > max {
        return Err(ConfigError::TooMany {
            at: at.into(),
            count: items.len(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        size: u32,
    }

    #[test]
    fn errors_name_the_json_path_of_the_problem() {
        let cases = [
            (&b"  "[..], "the configuration is empty"),
            (b"{", "config: EOF while parsing an object"),
            (b"[]", "config: expected a JSON object"),
            (b"null", "config: expected a JSON object"),
            (
                br#"{"name": 1, "items": []}"#,
                "name: invalid type: integer `1`",
            ),
            (
                br#"{"name": "a", "items": [{"sise": 1}]}"#,
                "items[0].sise: unknown field `sise`",
            ),
            (
                br#"{"name": "a", "items": []} x"#,
                "config: trailing characters",
            ),
        ];
        for (input, want) in cases {
            let err = parse_json::<Sample>(input).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        let ok = parse_json::<StrictObject>(br#"{"a": {"b": [1, {"c": 2}]}, "d": 1.5}"#).unwrap();
        assert_eq!(
            serde_json::Value::Object(ok.0),
            serde_json::json!({"a": {"b": [1, {"c": 2}]}, "d": 1.5})
        );
        for (input, want) in [
            (&br#"{"a": 1, "a": 2}"#[..], "config: duplicate key \"a\""),
            (br#"{"x": [{"k": 1, "k": 1}]}"#, "x[0]: duplicate key \"k\""),
        ] {
            let err = parse_json::<StrictObject>(input).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn a_repeated_name_points_at_the_entry_that_has_it_first() {
        let mut names = UniqueNames::new("rules");
        names.check(0, "a").unwrap();
        names.check(1, "b").unwrap();
        assert_eq!(
            names.check(2, "a").unwrap_err().to_string(),
            "rules[2].name: \"a\" is already the name of rules[0]; names must be unique"
        );
        assert_eq!(
            names.check(3, " ").unwrap_err().to_string(),
            "rules[3].name: must not be empty"
        );
        let mut patterns = UniqueNames::within_rule("rules[1].patterns");
        patterns.check(0, "p").unwrap();
        assert_eq!(
            patterns.check(1, "p").unwrap_err().to_string(),
            "rules[1].patterns[1].name: \"p\" is already the name of rules[1].patterns[0]; \
             names must be unique within a rule"
        );
    }

    #[test]
    fn environment_variable_names_are_checked() {
        for name in ["A", "_x1", "MESHGUARD_MASK_HASH_KEY"] {
            check_env_name("env", name, 32).unwrap();
        }
        for name in ["", "1KEY", "A-B", "Ä", &"A".repeat(33)] {
            assert_eq!(
                check_env_name("env", name, 32).unwrap_err().to_string(),
                format!(
                    "env: {name:?} is not an environment variable name (letters, digits and `_`, \
                     not starting with a digit, at most 32 bytes)"
                )
            );
        }
    }

    #[test]
    fn oversized_configs_are_refused_before_parsing() {
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        let mut big = big;
        big[0] = b'{';
        assert!(matches!(
            parse_json::<Sample>(&big),
            Err(ConfigError::TooLarge { .. })
        ));
    }
}
