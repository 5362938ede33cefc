//! The meshguard proxy-wasm module. Everything lives in `meshguard-host`
//! (the pipeline and the proxy-wasm host); this crate exports the ABI from
//! one `.wasm`.

#[cfg(target_family = "wasm")]
meshguard_host::export_proxy_wasm!();
