//! Integrity settings that must not come from the config they protect: trusted
//! signing keys, whether a signature is required, the intended version. Istio
//! delivers them through the WasmPlugin's `vmConfig.env`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;

use super::load::{quoted, OnDrift};
use crate::config::ConfigError;

/// `key_id=BASE64_PUBLIC_KEY[,key_id=...]`: the ed25519 keys configs may be signed with.
pub const TRUSTED_KEYS_ENV: &str = "MESHGUARD_TRUSTED_KEYS";
/// `true` refuses unsigned configs (counted as unauthorized load attempts).
pub const REQUIRE_SIGNATURE_ENV: &str = "MESHGUARD_REQUIRE_SIGNATURE";
/// The `config_version` the rendering pipeline intends this workload to run.
pub const INTENDED_VERSION_ENV: &str = "MESHGUARD_INTENDED_VERSION";
/// The fingerprint (hex SHA-256) it intends.
pub const INTENDED_FINGERPRINT_ENV: &str = "MESHGUARD_INTENDED_FINGERPRINT";
/// `report`, `quarantine` or `reject`: overrides `integrity.on_drift`.
pub const ON_DRIFT_ENV: &str = "MESHGUARD_ON_DRIFT";
/// Comma-separated path patterns still served while quarantined.
pub const HEALTH_PATHS_ENV: &str = "MESHGUARD_HEALTH_PATHS";
/// The source of truth, as a JSON object with the keys of `integrity.source_of_truth`.
pub const SOURCE_OF_TRUTH_ENV: &str = "MESHGUARD_SOURCE_OF_TRUTH";
/// Comma-separated key IDs no longer trusted (signatures by them are refused).
pub const REVOKED_KEYS_ENV: &str = "MESHGUARD_REVOKED_KEYS";
/// The lowest `release.serial` a signed config may carry (anti-rollback floor).
pub const MIN_SERIAL_ENV: &str = "MESHGUARD_MIN_SERIAL";

/// Seconds a superseded config instance still serves the connections it
/// served while current (a replaced listener draining); 0 refuses them.
pub const DRAIN_GRACE_ENV: &str = "MESHGUARD_DRAIN_GRACE_SECONDS";
/// Istio's default drain duration (`--drain-time-s 45`).
pub const DEFAULT_DRAIN_GRACE_SECONDS: u64 = 45;
/// Longer than any drain: a grace past it only widens what a replay reaches.
const MAX_DRAIN_GRACE_SECONDS: u64 = 3_600;

/// Every variable [`IntegrityEnv::from_vars`] reads (for `meshguard validate --env`).
pub const ALL_ENV: [&str; 10] = [
    TRUSTED_KEYS_ENV,
    REQUIRE_SIGNATURE_ENV,
    INTENDED_VERSION_ENV,
    INTENDED_FINGERPRINT_ENV,
    ON_DRIFT_ENV,
    HEALTH_PATHS_ENV,
    SOURCE_OF_TRUTH_ENV,
    REVOKED_KEYS_ENV,
    MIN_SERIAL_ENV,
    DRAIN_GRACE_ENV,
];

/// Integrity settings read from the VM's environment.
#[derive(Debug, Clone, Default)]
pub struct IntegrityEnv {
    pub trusted_keys: Vec<(String, VerifyingKey)>,
    pub require_signature: bool,
    pub intended_version: Option<String>,
    pub intended_fingerprint: Option<String>,
    pub on_drift: Option<OnDrift>,
    /// Raw patterns; compiled (and checked) by `load`.
    pub health_paths: Option<Vec<String>>,
    /// Raw JSON object; parsed (and checked) by `load`.
    pub source_of_truth: Option<String>,
    pub revoked_keys: Vec<String>,
    pub min_serial: Option<u64>,
    /// [`DRAIN_GRACE_ENV`]; `None` is [`DEFAULT_DRAIN_GRACE_SECONDS`].
    pub drain_grace_s: Option<u64>,
}

