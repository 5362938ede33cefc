//! Source-of-truth answers: signed documents naming the intended config of
//! one filter of one workload until an expiry. Anyone can serve them (a static
//! web server, an object store, `meshguard serve-intended`); only the holder
//! of a trusted key can write one the sidecar believes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::env::{is_fingerprint, IntegrityEnv};
use super::load::{quoted, sign_config, verify_signature, Intended, SignatureProblem};
use crate::canonical::to_canonical_bytes;
use crate::config::{parse_json, ConfigError, StrictObject};

/// The signed content of an answer (plus `signature`, as in a config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntendedDocument {
    /// The filter it is for (`identity`, `masking`, `audit`).
    pub filter: String,
    /// `NAMESPACE/WORKLOAD_NAME` it is for.
    pub workload: String,
    /// The intended config's fingerprint: the only thing compared.
    pub fingerprint: String,
    /// Informational (logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// Unix seconds after which the answer is not believed.
    pub expires: u64,
    /// Unix milliseconds when it was published: a sidecar refuses a document
    /// older than the newest it believed (an old answer replayed).
    pub issued: u64,
    /// For a combined plugin: each section's intended fingerprint, so that a
    /// drift names the sections that differ. Informational: `fingerprint`
    /// alone decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sections: Option<std::collections::BTreeMap<String, String>>,
}

/// A believed answer: what is intended, and when that was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub intended: Intended,
    pub issued: u64,
    /// The intended fingerprint of each section, when the document names them.
    pub sections: Option<std::collections::BTreeMap<String, String>>,
}

/// Why an answer was not believed; each is a `reason` label of
/// `meshguard_intended_answers_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerRefusal {
    /// Not a JSON object of the document's shape.
    Unreadable,
    /// No `signature`, or no trusted keys to check it with.
    Unsigned,
    UntrustedKey,
    Revoked,
    BadSignature,
    WrongFilter,
    WrongWorkload,
    Expired,
    /// Issued before the newest document this proxy believed.
    Stale,
}

impl AnswerRefusal {
    pub const ALL: [Self; 9] = [
        Self::Unreadable,
        Self::Unsigned,
        Self::UntrustedKey,
        Self::Revoked,
        Self::BadSignature,
        Self::WrongFilter,
        Self::WrongWorkload,
        Self::Expired,
        Self::Stale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::Unsigned => "unsigned",
            Self::UntrustedKey => "untrusted_key",
            Self::Revoked => "revoked",
            Self::BadSignature => "bad_signature",
            Self::WrongFilter => "wrong_filter",
            Self::WrongWorkload => "wrong_workload",
            Self::Expired => "expired",
            Self::Stale => "stale",
        }
    }
}

/// An answer that was not believed, and why (attacker text is quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} answer: {detail}", .reason.as_str())]
pub struct AnswerError {
    pub reason: AnswerRefusal,
    pub detail: String,
}

