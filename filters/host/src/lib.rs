//! Panic-free access to the Envoy host, shared by every meshguard filter.
//!
//! The proxy-wasm SDK's trait helpers unwrap on unexpected host answers, and its
//! `get_map_value` unwraps UTF-8 decoding: a header with obs-text bytes would
//! trap the VM, after which Envoy fails every request on that worker. Filters
//! read the host only through this module, which turns every failure into
//! "absent".

// Release wasm builds wrap silently on integer overflow, and a panic kills the
// VM: outside tests, every arithmetic operation is checked, saturating or
// explicitly wrapping (docs/fuzzing.md, "Arithmetic").
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

mod ffi;
pub mod integrity;
pub mod surface;
pub mod vm_memory;

use std::time::UNIX_EPOCH;

use meshguard_core::identity::{RequestInfo, Transport};
use meshguard_core::path::{self, PathOptions, PathRejection};
use meshguard_core::request::parse_header_map;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, StreamType};

/// Installs the `log` backend once per VM (at info until the host's level is
/// known: no host call may be made before a context exists).
pub fn init_logging() {
    proxy_wasm::set_log_level(LogLevel::Info);
}

/// Follows the host's own log level (Envoy's `wasm` logger), so a line Envoy
/// would drop is never formatted and never crosses the host boundary. Called
/// on every configuration: a level changed through Envoy's admin applies
/// from the next configuration or VM on.
pub fn follow_host_log_level() {
    let level = match ffi::log_level() {
        Some(0) => LogLevel::Trace,
        Some(1) => LogLevel::Debug,
        Some(2) | None => LogLevel::Info,
        Some(3) => LogLevel::Warn,
        Some(4) => LogLevel::Error,
        Some(_) => LogLevel::Critical,
    };
    proxy_wasm::set_log_level(level);
}

/// The plugin configuration (WasmPlugin `pluginConfig`) as raw bytes.
pub fn plugin_configuration() -> Vec<u8> {
    match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(Some(bytes)) => bytes,
        Ok(None) | Err(_) => Vec::new(),
    }
}

/// A request header, decoded lossily (obs-text becomes U+FFFD).
pub fn request_header(name: &str) -> Option<String> {
    header(MapType::HttpRequestHeaders, name)
}

/// A response header, decoded lossily.
pub fn response_header(name: &str) -> Option<String> {
    header(MapType::HttpResponseHeaders, name)
}

