//! The host boundary and the pipeline every meshguard plugin runs.
//!
//! - [`host`]: what the pipeline asks of a proxy, as two traits
//!   ([`host::StreamHost`] per HTTP stream, [`host::PluginHost`] per plugin
//!   config). Every method is total: a host failure is an answer, never a
//!   panic, and an absent value always means less trust.
//! - [`pipeline`]: the sections (identity, masking, audit) in one stream
//!   context over the one [`view::View`] of a request; [`integrity`]: config
//!   loading, drift, quarantine and supersession; [`root`]: the glue a host's
//!   callbacks call.
//! - `wasm` (wasm32 only): the proxy-wasm host, exporting the ABI itself.
//! - `native` (feature `native`): the Envoy dynamic-module host, for the
//!   native `libmeshguard.so` (docs/native.md).
//! - `fake` (feature `fake`): a recording host for native unit tests.

// Release wasm builds wrap silently on integer overflow, and a panic kills the
// VM: outside tests, every arithmetic operation is checked, saturating or
// explicitly wrapping (docs/fuzzing.md, "Arithmetic").
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

pub mod host;
pub mod integrity;
pub mod pipeline;
pub mod reply;
pub mod root;
pub mod sections;
pub mod sync;
pub mod view;
pub mod vm_memory;

#[cfg(any(test, feature = "fake"))]
pub mod fake;

#[cfg(target_family = "wasm")]
pub mod wasm;

#[cfg(all(feature = "native", not(target_family = "wasm")))]
pub mod native;

#[cfg(test)]
mod tests;