impl IntegrityEnv {
    /// Reads the environment through `var` (so that tests and the CLI can
    /// supply it). A malformed value refuses the config: a typo in a trusted
    /// key must not silently disable signature checks.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut env = Self::default();
        if let Some(keys) = non_empty(TRUSTED_KEYS_ENV) {
            for (i, entry) in keys.split(',').map(str::trim).enumerate() {
                let at = format!("env {TRUSTED_KEYS_ENV}[{i}]");
                let (id, key) = entry.split_once('=').ok_or_else(|| {
                    ConfigError::invalid(&at, "expected KEY_ID=BASE64_PUBLIC_KEY")
                })?;
                let id = key_id(&at, id.trim())?;
                if let Some((other, _)) = env
                    .trusted_keys
                    .iter()
                    .find(|(other, _)| other.eq_ignore_ascii_case(&id))
                {
                    return Err(ConfigError::invalid(
                        &at,
                        format!(
                            "key id {} is already trusted as {}: one key per id (key ids differ by more than case)",
                            quoted(&id),
                            quoted(other)
                        ),
                    ));
                }
                env.trusted_keys
                    .push((id, parse_public_key(&at, key.trim())?));
            }
        }
        env.require_signature = match non_empty(REQUIRE_SIGNATURE_ENV).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::invalid(
                    format!("env {REQUIRE_SIGNATURE_ENV}"),
                    format!("{other:?} is not `true` or `false`"),
                ))
            }
        };
        if env.require_signature && env.trusted_keys.is_empty() {
            return Err(ConfigError::invalid(
                format!("env {REQUIRE_SIGNATURE_ENV}"),
                format!("signatures are required but {TRUSTED_KEYS_ENV} names no key"),
            ));
        }
        env.intended_version = non_empty(INTENDED_VERSION_ENV);
        env.intended_fingerprint = match non_empty(INTENDED_FINGERPRINT_ENV) {
            Some(f) if is_fingerprint(&f) => Some(f),
            Some(f) => {
                return Err(ConfigError::invalid(
                    format!("env {INTENDED_FINGERPRINT_ENV}"),
                    format!("{f:?} is not a lowercase hex SHA-256 (64 characters)"),
                ))
            }
            None => None,
        };
        env.on_drift = match non_empty(ON_DRIFT_ENV).as_deref() {
            None => None,
            Some("report") => Some(OnDrift::Report),
            Some("quarantine") => Some(OnDrift::Quarantine),
            Some("reject") => Some(OnDrift::Reject),
            Some(other) => {
                return Err(ConfigError::invalid(
                    format!("env {ON_DRIFT_ENV}"),
                    format!("{other:?} is not `report`, `quarantine` or `reject`"),
                ))
            }
        };
        env.health_paths = non_empty(HEALTH_PATHS_ENV).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        });
        env.source_of_truth = non_empty(SOURCE_OF_TRUTH_ENV);
        if let Some(list) = non_empty(REVOKED_KEYS_ENV) {
            for (i, entry) in list.split(',').map(str::trim).enumerate() {
                let at = format!("env {REVOKED_KEYS_ENV}[{i}]");
                if parse_public_key(&at, entry).is_ok() {
                    return Err(ConfigError::invalid(
                        &at,
                        "is a public key: list the key ids to revoke (the part before `=` in MESHGUARD_TRUSTED_KEYS)",
                    ));
                }
                let id = key_id(&at, entry)?;
                // A revocation that differs from a trusted id only by case
                // would revoke nothing: refuse it rather than trust the key.
                if let Some((trusted, _)) = env
                    .trusted_keys
                    .iter()
                    .find(|(t, _)| t != &id && t.eq_ignore_ascii_case(&id))
                {
                    return Err(ConfigError::invalid(
                        &at,
                        format!(
                            "{} revokes nothing: the trusted key id is {} (key ids are case-sensitive)",
                            quoted(&id),
                            quoted(trusted)
                        ),
                    ));
                }
                if !env.revoked_keys.contains(&id) {
                    env.revoked_keys.push(id);
                }
            }
        }
        env.min_serial = match non_empty(MIN_SERIAL_ENV) {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| {
                ConfigError::invalid(
                    format!("env {MIN_SERIAL_ENV}"),
                    format!("{v:?} is not a non-negative integer"),
                )
            })?),
        };
        env.drain_grace_s = match non_empty(DRAIN_GRACE_ENV) {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(s) if s <= MAX_DRAIN_GRACE_SECONDS => Some(s),
                _ => {
                    return Err(ConfigError::invalid(
                        format!("env {DRAIN_GRACE_ENV}"),
                        format!(
                            "{v:?} is not a number of seconds from 0 to {MAX_DRAIN_GRACE_SECONDS}"
                        ),
                    ))
                }
            },
        };
        Ok(env)
    }

    /// How long a superseded instance serves the connections it served while
    /// current, in milliseconds.
    pub fn drain_grace_ms(&self) -> u64 {
        self.drain_grace_s
            .unwrap_or(DEFAULT_DRAIN_GRACE_SECONDS)
            .saturating_mul(1_000)
    }

    /// Whether the environment asks for any integrity check. When it does, a
    /// config that is not signed by a trusted key may not carry the settings
    /// that judge it (its `integrity` section is refused).
    pub fn asks_for_integrity(&self) -> bool {
        !self.trusted_keys.is_empty()
            || self.require_signature
            || self.intended_version.is_some()
            || self.intended_fingerprint.is_some()
            || self.on_drift.is_some()
            || self.health_paths.is_some()
            || self.source_of_truth.is_some()
            || self.min_serial.is_some()
            || !self.revoked_keys.is_empty()
    }

    /// Whether `key_id` is in the revocation list.
    pub fn is_revoked(&self, key_id: &str) -> bool {
        self.revoked_keys.iter().any(|k| k == key_id)
    }
}