fn header(map: MapType, name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(map, name) {
        Ok(Some(bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(None) | Err(_) => None,
    }
}

/// Sets (`Some`) or removes (`None`) a request header; false if the host refused.
pub fn set_request_header(name: &str, value: Option<&str>) -> bool {
    set_header(MapType::HttpRequestHeaders, name, value)
}

/// Sets or removes a response header; false if the host refused.
pub fn set_response_header(name: &str, value: Option<&str>) -> bool {
    set_header(MapType::HttpResponseHeaders, name, value)
}

fn set_header(map: MapType, name: &str, value: Option<&str>) -> bool {
    let map = map as u32;
    match value {
        Some(v) => ffi::replace_header(map, name, v),
        None => ffi::remove_header(map, name),
    }
}

/// A string attribute such as `connection.tls_version`.
pub fn property_string(path: &[&str]) -> Option<String> {
    property(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// A bool attribute such as `connection.mtls` (one byte, 0 or 1).
pub fn property_bool(path: &[&str]) -> Option<bool> {
    match property(path)?.as_slice() {
        [0] => Some(false),
        [1] => Some(true),
        _ => None,
    }
}

/// An unsigned integer attribute such as `connection.id` (8 bytes, little
/// endian, as Envoy encodes them).
pub fn property_u64(path: &[&str]) -> Option<u64> {
    let bytes: [u8; 8] = property(path)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// The filter state key in which Istio's waypoints carry the HBONE peer's
/// URI SAN to the inner listener's HTTP filters.
pub const WAYPOINT_PEER_PRINCIPAL: &str = "io.istio.peer_principal";

/// The downstream connection's security from Envoy's `connection.mtls`,
/// `connection.tls_version` and `connection.uri_san_peer_certificate`; on a
/// connection without any TLS, an ambient waypoint's inner listener is
/// recognised by the peer principal Istio put in filter state.
pub fn peer_transport() -> Transport {
    let mtls = property_bool(&["connection", "mtls"]);
    let version = property_string(&["connection", "tls_version"]);
    if mtls == Some(true) {
        let san = property_string(&["connection", "uri_san_peer_certificate"]);
        return Transport::from_host(mtls, version.as_deref(), san.as_deref());
    }
    if version.as_deref().is_none_or(str::is_empty) {
        if let Some(principal) = property_string(&["filter_state", WAYPOINT_PEER_PRINCIPAL]) {
            return Transport::hbone(&principal);
        }
    }
    Transport::from_host(mtls, version.as_deref(), None)
}

/// The request's `:path`, `:method` and `:authority` (empty when absent).
#[derive(Debug, Clone, Default)]
pub struct RequestLine {
    pub path: String,
    pub method: String,
    pub authority: String,
}

impl RequestLine {
    /// The request line as received.
    pub fn read() -> Self {
        Self::from_head(&RequestHead::read())
    }

    /// The request line out of headers already read.
    pub fn from_head(head: &RequestHead) -> Self {
        Self {
            path: head.get(":path").unwrap_or_default(),
            method: head.get(":method").unwrap_or_default(),
            authority: head.get(":authority").unwrap_or_default(),
        }
    }

    /// Replaces `path` by its canonical form (`meshguard_core::path`); true
    /// when that changed it, so the caller forwards it with [`Self::forward_path`].
    pub fn canonicalize(&mut self, options: &PathOptions) -> Result<bool, PathRejection> {
        match path::canonicalize(&self.path, options)? {
            Some(canonical) => {
                self.path = canonical;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Sends the (canonical) path upstream, so the upstream resolves exactly
    /// what was judged. False if the host refused.
    pub fn forward_path(&self) -> bool {
        set_request_header(":path", Some(&self.path))
    }

    /// The view policies match against.
    pub fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            path: &self.path,
            method: &self.method,
            host: &self.authority,
        }
    }
}

/// Every request header, read in one host call (each single-header read is a
/// host call plus an allocation call back into the VM).
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    serialized: Vec<u8>,
}

impl RequestHead {
    pub fn read() -> Self {
        Self {
            serialized: ffi::header_map_pairs(MapType::HttpRequestHeaders as u32)
                .unwrap_or_default(),
        }
    }

    /// Whether the request carries `name` (any case); `None` when the host
    /// gave no header map (a request always has pseudo-headers), so a caller
    /// that must act on presence can act as if it were there.
    pub fn contains(&self, name: &str) -> Option<bool> {
        if self.serialized.is_empty() {
            return None;
        }
        let pairs = parse_header_map(&self.serialized)?;
        Some(
            pairs
                .into_iter()
                .any(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes())),
        )
    }

    /// A header's value, decoded lossily; repeats are joined with `,` as
    /// HTTP defines for list-valued fields (so a second copy is never
    /// silently ignored).
    pub fn get(&self, name: &str) -> Option<String> {
        let pairs = parse_header_map(&self.serialized)?;
        let mut found: Option<String> = None;
        for (key, value) in pairs {
            if key.eq_ignore_ascii_case(name.as_bytes()) {
                let value = String::from_utf8_lossy(value);
                match found.as_mut() {
                    Some(joined) => {
                        joined.push(',');
                        joined.push_str(&value);
                    }
                    None => found = Some(value.into_owned()),
                }
            }
        }
        found
    }
}

/// Sends a JSON local reply, with `x-meshguard-deny-reason` when `reason` is
/// given. Returns false when the host refused it (the caller then resets).
pub fn send_json_reply(status: u16, reason: Option<&str>, body: &[u8]) -> bool {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(reason) = reason {
        headers.push(("x-meshguard-deny-reason", reason));
    }
    send_response(status, &headers, body)
}

/// Sends a local reply. Returns false when the host refused it, in which case
/// the caller should reset the stream rather than let the request through.
pub fn send_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
    hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body)).is_ok()
}

/// Resets the current request: the last resort of a fail-closed filter.
pub fn reset_request() {
    if !ffi::close_stream(StreamType::HttpRequest as u32) {
        log::error!("meshguard: the host refused to reset a request it could not answer");
    }
}

/// Resets the current response (its headers already left): a fail-closed
/// filter's only way to stop a body it must not release.
pub fn reset_response() {
    if !ffi::close_stream(StreamType::HttpResponse as u32) {
        log::error!("meshguard: the host refused to reset a response");
    }
}

/// All request headers, values decoded lossily (the SDK's `get_map` would
/// panic on non-UTF-8 bytes).
pub fn request_headers() -> Vec<(String, String)> {
    headers(MapType::HttpRequestHeaders)
}

/// All response headers, values decoded lossily.
pub fn response_headers() -> Vec<(String, String)> {
    headers(MapType::HttpResponseHeaders)
}

fn headers(map: MapType) -> Vec<(String, String)> {
    // Not the SDK's `get_map_bytes`: it panics on a refused map and on a
    // name that is not UTF-8.
    let serialized = ffi::header_map_pairs(map as u32).unwrap_or_default();
    parse_header_map(&serialized)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| {
            (
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .collect()
}

/// Every entry of a header map (headers or trailers of either direction),
/// values decoded lossily.
pub fn map_entries(map: MapType) -> Vec<(String, String)> {
    headers(map)
}

/// Sets (`Some`) or removes (`None`) an entry of any header map (trailers
/// included); false if the host refused.
pub fn set_map_entry(map: MapType, name: &str, value: Option<&str>) -> bool {
    set_header(map, name, value)
}

/// Reads `size` bytes of a body buffer from `start`.
pub fn body(buffer: BufferType, start: usize, size: usize) -> Vec<u8> {
    hostcalls::get_buffer(buffer, start, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Replaces the first `size` bytes of a body buffer (all of it, once
/// buffered to the end) with `data`; false if the host refused.
pub fn replace_body(buffer: BufferType, size: usize, data: &[u8]) -> bool {
    ffi::set_buffer(buffer as u32, 0, size, data)
}

/// A counter defined in Envoy's stats. A counter the host refused to define is
/// a no-op rather than a failure of the request path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter(Option<u32>);

impl Counter {
    pub fn define(name: &str) -> Self {
        match hostcalls::define_metric(MetricType::Counter, name) {
            Ok(id) => Self(Some(id)),
            Err(status) => {
                log::warn!("meshguard: could not define metric {name}: {status:?}");
                Self(None)
            }
        }
    }

    pub fn increment(self) {
        self.add(1);
    }

    /// Adds `n` in one host call.
    pub fn add(self, n: u64) {
        if let (Some(id), Ok(n)) = (self.0, i64::try_from(n)) {
            // A failed increment loses counts; it must not fail the request.
            let _ = hostcalls::increment_metric(id, n);
        }
    }
}

/// A gauge defined in Envoy's stats; like [`Counter`], a no-op if undefined.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauge(Option<u32>);

impl Gauge {
    pub fn define(name: &str) -> Self {
        match hostcalls::define_metric(MetricType::Gauge, name) {
            Ok(id) => Self(Some(id)),
            Err(status) => {
                log::warn!("meshguard: could not define metric {name}: {status:?}");
                Self(None)
            }
        }
    }

    pub fn set(self, value: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// Sets the gauge to `value` if it is lower (two host calls).
    pub fn raise_to(self, value: u64) {
        if let Some(id) = self.0 {
            if hostcalls::get_metric(id).is_ok_and(|current| current < value) {
                let _ = hostcalls::record_metric(id, value);
            }
        }
    }
}

/// Publishes a filter's decision for this request as Envoy filter state
/// (`wasm.meshguard_<filter>`), where later meshguard filters (audit) read it.
pub fn publish_decision(filter: &str, decision: &str) {
    let key = format!("meshguard_{filter}");
    if !ffi::set_property(&key, decision.as_bytes()) {
        log::debug!("meshguard {filter}: the host refused to store the decision");
    }
}

/// A decision published by another meshguard filter for this request.
pub fn read_decision(filter: &str) -> Option<String> {
    property_string(&[format!("meshguard_{filter}").as_str()])
}

/// Sets the root context's timer to the shortest of `periods` (none: no timer).
pub fn set_tick(periods: &[Option<std::time::Duration>]) {
    if let Some(period) = periods.iter().flatten().min() {
        if hostcalls::set_tick_period(*period).is_err() {
            log::error!("meshguard: the host refused a timer of {period:?}");
        }
    }
}

/// Host time in milliseconds since the Unix epoch (0 if the host will not say).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A vmConfig environment variable (Envoy passes them through WASI).
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
