//! meshguard's engine, free of any proxy-wasm dependency so that it is unit
//! tested natively and shared by every filter and by the `meshguard` CLI.

pub mod audit;
pub mod canonical;
pub mod config;
pub mod identity;
pub mod integrity;
pub mod masking;
pub mod metrics;
pub mod path;
pub mod pattern;
pub mod request;
pub mod scope;
pub mod spiffe;