fn refused(reason: AnswerRefusal, detail: impl Into<String>) -> AnswerError {
    AnswerError {
        reason,
        detail: detail.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureSection {
    key_id: String,
    ed25519: String,
}

/// What the proxy knows when it reads an answer (never taken from the answer).
#[derive(Debug, Clone, Copy)]
pub struct AnswerContext<'a> {
    pub filter: &'a str,
    /// `NAMESPACE/WORKLOAD_NAME` from the proxy's node metadata.
    pub workload: Option<&'a str>,
    /// Host time, Unix seconds.
    pub now_s: u64,
    /// `issued` of the newest document this proxy believed for this filter.
    pub newest_issued: Option<u64>,
}

/// Reads a source-of-truth answer: believed only when signed by a trusted,
/// unrevoked key, for this filter and workload, not expired, and not older
/// than the newest document already believed.
pub fn read_answer(
    body: &[u8],
    env: &IntegrityEnv,
    at: &AnswerContext<'_>,
) -> Result<Answer, AnswerError> {
    let (filter, workload, now_s) = (at.filter, at.workload, at.now_s);
    let unreadable = |e: ConfigError| refused(AnswerRefusal::Unreadable, e.to_string());
    let StrictObject(mut doc) = parse_json(body).map_err(unreadable)?;
    let signature = doc.remove("signature");
    let canonical = to_canonical_bytes(&Value::Object(doc.clone()))
        .map_err(|e| refused(AnswerRefusal::Unreadable, e.to_string()))?;
    let document: IntendedDocument = serde_json::from_value(Value::Object(doc))
        .map_err(|e| refused(AnswerRefusal::Unreadable, e.to_string()))?;
    if !is_fingerprint(&document.fingerprint) {
        return Err(refused(
            AnswerRefusal::Unreadable,
            "fingerprint is not a lowercase hex SHA-256",
        ));
    }
    if let Some(sections) = &document.sections {
        let valid = sections
            .iter()
            .all(|(name, fp)| crate::plugin::Section::named(name).is_some() && is_fingerprint(fp));
        if !valid {
            return Err(refused(
                AnswerRefusal::Unreadable,
                "sections must map identity, masking or audit to a lowercase hex SHA-256",
            ));
        }
    }
    let Some(signature) = signature else {
        return Err(refused(AnswerRefusal::Unsigned, "the answer is not signed"));
    };
    let signature: SignatureSection = serde_json::from_value(signature)
        .map_err(|e| refused(AnswerRefusal::Unreadable, format!("signature: {e}")))?;
    if env.trusted_keys.is_empty() {
        return Err(refused(
            AnswerRefusal::Unsigned,
            "no MESHGUARD_TRUSTED_KEYS to check the answer with",
        ));
    }
    verify_signature(&signature.key_id, &signature.ed25519, &canonical, env).map_err(|p| {
        let reason = match p {
            SignatureProblem::Revoked(_) => AnswerRefusal::Revoked,
            SignatureProblem::NotTrusted(_) => AnswerRefusal::UntrustedKey,
            SignatureProblem::Malformed(_) | SignatureProblem::Mismatch(_) => {
                AnswerRefusal::BadSignature
            }
        };
        refused(reason, p.to_string())
    })?;
    if document.filter != filter {
        return Err(refused(
            AnswerRefusal::WrongFilter,
            format!("for filter {}, not {filter}", quoted(&document.filter)),
        ));
    }
    if Some(document.workload.as_str()) != workload {
        return Err(refused(
            AnswerRefusal::WrongWorkload,
            format!(
                "for workload {}, this proxy is {}",
                quoted(&document.workload),
                workload.map_or_else(|| "unknown (no node metadata)".into(), quoted)
            ),
        ));
    }
    if now_s > document.expires {
        return Err(refused(
            AnswerRefusal::Expired,
            format!("expired at {}, now is {now_s}", document.expires),
        ));
    }
    if let Some(newest) = at.newest_issued.filter(|n| document.issued < *n) {
        return Err(refused(
            AnswerRefusal::Stale,
            format!(
                "issued at {} ms, before the newest believed ({newest} ms): an old answer replayed",
                document.issued
            ),
        ));
    }
    Ok(Answer {
        intended: Intended {
            config_version: document.config_version,
            fingerprint: Some(document.fingerprint),
        },
        issued: document.issued,
        sections: document.sections,
    })
}

/// Writes `document` signed with `key` (what `meshguard publish` serves).
pub fn sign_answer(
    document: &IntendedDocument,
    key_id: &str,
    key: &ed25519_dalek::SigningKey,
) -> Result<Vec<u8>, ConfigError> {
    let bytes = serde_json::to_vec(document)
        .map_err(|e| ConfigError::invalid("document", e.to_string()))?;
    sign_config(&bytes, key_id, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const FP: &str = "62479ee356b5e0e06c455b5221c31b6d9665ec5e21cfe973437be7de154cdf59";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn env() -> IntegrityEnv {
        IntegrityEnv {
            trusted_keys: vec![
                ("release".into(), key(1).verifying_key()),
                ("old".into(), key(2).verifying_key()),
            ],
            revoked_keys: vec!["old".into()],
            ..IntegrityEnv::default()
        }
    }

    fn doc(filter: &str, workload: &str, expires: u64) -> IntendedDocument {
        IntendedDocument {
            filter: filter.into(),
            workload: workload.into(),
            fingerprint: FP.into(),
            config_version: Some("v1".into()),
            expires,
            issued: 500_000,
            sections: None,
        }
    }

    fn at(workload: Option<&str>, newest_issued: Option<u64>) -> AnswerContext<'_> {
        AnswerContext {
            filter: "identity",
            workload,
            now_s: 1_000,
            newest_issued,
        }
    }

    fn read(body: &[u8]) -> Result<Intended, AnswerRefusal> {
        read_answer(body, &env(), &at(Some("default/backend"), None))
            .map(|a| a.intended)
            .map_err(|e| e.reason)
    }

    #[test]
    fn an_answer_is_believed_only_when_signed_bound_and_fresh() {
        let good = sign_answer(
            &doc("identity", "default/backend", 2_000),
            "release",
            &key(1),
        )
        .unwrap();
        assert_eq!(read(&good).unwrap().fingerprint.as_deref(), Some(FP));

        let echoed = format!(r#"{{"fingerprint": "{FP}"}}"#);
        let unsigned = serde_json::to_vec(&doc("identity", "default/backend", 2_000)).unwrap();
        let tampered = String::from_utf8(good.clone()).unwrap().replace("v1", "v2");
        let cases: Vec<(&str, Vec<u8>, AnswerRefusal)> = vec![
            (
                "an echo of the sidecar's own fingerprint",
                echoed.into_bytes(),
                AnswerRefusal::Unreadable,
            ),
            (
                "a well-formed unsigned document",
                unsigned,
                AnswerRefusal::Unsigned,
            ),
            (
                "a document edited after signing",
                tampered.into_bytes(),
                AnswerRefusal::BadSignature,
            ),
            (
                "a document signed by an unknown key",
                sign_answer(
                    &doc("identity", "default/backend", 2_000),
                    "release",
                    &key(9),
                )
                .unwrap(),
                AnswerRefusal::BadSignature,
            ),
            (
                "a document signed by a key ID not trusted",
                sign_answer(
                    &doc("identity", "default/backend", 2_000),
                    "intruder",
                    &key(9),
                )
                .unwrap(),
                AnswerRefusal::UntrustedKey,
            ),
            (
                "a document signed by a revoked key",
                sign_answer(&doc("identity", "default/backend", 2_000), "old", &key(2)).unwrap(),
                AnswerRefusal::Revoked,
            ),
            (
                "a document for another filter",
                sign_answer(
                    &doc("masking", "default/backend", 2_000),
                    "release",
                    &key(1),
                )
                .unwrap(),
                AnswerRefusal::WrongFilter,
            ),
            (
                "a document for another workload",
                sign_answer(
                    &doc("identity", "default/frontend", 2_000),
                    "release",
                    &key(1),
                )
                .unwrap(),
                AnswerRefusal::WrongWorkload,
            ),
            (
                "an expired document",
                sign_answer(&doc("identity", "default/backend", 999), "release", &key(1)).unwrap(),
                AnswerRefusal::Expired,
            ),
            ("HTML", b"<html>".to_vec(), AnswerRefusal::Unreadable),
        ];
        for (what, body, want) in cases {
            assert_eq!(read(&body).err(), Some(want), "{what}");
        }
        let reason = |r: Result<Answer, AnswerError>| r.map_err(|e| e.reason).err();
        // Without trusted keys nothing can be believed.
        let none = read_answer(
            &good,
            &IntegrityEnv::default(),
            &at(Some("default/backend"), None),
        );
        assert_eq!(reason(none), Some(AnswerRefusal::Unsigned));
        // A proxy that does not know its workload believes no answer.
        let unknown = read_answer(&good, &env(), &at(None, None));
        assert_eq!(reason(unknown), Some(AnswerRefusal::WrongWorkload));
        // An older genuine document replayed after a newer one was believed.
        let stale = read_answer(&good, &env(), &at(Some("default/backend"), Some(500_001)));
        assert_eq!(reason(stale), Some(AnswerRefusal::Stale));
        let same = read_answer(&good, &env(), &at(Some("default/backend"), Some(500_000)));
        assert_eq!(
            same.map(|a| a.issued),
            Ok(500_000),
            "the same document again is fine"
        );
    }

    #[test]
    fn attacker_text_in_a_refusal_is_escaped() {
        let evil = sign_answer(
            &doc("identity\n\"x", "default/backend", 2_000),
            "release",
            &key(1),
        )
        .unwrap();
        let err = read_answer(&evil, &env(), &at(Some("default/backend"), None)).unwrap_err();
        assert!(err.to_string().contains(r#""identity\n\"x""#), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
