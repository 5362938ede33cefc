//! Config integrity and drift, shared by every filter.
//!
//! Every plugin JSON may carry two sections next to the filter's own keys:
//! `integrity` (what to do on drift, where the intended version lives) and
//! `signature` (ed25519 over the canonical config). [`load`] verifies the
//! signature against keys supplied *outside* the config (vmConfig env), computes
//! the fingerprint of what is actually loaded, and hands the filter its own keys.
//! [`admit`] checks a signed config's `release` scope against what the proxy
//! knows (filter, workload, time, newest serial). [`DriftMonitor`] then
//! compares the active config with the intended one, from the environment and
//! from signed source-of-truth answers ([`read_answer`]).

mod answer;
mod drift;
mod env;
mod load;
mod succession;

pub use answer::{
    read_answer, sign_answer, Answer, AnswerContext, AnswerError, AnswerRefusal, IntendedDocument,
};
pub use drift::{DriftMonitor, DriftState, IntendedSource, Transition};
pub use env::{IntegrityEnv, ALL_ENV, DEFAULT_DRAIN_GRACE_SECONDS, TRUSTED_KEYS_ENV};
pub use load::{
    admit, fingerprint, load, load_results, quoted, short, sign_config, sign_release,
    waypoint_service, Admission, IntegritySettings, Intended, LoadError, Loaded, OnDrift, Origin,
    Refusal, Release, SettingsOrigin, SignatureStatus, SourceOfTruth, MAX_SERIAL, MAX_SERIAL_STEP,
};
pub use succession::{succession, NewestSerial, Request as SuccessionRequest, Succession};
