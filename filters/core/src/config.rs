//! Loading plugin JSON: shared by every filter and by `meshguard validate`, so the
//! CLI and Envoy's log say the same thing about the same config.

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
        ConfigError::Malformed {
            at: if path == "." || path == "?" {
                "config".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| ConfigError::Malformed {
        at: "config".into(),
        message: e.to_string(),
    })?;
    Ok(value)
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
