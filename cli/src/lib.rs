//! Library side of the `meshguard` CLI: the parts other crates reuse (the
//! real-Envoy host tests publish signed intended-state documents and run the
//! reference source of truth in-process).

pub mod httpsig_verify;
pub mod publish;
pub mod serve_intended;
