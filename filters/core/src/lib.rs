//! meshguard's engine, free of any proxy-wasm dependency so that it is unit
//! tested natively and shared by every filter and by the `meshguard` CLI.

// Release wasm builds wrap silently on integer overflow, and a panic kills the
// VM: outside tests, every arithmetic operation is checked, saturating or
// explicitly wrapping (docs/fuzzing.md, "Arithmetic").
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

pub mod audit;
pub mod canonical;
pub mod config;
pub mod identity;
pub mod integrity;
pub mod logsafe;
pub mod masking;
pub mod metrics;
pub mod path;
pub mod pattern;
pub mod plugin;
pub mod request;
pub mod scope;
pub mod spiffe;
