//! The meshguard Envoy dynamic module. Everything lives in `meshguard-host`
//! (the pipeline and the dynamic-module host); this crate exports the ABI
//! from one `.so`.

#[cfg(not(target_family = "wasm"))]
meshguard_host::export_envoy_dynamic_module!();
