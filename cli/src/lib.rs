//! Library side of the `meshguard` CLI: the parts other crates reuse (the
//! real-Envoy host tests run the reference source of truth in-process).

pub mod serve_intended;
