//! Config integrity and drift, shared by every filter.
//!
//! Every plugin JSON may carry two sections next to the filter's own keys:
//! `integrity` (what to do on drift, where the intended version lives) and
//! `signature` (ed25519 over the canonical config). [`load`] verifies the
//! signature against keys supplied *outside* the config (vmConfig env), computes
//! the fingerprint of what is actually loaded, and hands the filter its own keys.
//! [`DriftMonitor`] then compares the active config with the intended one.

mod drift;
mod env;
mod load;

pub use drift::{DriftMonitor, DriftState, IntendedSource, Transition};
pub use env::{IntegrityEnv, TRUSTED_KEYS_ENV};
pub use load::{
    fingerprint, load, sign_config, IntegritySettings, Intended, LoadError, Loaded, OnDrift,
    SignatureStatus, SourceOfTruth,
};