/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;

/// A key id: 1 to 64 of `A-Z a-z 0-9 . _ -` (what `meshguard keygen` names).
/// Anything else in a key list is a mistake that must not pass silently.
fn key_id(at: &str, id: &str) -> Result<String, ConfigError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(id.to_owned())
    } else {
        Err(ConfigError::invalid(
            at,
            format!(
                "{} is not a key id (1 to {MAX_KEY_ID_LEN} of A-Z a-z 0-9 . _ -)",
                quoted(id)
            ),
        ))
    }
}

/// A public key as `meshguard keygen` writes it: base64 of the 32 raw bytes.
pub fn parse_public_key(at: &str, text: &str) -> Result<VerifyingKey, ConfigError> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| ConfigError::invalid(at, format!("public key is not base64: {e}")))?;
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ConfigError::invalid(at, "an ed25519 public key is 32 bytes"))?;
    VerifyingKey::from_bytes(&raw)
        .map_err(|_| ConfigError::invalid(at, "not a valid ed25519 public key"))
}

pub(crate) fn is_fingerprint(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<IntegrityEnv, String> {
        IntegrityEnv::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_environment_is_parsed_strictly() {
        let key = STANDARD.encode(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .to_bytes(),
        );
        let good = env(&[
            (TRUSTED_KEYS_ENV, &format!("release={key}, backup={key}")),
            (REQUIRE_SIGNATURE_ENV, "true"),
            (INTENDED_VERSION_ENV, "v7"),
            (ON_DRIFT_ENV, "quarantine"),
        ])
        .unwrap();
        assert_eq!(good.trusted_keys.len(), 2);
        assert!(good.require_signature);
        assert_eq!(good.intended_version.as_deref(), Some("v7"));
        assert_eq!(good.on_drift, Some(OnDrift::Quarantine));

        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[(TRUSTED_KEYS_ENV, "release")],
                "env MESHGUARD_TRUSTED_KEYS[0]: expected KEY_ID=BASE64_PUBLIC_KEY",
            ),
            (
                &[(TRUSTED_KEYS_ENV, "r=!!")],
                "env MESHGUARD_TRUSTED_KEYS[0]: public key is not base64",
            ),
            (
                &[(TRUSTED_KEYS_ENV, "r=AAAA")],
                "env MESHGUARD_TRUSTED_KEYS[0]: an ed25519 public key is 32 bytes",
            ),
            (
                &[(TRUSTED_KEYS_ENV, &format!("release={key},, backup={key}"))],
                "env MESHGUARD_TRUSTED_KEYS[1]: expected KEY_ID=BASE64_PUBLIC_KEY",
            ),
            (
                &[(TRUSTED_KEYS_ENV, &format!("release={key},release={key}"))],
                "env MESHGUARD_TRUSTED_KEYS[1]: key id \"release\" is already trusted",
            ),
            (
                &[(TRUSTED_KEYS_ENV, &format!("release={key},Release={key}"))],
                "env MESHGUARD_TRUSTED_KEYS[1]: key id \"Release\" is already trusted as \"release\"",
            ),
            (
                &[(TRUSTED_KEYS_ENV, &format!("re lease={key}"))],
                "env MESHGUARD_TRUSTED_KEYS[0]: \"re lease\" is not a key id",
            ),
            (
                &[(TRUSTED_KEYS_ENV, &format!("release={key}")), (REVOKED_KEYS_ENV, &format!("old={key}"))],
                "env MESHGUARD_REVOKED_KEYS[0]: \"old=",
            ),
            (
                &[(TRUSTED_KEYS_ENV, &format!("release={key}")), (REVOKED_KEYS_ENV, &key)],
                "env MESHGUARD_REVOKED_KEYS[0]: is a public key",
            ),
            (
                &[(TRUSTED_KEYS_ENV, &format!("release={key}")), (REVOKED_KEYS_ENV, "RELEASE")],
                "env MESHGUARD_REVOKED_KEYS[0]: \"RELEASE\" revokes nothing: the trusted key id is \"release\"",
            ),
            (
                &[(REVOKED_KEYS_ENV, "old,,older")],
                "env MESHGUARD_REVOKED_KEYS[1]: \"\" is not a key id",
            ),
            (
                &[(REQUIRE_SIGNATURE_ENV, "yes")],
                "env MESHGUARD_REQUIRE_SIGNATURE: \"yes\" is not `true` or `false`",
            ),
            (
                &[(REQUIRE_SIGNATURE_ENV, "true")],
                "signatures are required but MESHGUARD_TRUSTED_KEYS names no key",
            ),
            (
                &[(INTENDED_FINGERPRINT_ENV, "abc")],
                "env MESHGUARD_INTENDED_FINGERPRINT: \"abc\" is not a lowercase hex SHA-256",
            ),
            (
                &[(ON_DRIFT_ENV, "panic")],
                "env MESHGUARD_ON_DRIFT: \"panic\" is not",
            ),
            (
                &[(DRAIN_GRACE_ENV, "-1")],
                "env MESHGUARD_DRAIN_GRACE_SECONDS: \"-1\" is not a number of seconds from 0 to 3600",
            ),
            (
                &[(DRAIN_GRACE_ENV, "3601")],
                "env MESHGUARD_DRAIN_GRACE_SECONDS: \"3601\" is not a number of seconds",
            ),
        ];
        for (vars, want) in cases {
            let err = env(vars).unwrap_err();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn the_drain_grace_defaults_to_istios_drain_and_can_be_shortened_or_switched_off() {
        let cases = [
            (None, 45_000),
            (Some("10"), 10_000),
            (Some("0"), 0),
            (Some("3600"), 3_600_000),
        ];
        for (value, want_ms) in cases {
            let vars: Vec<(&str, &str)> = value.map(|v| (DRAIN_GRACE_ENV, v)).into_iter().collect();
            assert_eq!(env(&vars).unwrap().drain_grace_ms(), want_ms, "{value:?}");
        }
    }
}
